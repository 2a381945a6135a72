import FerryTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Live migrations that fail, with a real 6.12 guest under QEMU 10 (TCG) between two
/// `ferry serve` daemons (`GuestMigration` runs the guest: it appends "line N" through one
/// open fd). Whatever breaks, the guest is never left with a silently different file: it
/// runs on at the source with its fd working, or, with `on_error = "guest-error"`, runs at
/// the destination where only what could not be found answers EIO.
@Suite("Live migration failures", .serialized, .requires(.root, .qemu))
struct MigrationFailureGuestTests {
    /// `ferry serve` with one POSIX export of `directory`, `[export.migration]` set to `migration`.
    struct Served {
        let daemon: Daemon
        let config: String
        var socket: String { daemon.socket }

        init(_ directory: String, migration: String = "") throws {
            daemon = try Daemon.serveOnePOSIXExport(
                keys: "queues = \(GuestMachine.linux612.queues)\n[export.migration]\n\(migration)", directory: directory).daemon
            // serveOnePOSIXExport keeps the configuration beside the sockets' directory.
            config = URL(fileURLWithPath: daemon.socket).deletingLastPathComponent().deletingLastPathComponent().path + "/config"
        }

        /// `ferry exports list --json`'s state and migrating state of the export.
        func states() -> (state: String?, migration: String?) {
            guard let out = try? runToCompletion(try BuiltProducts.require("ferry"), ["exports", "list", "--config", config, "--json"]),
                  let list = try? JSONSerialization.jsonObject(with: Data(out.output.utf8)) as? [[String: Any]],
                  let export = list.first else { return (nil, nil) }
            return (export["state"] as? String, export["migration"] as? String)
        }

        var context: String { "daemon log:\n\(daemon.log)" }
    }

    /// A guest writing at the source, a `ferry serve` of a fresh directory, and a
    /// destination QEMU waiting on another `ferry serve`: of the same directory, or of
    /// `destinationDirectory` (another host's view of the share), with `[export.migration]`
    /// keys `destinationMigration`.
    static func writingGuest(destinationDirectory: String? = nil, destinationMigration: String = "") throws
        -> (export: String, source: Served, destination: Served, m: GuestMigration) {
        try GuestMigration.requireMigratingQEMU()
        let export = try makeTemporaryDirectory("ferry-migration-export")
        let source = try Served(export)
        let destination = try Served(destinationDirectory ?? export, migration: destinationMigration)
        let m = try GuestMigration(source: source.socket, destination: destination.socket)
        try m.waitUntilWriting()
        return (export, source, destination, m)
    }

    /// The guest, still at the source after the failed migration, writes 100 lines more
    /// through the same fd when told, and finds every line in order.
    static func expectGuestFinishesAtTheSource(_ m: GuestMigration, _ source: Served) throws {
        let atFailure = m.progress(.source)
        let outcome = try m.finishOnSource()
        try #require(outcome.exited, "the guest did not finish at the source:\n\(outcome.console)\n\(source.context)")
        #expect(outcome.status == 0 && outcome.bad == 0, "\(outcome.console)\n\(source.context)")
        #expect((outcome.lines ?? 0) >= atFailure + 100, "the guest did not write on at the source: \(outcome.console)")
    }

    static func isRunning(_ monitor: QEMUMonitor) -> Bool {
        ((try? monitor.command("info status")) ?? "").contains("VM status: running")
    }

    /// Starts the migration with the copy of guest memory slowed (4 MiB/s: a 512 MiB guest
    /// takes minutes), so a test has the time to break something while it runs; returns once
    /// the source export shows `migrating-out` (its device logs the pages it writes).
    static func startSlowedMigration(_ m: GuestMigration, from source: Served) throws {
        _ = try m.sourceMonitor.command("migrate_set_parameter max-bandwidth 4M")
        _ = try m.sourceMonitor.command("migrate -d unix:\(m.incoming)")
        let logging = GuestMigration.waitFor(120) { source.states().migration == "migrating-out" }
        let info = (try? m.sourceMonitor.command("info migrate")) ?? ""
        try #require(logging && info.contains("Migration status: active"),
                     "the source never showed migrating-out during the copy: \(source.states()) \(info)\n\(source.context)")
    }

    /// The stream breaks while guest memory is being copied (the destination QEMU is killed;
    /// the copy is slowed so there is time to): the source's migration fails, its guest
    /// never stopped, and the export stops logging; the guest writes on through the same fd.
    @Test
    func aMigrationStreamThatBreaksLeavesTheGuestWritingAtTheSource() async throws {
        try await GuestSlots.run(minutes: 15) {
            let (_, source, destination, m) = try Self.writingGuest()

            try Self.startSlowedMigration(m, from: source)
            kill(m.destinationPID, SIGKILL)

            let status = try m.waitForMigrationToEnd()
            #expect(status.contains("Migration status: failed"), "\(status)")
            #expect(Self.isRunning(m.sourceMonitor))
            // QEMU's clean-up turned logging off: the export just serves its guest again.
            #expect(GuestMigration.waitFor(60) { source.states() == ("guest connected", nil) }, "\(source.states())")
            #expect(destination.states() == ("listening", nil), "\(destination.states())")

            try Self.expectGuestFinishesAtTheSource(m, source)
            #expect(destination.daemon.log.contains("migration state loaded") == false, "\(destination.context)")
            source.daemon.stop()
            destination.daemon.stop()
        }
    }

    static func lines(_ path: String) -> [String] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    /// The destination host's view of the share lacks the file the guest holds open (an
    /// empty directory: find-paths finds nothing), and its export aborts on what it cannot
    /// find: the destination refuses the state, QEMU's migration fails, and the guest runs on
    /// at the source with its fd working.
    @Test
    func aDestinationThatRefusesTheStateLeavesTheGuestRunningAtTheSource() async throws {
        try await GuestSlots.run(minutes: 15) {
            let elsewhere = try makeTemporaryDirectory("ferry-migration-empty")
            let (_, source, destination, m) = try Self.writingGuest(destinationDirectory: elsewhere, destinationMigration: "on_error = \"abort\"")

            let status = try m.migrate(after: ["migrate_set_capability return-path on"])
            let destinationGone = GuestMigration.waitFor(120) { !GuestMigration.isRunning(m.destinationPID) }
            #expect(destinationGone && m.console(.destination).contains("load of migration failed"), "\(m.console(.destination))")
            #expect(destination.daemon.log.contains("the migrated state was refused"), "\(destination.context)")
            #expect(status.contains("Migration status: failed"), "\(status)")
            #expect(Self.isRunning(m.sourceMonitor), "\((try? m.sourceMonitor.command("info status")) ?? "")")

            try Self.expectGuestFinishesAtTheSource(m, source)
            #expect(try FileManager.default.contentsOfDirectory(atPath: elsewhere).isEmpty)
            source.daemon.stop()
            destination.daemon.stop()
        }
    }

    /// The same share without the file, with `on_error = "guest-error"`: the migration
    /// completes, the guest runs at the destination, and only its fd on the file that could
    /// not be found answers EIO; the rest of its session (its mount, sync, unmount) works.
    @Test
    func withGuestErrorOnlyTheFdOfTheMissingFileAnswersEIOAtTheDestination() async throws {
        try await GuestSlots.run(minutes: 15) {
            let elsewhere = try makeTemporaryDirectory("ferry-migration-empty")
            let (export, source, destination, m) = try Self.writingGuest(destinationDirectory: elsewhere, destinationMigration: "on_error = \"guest-error\"")

            let status = try m.migrate()
            try #require(status.contains("Migration status: completed"), "\(status)\n\(destination.context)")
            _ = try? m.sourceMonitor.command("quit")
            // The guest's next write, at the destination, fails; the program reports it and ends.
            // Up to the unmount that follows the program's end ("umounted" or "umount-failed").
            let ended = GuestMigration.waitFor(300) { m.console(.destination).contains("FERRY-GUEST: umount") }
            let console = m.console(.destination)
            try #require(ended, "the guest did not end at the destination:\n\(console)\n\(destination.context)")
            #expect(console.contains("write failed at") && console.contains("Input/output error"), "\(console)")
            #expect(console.contains("FERRY-GUEST: exit=1"), "\(console)")
            #expect(console.contains("FERRY-GUEST: umounted"), "\(console)")
            #expect(destination.daemon.log.contains("migration state loaded"), "\(destination.context)")
            // Nothing was written anywhere else: the source's file holds what was written there,
            // in order, and the destination's directory stays empty.
            let written = Self.lines(export + "/log.txt")
            #expect(!written.isEmpty && written == (0..<written.count).map { "line \($0)" })
            #expect(try FileManager.default.contentsOfDirectory(atPath: elsewhere).isEmpty)
            source.daemon.stop()
            destination.daemon.stop()
        }
    }

    /// The source's daemon is killed while guest memory is copied. Ferry has no restart
    /// that keeps a session, and QEMU's vhost-user-fs does not reconnect to a back-end, so
    /// what is true, and tested, is this: QEMU's migration fails at switch-over (the
    /// back-end's state cannot be asked for) rather than hang, the VM stays running at the
    /// source, the destination QEMU gives up on its incomplete stream and exits, and the
    /// destination daemon is back to listening with no state taken, ready for another
    /// attempt. The guest's file requests at the source wait for a back-end that never comes
    /// back (not asserted: a wait); the file holds exactly the lines written, in order.
    @Test
    func aSourceDaemonKilledMidMigrationFailsItAndLeavesTheVMRunningAtTheSource() async throws {
        try await GuestSlots.run(minutes: 15) {
            let (export, source, destination, m) = try Self.writingGuest()

            try Self.startSlowedMigration(m, from: source)
            kill(source.daemon.process.processIdentifier, SIGKILL)

            let status = try m.waitForMigrationToEnd()
            #expect(status.contains("Migration status: failed"), "\(status)")
            #expect(m.console(.source).contains("Error saving back-end state"), "\(m.console(.source))")
            #expect(Self.isRunning(m.sourceMonitor), "\((try? m.sourceMonitor.command("info status")) ?? "")")
            let destinationGone = GuestMigration.waitFor(120) { !GuestMigration.isRunning(m.destinationPID) }
            #expect(destinationGone && m.console(.destination).contains("load of migration failed"), "\(m.console(.destination))")
            #expect(GuestMigration.waitFor(60) { destination.states() == ("listening", nil) }, "\(destination.states())")
            #expect(!destination.daemon.log.contains("migration state loaded"), "\(destination.context)")
            let written = Self.lines(export + "/log.txt")
            #expect(!written.isEmpty && written == (0..<written.count).map { "line \($0)" })
            destination.daemon.stop()
        }
    }
}
