import FerryTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Live migration of a running 6.12 guest between two `ferry serve` daemons, each with one
/// RADOS export of the same namespace of the shared test cluster (sandboxed as `ferry serve`
/// runs by default): the destination daemon's export starts while the source holds the
/// namespace's lease, waits as a standby (`ferry exports show` says so), and takes the lease
/// with the guest's state.
@Suite("Live migration of a guest on rados:// between two ferry serve", .serialized, .requires(.root, .qemu, .ceph))
struct ServeRADOSMigrationGuestTests {
    /// `ferry serve` with one tenant and one RADOS export "data" of `namespace`.
    struct Served {
        let daemon: Daemon
        let config: String

        init(_ cluster: CephCluster, namespace: String) throws {
            let top = try makeTemporaryDirectory("ferry-serve-rados-guest")
            config = top + "/config"
            daemon = try Daemon.serveOneExport(in: top, keys: "queues = \(GuestMachine.linux612.queues)",
                                               backend: cluster.exportBackend(namespace: namespace, keyringIn: top))
        }

        var socket: String { daemon.socket }

        /// `ferry exports show guest/data`.
        func show() -> String {
            (try? runToCompletion(try BuiltProducts.require("ferry"), ["exports", "show", "guest/data", "--config", config]).output) ?? ""
        }

        /// The lease row of `exports show`, once the export is serving (it opens on a
        /// thread of its own after the socket exists).
        func leaseRow() -> String? {
            var row: String?
            _ = GuestMigration.waitFor(60) {
                row = show().split(separator: "\n").first { $0.hasPrefix("lease") }.map(String.init)
                return row != nil
            }
            return row
        }
    }

    @Test
    func aGuestMigratesBetweenTwoFerryServeDaemonsAndTheStandbyBecomesTheWriter() async throws {
        try await GuestSlots.run(minutes: 20) {
            try GuestMigration.requireMigratingQEMU()
            let cluster = try CephCluster.shared()
            let ferry = try BuiltProducts.require("ferry")
            let namespace = "serve-migrate-\(getpid())"
            let formatted = try runToCompletion(ferry, ["format", cluster.source(namespace)] + cluster.cephArguments)
            try #require(formatted.succeeded, "\(formatted.output)")

            let source = try Served(cluster, namespace: namespace)
            #expect(source.leaseRow()?.contains("writer") == true, "\(source.show())\n\(source.daemon.log)")
            let destination = try Served(cluster, namespace: namespace)
            let before = destination.leaseRow() ?? ""
            #expect(before.contains("standby: lease held by client."), "\(destination.show())\n\(destination.daemon.log)")

            try GuestMigration.expectWritingGuestMigrates(source: source.socket, destination: destination.socket) {
                "source:\n\(source.daemon.log)\ndestination:\n\(destination.daemon.log)"
            }
            #expect(destination.leaseRow()?.contains("writer (holds the namespace's lease)") == true,
                    "\(destination.show())\n\(destination.daemon.log)")
            #expect(source.daemon.log.contains("lease released"), "source:\n\(source.daemon.log)")
            #expect(destination.daemon.log.contains("migrated state arrived; this server holds the lease"),
                    "destination:\n\(destination.daemon.log)")
            #expect(destination.daemon.stop() == 0, "destination:\n\(destination.daemon.log)")
            source.daemon.stop()
        }
    }
}
