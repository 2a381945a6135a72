import FerryTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A real guest on one export of `ferry serve` (sandboxed by default: namespaces,
/// seccomp kill) while the operator reloads the daemon around it.
@Suite(.serialized, .requires(.root, .qemu))
struct ServeGuestTests {
    /// The guest conformance checks on an export of `ferry serve` as it runs by default:
    /// namespaces, its private root, seccomp kill, reduced capabilities.
    @Test
    func theConformanceChecksPassInAGuestOnASandboxedDaemon() async throws {
        try await GuestSlots.run(minutes: 20) {
            let (daemon, _) = try Daemon.serveOnePOSIXExport(keys: "xattr = true")
            let run = try Guest.run(socket: daemon.socket, command: guestConformanceCommand, timeout: 900)
            #expect(daemon.stop() == 0, "ferry serve log:\n\(daemon.log)")
            #expect(!daemon.log.contains("seccomp stopped"), "\(daemon.log)")
            let results = conformanceResults(run.output)
            #expect(results.count >= 40, "too few checks ran:\n\(run.log)")
            let failed = results.filter { !$0.value }.keys.sorted()
            #expect(failed.isEmpty, "failed on ferry serve: \(failed)\n\(run.output)")
            #expect(run.status == 0)
        }
    }

    @Test
    func aGuestOnExportASeesNoErrorWhileExportBIsAddedChangedAndRemoved() async throws {
        try await GuestSlots.run(minutes: 10) {
            let top = try makeTemporaryDirectory("ferry-serve-guest")
            let config = top + "/config"
            try FileManager.default.createDirectory(atPath: config + "/tenants", withIntermediateDirectories: true)
            for d in ["a", "b"] { try FileManager.default.createDirectory(atPath: top + "/" + d, withIntermediateDirectories: true) }
            try """
                control_socket = "\(top)/control.sock"
                """.write(toFile: config + "/ferry.toml", atomically: true, encoding: .utf8)
            @Sendable func export(_ name: String, _ extra: String = "") -> String {
                """
                [[export]]
                name = "\(name)"
                tag = "t-\(name)"
                socket = "\(top)/\(name).sock"
                \(extra)
                [export.backend]
                kind = "posix"
                path = "\(top)/\(name)"

                """
            }
            @Sendable func writeTenant(_ name: String, _ body: String) throws {
                try "name = \"\(name)\"\n\(body)".write(toFile: config + "/tenants/\(name).toml", atomically: true, encoding: .utf8)
            }
            @Sendable func reload() throws -> ProcessOutput {
                try runToCompletion(try BuiltProducts.require("ferry"), ["reload", "--config", config])
            }
            try writeTenant("alpha", export("a"))
            let daemon = try Daemon.serve(config: config, socket: top + "/a.sock")
            defer { daemon.stop() }

            // The guest writes, syncs and reads back a file per round until the host says stop,
            // counting every failure, and records its progress for the host to follow.
            let loop = """
                i=0; e=0; while [ ! -e /mnt/stop ] && [ $i -lt 5000 ]; do \
                echo "round $i" > /mnt/r.tmp || e=$((e+1)); sync; \
                grep -q "^round $i$" /mnt/r.tmp || e=$((e+1)); \
                mv /mnt/r.tmp /mnt/r$((i % 4)) || e=$((e+1)); \
                echo $i > /mnt/progress.tmp && mv /mnt/progress.tmp /mnt/progress || e=$((e+1)); \
                i=$((i+1)); done; echo "rounds=$i errors=$e"; [ $e -eq 0 ]
                """
            @Sendable func progress() -> Int {
                Int(((try? String(contentsOfFile: top + "/a/progress", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
            }
            // Generous bounds (the guest boots under TCG on a machine other suites keep busy);
            // they end as soon as the guest gets there.
            @Sendable func advances(by rounds: Int, within seconds: Double = 120) -> Bool {
                let start = progress()
                let deadline = Date().addingTimeInterval(seconds)
                while progress() < start + rounds { if Date() > deadline { return false }; usleep(50_000) }
                return true
            }
            let steps = Locked<[String]>([])
            let operator_ = Thread {
                guard advances(by: 3, within: 240) else { steps.update { $0.append("guest never started") }; return }
                do {
                    try writeTenant("beta", export("b"))
                    let add = try reload().output
                    steps.update { $0.append("add: " + add) }
                    guard advances(by: 3) else { steps.update { $0.append("stalled after add") }; return }
                    try writeTenant("beta", export("b", "read_only = true\nqueues = 2"))
                    let change = try reload().output
                    steps.update { $0.append("change: " + change) }
                    guard advances(by: 3) else { steps.update { $0.append("stalled after change") }; return }
                    try writeTenant("beta", export("b", "cache = \"never\"\nqueues = 99"))
                    let reject = try reload().output
                    steps.update { $0.append("reject: " + reject) }
                    guard advances(by: 3) else { steps.update { $0.append("stalled after reject") }; return }
                    try FileManager.default.removeItem(atPath: config + "/tenants/beta.toml")
                    let remove = try reload().output
                    steps.update { $0.append("remove: " + remove) }
                    guard advances(by: 3) else { steps.update { $0.append("stalled after remove") }; return }
                } catch {
                    steps.update { $0.append("error: \(error)") }
                }
                _ = FileManager.default.createFile(atPath: top + "/a/stop", contents: nil)
            }
            operator_.start()
            let run = try Guest.run(socket: top + "/a.sock", command: loop, timeout: 240)
            _ = FileManager.default.createFile(atPath: top + "/a/stop", contents: nil)
            usleep(200_000)

            let joined = steps.value.joined(separator: "\n")
            #expect(run.status == 0, "guest:\n\(run.output)\nsteps:\n\(joined)\nlog:\n\(daemon.log)")
            #expect(run.output.contains("errors=0"), "\(run.output)")
            #expect(steps.value.count == 4, "\(joined)")
            #expect(joined.contains("add: added: beta/b"))
            #expect(joined.contains("change: changed (restarted): beta/b"))
            #expect(joined.contains("queues must be between 1 and 16") && joined.contains("configuration rejected"))
            #expect(joined.contains("remove: removed: beta/b"))
            #expect(daemon.stop() == 0, "\(daemon.log)")
            // A was never restarted: one guest connection, from start to end.
            #expect(daemon.log.components(separatedBy: "vhost-user front-end connected").count - 1 == 1, "\(daemon.log)")
        }
    }
}
