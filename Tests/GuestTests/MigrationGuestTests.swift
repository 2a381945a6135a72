import FerryTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Live migration of a running Linux 6.12 guest between two Ferry daemons serving the same
/// directory (`GuestMigration` runs the guest and QEMU 10). The guest appends through one open
/// fd the whole time and never notices.
@Suite("Live migration of a directory export", .serialized, .requires(.root, .qemu))
struct MigrationGuestTests {
    @Test(arguments: [["--migration-mode=find-paths", "--migration-verify-handles"],
                                                ["--migration-mode=file-handles"]])
    func aGuestAppendingThroughOneOpenFdMigratesBetweenTwoDaemons(options: [String]) async throws {
        try await GuestSlots.run(minutes: 15) {
            try GuestMigration.requireMigratingQEMU()
            let export = try makeTemporaryDirectory("ferry-migration-export")
            let source = try Daemon.ferry(export: export, extra: options)
            let destination = try Daemon.ferry(export: export, extra: options)
            try GuestMigration.expectWritingGuestMigrates(source: source.socket, destination: destination.socket) {
                "source daemon:\n\(source.log)\ndestination daemon:\n\(destination.log)"
            }
            // The host sees what the guest checked.
            let written = ((try? String(contentsOfFile: export + "/log.txt", encoding: .utf8)) ?? "").split(separator: "\n")
            #expect(written.enumerated().allSatisfy { $0.element == "line \($0.offset)" }, "log.txt is not lines in order")
            #expect(source.log.contains("migration state saved"), "\(source.log)")
            #expect(destination.log.contains("migration state loaded"), "\(destination.log)")
            #expect(destination.stop() == 0, "destination daemon:\n\(destination.log)")
            source.stop()
        }
    }

    /// The destination's daemon dies before the guest moves: the destination QEMU cannot
    /// load the device and gives up. In precopy the source cannot know (it reports the
    /// migration completed and stays paused); the management layer (libvirt) sees the
    /// destination fail and resumes the source with `cont`. The guest then runs on at the
    /// source with the same session: its open fd still works, every line is in place.
    @Test
    func aMigrationWhoseDestinationDaemonDiedLeavesTheGuestRunningAtTheSource() async throws {
        try await GuestSlots.run(minutes: 15) {
            try GuestMigration.requireMigratingQEMU()
            let export = try makeTemporaryDirectory("ferry-migration-export")
            let source = try Daemon.ferry(export: export)
            let destination = try Daemon.ferry(export: export)
            try GuestMigration.expectGuestResumesAtSourceWhenTheDestinationDaemonDies(
                source: source.socket, destinationDaemon: destination.process.processIdentifier, destination: destination.socket
            ) { "source daemon:\n\(source.log)" }
            #expect(source.stop() == 0, "source daemon:\n\(source.log)")
        }
    }

    /// The same move between two `ferry serve` daemons: the destination host's daemon takes
    /// the incoming state on the export's socket.
    @Test
    func aGuestMigratesBetweenTwoFerryServeDaemons() async throws {
        try await GuestSlots.run(minutes: 15) {
            try GuestMigration.requireMigratingQEMU()
            let export = try makeTemporaryDirectory("ferry-migration-export")
            let queues = "queues = \(GuestMachine.linux612.queues)"
            let source = try Daemon.serveOnePOSIXExport(keys: queues, directory: export).daemon
            let destination = try Daemon.serveOnePOSIXExport(keys: queues, directory: export).daemon
            try GuestMigration.expectWritingGuestMigrates(source: source.socket, destination: destination.socket) {
                "source:\n\(source.log)\ndestination:\n\(destination.log)"
            }
            #expect(destination.log.contains("migration state loaded"), "\(destination.log)")
            destination.stop()
            source.stop()
        }
    }
}
