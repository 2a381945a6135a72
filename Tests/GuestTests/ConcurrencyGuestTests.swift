import FerryTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The concurrency suites in a real guest (Linux 6.12, 2 vCPUs, 4 request queues, so
/// requests really spread over queues) on every backend: ferry-churn, stress-ng's
/// verifying file-system stressors (scripts/stress-fs), then unmount and mount the same
/// tag again in the same boot, read back what was written, and run ferry-churn once more.
enum ConcurrencyGuest {
    static let imageDirectory = Guest.repo + "/.build/guest-concurrency"

    /// `--kernel 6.12` (scripts/guest/build-image); FERRY_CONCURRENCY_GUEST_KERNEL=6.1 (or
    /// `default`: no --kernel at all) boots another.
    static var kernelArguments: [String] {
        let chosen = ProcessInfo.processInfo.environment["FERRY_CONCURRENCY_GUEST_KERNEL"] ?? "6.12"
        return chosen == "default" ? [] : ["--kernel", chosen]
    }

    /// Its own image directory: ferry-churn (static), scripts/stress-fs and stress-ng with
    /// its libraries on top of the default image's content.
    static let image: Result<String, HarnessError> = {
        do {
            try FileManager.default.createDirectory(atPath: imageDirectory + "/extra", withIntermediateDirectories: true)
            let churn = imageDirectory + "/extra/ferry-churn"
            let sources = try FileManager.default.contentsOfDirectory(atPath: Guest.repo + "/Sources/ferry-churn")
                .filter { $0.hasSuffix(".c") }.sorted().map { Guest.repo + "/Sources/ferry-churn/" + $0 }
            let compiled = try runToCompletion("/usr/bin/gcc", ["-static", "-O2", "-Wall", "-D_GNU_SOURCE", "-o", churn]
                                               + sources + ["-lpthread"])
            guard compiled.succeeded else { return .failure(HarnessError("gcc -static ferry-churn:\n\(compiled.output)")) }
            let stressNG = ["/usr/bin/stress-ng", "/usr/local/bin/stress-ng"].first { FileManager.default.isExecutableFile(atPath: $0) }
            guard let stressNG else { return .failure(HarnessError("missing component stress-ng: install with scripts/install-deps")) }
            let built = try runToCompletion(Guest.repo + "/scripts/guest/build-image",
                                            [imageDirectory] + kernelArguments
                                            + ["--extra", churn, "--extra", Guest.repo + "/scripts/stress-fs", "--extra-dynamic", stressNG])
            return built.succeeded ? .success(imageDirectory) : .failure(HarnessError("build-image failed:\n\(built.output)"))
        } catch {
            return .failure(HarnessError("building the concurrency guest image: \(error)"))
        }
    }()

    /// The guest's command: each step prints "STEP=STATUS" so that one failing step does
    /// not hide the others.
    static func command(seed: Int, workers: Int, ops: Int) -> String {
        """
        ferry-churn --dir /mnt --workers \(workers) --ops \(ops) --seed \(seed) --seconds 900; echo "churn=$?"
        stress-fs /mnt --quick --skip link; echo "stress=$?"
        echo "written before umount \(seed)" > /mnt/remount-probe && sync
        cd /; umount /mnt; echo "umount=$?"
        mount -t virtiofs ferry /mnt; echo "mount-again=$?"
        cat /mnt/remount-probe
        ferry-churn --dir /mnt --workers 2 --ops 60 --seed \(seed + 1) --seconds 300; echo "churn-again=$?"
        rm -f /mnt/remount-probe; ls -A /mnt | head -n 20
        """
    }

    /// Boots the guest (2 vCPUs, 4 request queues) against `socket` and checks every step.
    static func runAndCheck(socket: String, seed: Int, workers: Int = 4, ops: Int = 120, on what: String, log: () -> String,
                            sourceLocation: SourceLocation = #_sourceLocation) throws {
        let image = try image.get()
        let console = try makeTemporaryDirectory("ferry-concurrency-guest") + "/console.log"
        let result = try runToCompletion(Guest.repo + "/scripts/guest/run-guest",
                                         ["--socket", socket, "--image", image, "--smp", "2", "--queues", "4", "--mem", "1G",
                                          "--cmd", command(seed: seed, workers: workers, ops: ops), "--timeout", "1140", "--quiet", "--log", console])
        let text = ((try? String(contentsOfFile: console, encoding: .utf8)) ?? result.output).replacingOccurrences(of: "\r", with: "")
        let output = Guest.commandOutput(text)
        let context = "in a guest on \(what) (run-guest exit \(result.status)):\n\(output.suffix(8000))\nferry's log (end):\n\(log().suffix(3000))"
        // Each step's status on a line of its own (the last one may end the output unterminated).
        let lines = Set(output.split(separator: "\n").map(String.init))
        for step in ["churn", "stress", "umount", "mount-again", "churn-again"] {
            #expect(lines.contains("\(step)=0"), "\(step) failed \(context)", sourceLocation: sourceLocation)
        }
        #expect(output.contains("stress-fs: passed all 8 stressors"), "stress-fs did not run all 8 stressors \(context)",
                sourceLocation: sourceLocation)
        #expect(output.contains("written before umount \(seed)"), "the file written before the unmount is not there after mounting again \(context)",
                sourceLocation: sourceLocation)
        #expect(result.status == 0, "\(context)\nconsole:\n\(text.suffix(3000))", sourceLocation: sourceLocation)
    }
}

@Suite("Concurrent workloads in a real guest", .serialized, .requires(.root, .qemu, .stressNG))
struct ConcurrencyGuestTests {
    @Test("ferry-churn, stress-ng and a remount in one boot pass on a directory")
    func onADirectory() async throws {
        try await GuestSlots.run(minutes: 20) {
            let export = try makeTemporaryDirectory("ferry-concurrency-guest-dir")
            defer { try? FileManager.default.removeItem(atPath: export) }
            let daemon = try Daemon.ferry(export: export)
            try ConcurrencyGuest.runAndCheck(socket: daemon.socket, seed: 401, on: "a directory", log: { daemon.log })
            #expect(daemon.stop() == 0, "ferry virtiofsd log:\n\(daemon.log.suffix(3000))")
        }
    }

    @Test("ferry-churn, stress-ng and a remount in one boot pass on NFS",
          .requires(.ganesha), arguments: NFSTestVersion.allCases)
    func onNFS(version: NFSTestVersion) async throws {
        try await GuestSlots.run(minutes: 20) {
            let server = try NFSTestServer.shared()
            try await server.shared {
                let export = try server.makeExport("concurrency-guest-v\(version)")
                let daemon = try Daemon.ferry(source: server.url(export, version: version))
                try ConcurrencyGuest.runAndCheck(socket: daemon.socket, seed: 410 + NFSTestVersion.allCases.firstIndex(of: version)!, on: "NFSv\(version)", log: { daemon.log })
                #expect(daemon.stop() == 0, "ferry virtiofsd log:\n\(daemon.log.suffix(3000))")
            }
        }
    }

    @Test("ferry-churn, stress-ng and a remount in one boot pass on rados://", .requires(.ceph))
    func onRADOS() async throws {
        try await GuestSlots.run(minutes: 20) {
            let cluster = try CephCluster.shared()
            let ferry = try BuiltProducts.require("ferry")
            let formatted = try runToCompletion(ferry, ["format", cluster.source("concurrency-guest")] + cluster.cephArguments)
            try #require(formatted.succeeded, "ferry format:\n\(formatted.output)")
            let daemon = try Daemon.ferry(export: cluster.source("concurrency-guest"), extra: cluster.cephArguments)
            // Fewer operations: every metadata change is a RADOS write; each worker still
            // builds and removes its 20 x 20 tree.
            try ConcurrencyGuest.runAndCheck(socket: daemon.socket, seed: 421, workers: 3, ops: 80, on: "rados://", log: { daemon.log })
            #expect(daemon.stop() == 0, "ferry virtiofsd log:\n\(daemon.log.suffix(3000))")
        }
    }
}
