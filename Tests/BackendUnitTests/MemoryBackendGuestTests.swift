import FerryBackends
import FerryConfig
import FerryDaemon
import FerryTestSupport
import Foundation
import Logging
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The proof that a backend is one unit: `MemoryBackend`, defined in this test target and
/// registered with one line, serves a real 6.12 guest under QEMU through `ferry serve`'s
/// daemon run in this process (`DaemonService`, no sandbox: a test process cannot enter
/// one), named by `kind = "memory"` in a tenant file like any other backend.
@Suite(.serialized, .requires(.root, .qemu))
struct MemoryBackendGuestTests {
    /// What the guest does on the export, printing what it reads back and lists.
    static let guestCommand = """
        echo "kernel: $(uname -r)" && mkdir /mnt/notes && echo "written by the guest" > /mnt/notes/a.txt && sync \
        && echo "read: $(cat /mnt/notes/a.txt)" && echo "listed: $(ls /mnt/notes)" \
        && mv /mnt/notes/a.txt /mnt/notes/b.txt && echo "renamed: $(ls /mnt/notes)" \
        && rm /mnt/notes/b.txt && rmdir /mnt/notes && echo "left: [$(ls -A /mnt)]"
        """

    @Test
    func aBackendDefinedInATestServesARealGuestThroughFerryServe() async throws {
        try await GuestSlots.run(minutes: 10) {
            BackendRegistry.register(MemoryBackend.self)

            let top = try makeTemporaryDirectory("ferry-memory-backend")
            defer { try? FileManager.default.removeItem(atPath: top) }
            try FileManager.default.createDirectory(atPath: top + "/config/tenants", withIntermediateDirectories: true)
            let socket = top + "/lab.sock"
            try """
                control_socket = "\(top)/control.sock"
                [sandbox]
                mode = "none"
                seccomp = "none"
                """.write(toFile: top + "/config/ferry.toml", atomically: true, encoding: .utf8)
            try """
                name = "lab"
                [[export]]
                name = "scratch"
                tag = "ferry"
                socket = "\(socket)"
                [export.backend]
                kind = "memory"
                """.write(toFile: top + "/config/tenants/lab.toml", atomically: true, encoding: .utf8)

            let configuration = try ConfigLoader.load(directory: top + "/config").get()
            var logger = Logger(label: "memory-backend")
            logger.logLevel = .warning
            let service = try DaemonService(configuration: configuration, logger: logger)
            service.start()
            defer { service.stop() }
            let deadline = Date().addingTimeInterval(60)
            while service.daemon.statuses().first?.state != .listening, Date() < deadline { usleep(20_000) }
            try #require(service.daemon.statuses().first?.state == .listening)

            let log = top + "/console.log"
            let run = try runToCompletion(BuiltProducts.packageRoot.path + "/scripts/guest/run-guest", [
                "--socket", socket, "--kernel", "6.12", "--cmd", Self.guestCommand, "--timeout", "400", "--quiet", "--log", log,
            ])
            let console = (try? String(contentsOfFile: log, encoding: .utf8)) ?? run.output
            #expect(run.status == 0, "\(console)")
            for line in ["kernel: 6.12", "read: written by the guest", "listed: a.txt", "renamed: b.txt", "left: []"] {
                #expect(console.contains(line), "missing '\(line)' in:\n\(console)")
            }
            // The guest's requests reached this process's driver through the daemon.
            let counters = try #require(service.daemon.statuses().first?.counters)
            #expect(counters.bytesWritten >= 21 && counters.bytesRead >= 21)
        }
    }
}
