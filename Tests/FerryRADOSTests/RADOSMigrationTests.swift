import FerryCore
@testable import FerryRADOS
import FerryTestSupport
import Logging
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Live migration of a RADOS export between two servers on one namespace of the real test
/// cluster, at the server core's level (what the vhost-user device calls at switch-over:
/// `saveMigrationState` on the source, `loadMigrationState` on the destination): the
/// guest's session moves, and the single-writer lease with it.
@Suite("RADOS exports migrate, with the lease", .serialized, .requires(.ceph))
struct RADOSMigrationTests {
    /// A short lease, so the bounded waits for it (lease + 5 s) stay short.
    static let leaseSeconds = 3

    /// A server (the core over a driver) on `target`, and the driver.
    final class Side {
        let driver: RADOSDriver
        let server: FUSEServer<RADOSDriver>
        init(_ target: RADOSTarget, standby: RADOSOptions.Standby = .never) throws {
            var logger = Logger(label: "ferry.test.rados-migration")
            logger.logLevel = .critical
            driver = try RADOSDriver(target: target, options: RADOSOptions(leaseSeconds: RADOSMigrationTests.leaseSeconds,
                                                                           standby: standby), logger: logger)
            server = try FUSEServer(driver: driver, policy: ExportPolicy(), logger: logger)
        }
        deinit { driver.close() }
        /// Whether the lease on the namespace is this server's.
        var holdsTheLease: Bool {
            guard let lease = driver.meta.locked({ driver.lease }) else { return false }
            return lease.isValid && driver.pool.lockOwner(Layout.superObject, name: Layout.leaseName)?.cookie == lease.cookie
        }
    }

    static let options = MigrationOptions()

    @Test func theSessionMovesAndTheDestinationSeesEveryAcknowledgedWrite() throws {
        let target = try freshTarget("mig-session")
        let source = try Side(target)
        let guest = FUSEWire(source.server)
        let log = guest.create("log", flags: O_WRONLY | O_APPEND)
        #expect(guest.write(log.node, fh: log.fh, at: 0, "line 1\n").written == 7)
        let sub = guest.mkdir("sub")
        #expect(guest.lookup("sub").nodeID == sub.nodeID)
        let inner = guest.create("inner", in: sub.nodeID)
        #expect(guest.write(inner.node, fh: inner.fh, at: 0, "inner bytes").written == 11)
        let subDir = guest.opendir(sub.nodeID)
        #expect(subDir.error == 0)
        // Unlinked while open: the guest still reads it, on the destination too.
        let tmp = guest.create("tmp")
        #expect(guest.write(tmp.node, fh: tmp.fh, at: 0, "still here").written == 10)
        #expect(guest.unlink("tmp") == 0)
        let closed = guest.create("closed")
        #expect(guest.release(closed.node, fh: closed.fh) == 0)

        // The destination daemon starts while the source serves: a standby, no lease taken.
        let destination = try Side(target, standby: .whenLeased)
        #expect(source.holdsTheLease && !destination.holdsTheLease)
        #expect(throws: Errno.io) { _ = try withName("nope") { try destination.driver.mkdir(destination.driver.root().inode, $0, mode: 0o755, root) } }
        // The size of this write is only in the source's memory (written behind).
        #expect(guest.write(log.node, fh: log.fh, at: 7, "line 2\n").written == 7)
        let lookups = source.server.lookupCount(of: sub.nodeID)

        let state = try source.server.saveMigrationState(Self.options)
        // The source handed over: it writes nothing more.
        #expect(!source.holdsTheLease)
        #expect(guest.write(log.node, fh: log.fh, at: 14, "from the old source\n").error == -EIO)

        let report = try destination.server.loadMigrationState(state, Self.options)
        #expect(report.failed == 0 && report.nodes == 5 && report.files == 3 && report.directories == 1, "\(report)")
        #expect(destination.holdsTheLease)
        let moved = FUSEWire(destination.server, initialize: false)
        #expect(destination.server.lookupCount(of: sub.nodeID) == lookups)
        #expect(moved.size(log.node).size == 14)
        #expect(moved.write(log.node, fh: log.fh, at: 14, "line 3\n").written == 7)
        #expect(moved.read(inner.node, fh: inner.fh).text == "inner bytes")
        #expect(moved.read(tmp.node, fh: tmp.fh).text == "still here")
        #expect(moved.readdir(sub.nodeID, fh: subDir.fh).names.contains("inner"))
        let again = moved.lookup("inner", in: sub.nodeID)
        #expect(again.error == 0 && again.nodeID == inner.node && again.generation == inner.generation)
        #expect(moved.read(closed.node, fh: closed.fh).error == -EBADF)
        // New nodes get new ids, never one the guest holds.
        let fresh = moved.create("after")
        #expect(fresh.error == 0 && ![1, log.node, sub.nodeID, inner.node, tmp.node].contains(fresh.node))

        // The source's session ends (its guest is gone): it lets go of the unlinked file
        // without purging it from under the destination.
        source.server.shutdown()
        #expect(try source.driver.drainPurges() == 0)
        #expect(try destination.driver.drainPurges() == 0)
        #expect(moved.read(tmp.node, fh: tmp.fh).text == "still here")
        // Every line, in order.
        let reading = moved.open(log.node)
        #expect(moved.read(log.node, fh: reading.fh).text == "line 1\nline 2\nline 3\n")
        #expect(moved.release(log.node, fh: reading.fh) == 0)
        // Released on the destination, the unlinked file is purged there.
        #expect(moved.release(tmp.node, fh: tmp.fh) == 0)
        #expect(try destination.driver.drainPurges() == 1)
    }
}
