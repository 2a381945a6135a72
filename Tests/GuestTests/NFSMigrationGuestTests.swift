import FerryTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Live migration of a running 6.12 guest between two `ferry virtiofsd` serving one export
/// of the shared nfs-ganesha (scripts/nfs), NFSv3 and NFSv4: nodes move as NFS file
/// handles, without any path search; the source commits what it wrote behind at
/// switch-over (docs/migration.md, "NFS identities"). Run inside `scripts/nfs/isolated`
/// (the guest image is built outside first: it needs the network once).
@Suite("Live migration of a guest on nfs://", .serialized, .requires(.root, .qemu, .ganesha))
struct NFSMigrationGuestTests {
    @Test(arguments: [3, 4])
    func aGuestAppendingToAnNFSExportMigratesBetweenTwoDaemons(version: Int) async throws {
        try await GuestSlots.run(minutes: 20) {
            try GuestMigration.requireMigratingQEMU()
            let server = try NFSTestServer.shared()
            try await server.shared {
                let export = try server.makeExport("guest-migration-v\(version)")
                let url = server.url(export, version: version)
                let source = try Daemon.ferry(export: url)
                defer { source.stop() }
                let destination = try Daemon.ferry(export: url)
                defer { destination.stop() }
                let outcome = try GuestMigration.expectWritingGuestMigrates(
                    source: source.socket, destination: destination.socket,
                    context: { "source:\n\(source.log)\ndestination:\n\(destination.log)" })
                // The server has what the guest counted, every line in its place.
                let lines = ((try? String(contentsOfFile: export + "/log.txt", encoding: .utf8)) ?? "").split(separator: "\n")
                #expect(lines.count == outcome.lines, "the guest counted \(String(describing: outcome.lines)) lines, the server has \(lines.count)")
                #expect(lines.enumerated().allSatisfy { $0.element == "line \($0.offset)" }, "lines out of place on the server")
                #expect(destination.stop() == 0, "destination daemon:\n\(destination.log)")
            }
        }
    }

    /// The destination's daemon dies before the guest moves: the destination QEMU cannot
    /// load the device, and the source (which committed everything at the save) is resumed
    /// with `cont`, as libvirt does. The guest writes on through its open fd at the source.
    @Test(arguments: [3, 4])
    func aGuestResumedAtTheSourceAfterAFailedMigrationWritesOn(version: Int) async throws {
        try await GuestSlots.run(minutes: 20) {
            try GuestMigration.requireMigratingQEMU()
            let server = try NFSTestServer.shared()
            try await server.shared {
                let export = try server.makeExport("guest-migration-fails-v\(version)")
                let url = server.url(export, version: version)
                let source = try Daemon.ferry(export: url)
                defer { source.stop() }
                let destination = try Daemon.ferry(export: url)
                defer { destination.stop() }
                let outcome = try GuestMigration.expectGuestResumesAtSourceWhenTheDestinationDaemonDies(
                    source: source.socket, destinationDaemon: destination.process.processIdentifier, destination: destination.socket
                ) { "source daemon:\n\(source.log)" }
                #expect(source.log.contains("migration state saved"), "source daemon:\n\(source.log)")
                let lines = ((try? String(contentsOfFile: export + "/log.txt", encoding: .utf8)) ?? "").split(separator: "\n")
                #expect(lines.count == outcome.lines && lines.enumerated().allSatisfy { $0.element == "line \($0.offset)" })
                #expect(source.log.contains("resuming on this daemon"), "source daemon:\n\(source.log)")
                #expect(source.stop() == 0, "source daemon:\n\(source.log)")
            }
        }
    }
}
