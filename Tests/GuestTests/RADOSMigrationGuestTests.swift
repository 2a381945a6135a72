import FerryTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Live migration of a running 6.12 guest between two `ferry virtiofsd` serving one RADOS
/// namespace of the shared test cluster: the destination daemon starts while the source
/// holds the namespace's single-writer lease, waits as a standby, and takes the lease when
/// the state arrives; the source releases it after saving (docs/migration.md, "The RADOS
/// lease at switch-over").
@Suite("Live migration of a guest on rados://", .serialized, .requires(.root, .qemu, .ceph))
struct RADOSMigrationGuestTests {
    /// A freshly formatted namespace and two daemons on it: the source (which takes the
    /// lease) and the destination (a standby, since the source holds it).
    static func twoDaemons(_ namespace: String) throws -> (source: Daemon, destination: Daemon) {
        let cluster = try CephCluster.shared()
        let ferry = try BuiltProducts.require("ferry")
        let url = cluster.source("\(namespace)-\(getpid())")
        let formatted = try runToCompletion(ferry, ["format", url] + cluster.cephArguments)
        try #require(formatted.succeeded, "\(formatted.output)")
        let source = try Daemon.ferry(export: url, extra: cluster.cephArguments)
        let destination = try Daemon.ferry(export: url, extra: cluster.cephArguments)
        return (source, destination)
    }

    @Test
    func aGuestAppendingToARADOSExportMigratesAndTheLeaseMovesWithIt() async throws {
        try await GuestSlots.run(minutes: 20) {
            try GuestMigration.requireMigratingQEMU()
            let (source, destination) = try Self.twoDaemons("migrate")
            #expect(destination.log.contains("waiting as a migration standby"), "destination daemon:\n\(destination.log)")
            try GuestMigration.expectWritingGuestMigrates(source: source.socket, destination: destination.socket,
                                                          context: { "source:\n\(source.log)\ndestination:\n\(destination.log)" })
            #expect(source.log.contains("lease released"), "source daemon:\n\(source.log)")
            #expect(destination.log.contains("migrated state arrived; this server holds the lease"), "destination daemon:\n\(destination.log)")
            #expect(destination.stop() == 0, "destination daemon:\n\(destination.log)")
            source.stop()
        }
    }

    /// The destination's daemon dies before the guest moves: the destination QEMU cannot
    /// load the device, and the source (whose daemon released the lease when it saved) is
    /// resumed with `cont`. The source's daemon takes the lease back before its rings run
    /// again, so the guest's next write through its open fd succeeds.
    @Test
    func aGuestResumedAtTheSourceAfterAFailedMigrationWritesOnWithTheLeaseTakenBack() async throws {
        try await GuestSlots.run(minutes: 20) {
            try GuestMigration.requireMigratingQEMU()
            let (source, destination) = try Self.twoDaemons("migrate-fails")
            try GuestMigration.expectGuestResumesAtSourceWhenTheDestinationDaemonDies(
                source: source.socket, destinationDaemon: destination.process.processIdentifier, destination: destination.socket
            ) { "source daemon:\n\(source.log)" }
            #expect(source.log.contains("lease released"), "source daemon:\n\(source.log)")
            #expect(source.log.contains("migration failed; resuming; this server holds the lease"), "source daemon:\n\(source.log)")
            #expect(source.stop() == 0, "source daemon:\n\(source.log)")
        }
    }
}
