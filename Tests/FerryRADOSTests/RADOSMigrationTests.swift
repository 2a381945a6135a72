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
        let guest = try FUSEWire(source.server)
        let log = guest.create("log", flags: O_WRONLY | O_APPEND)
        #expect(guest.write(log.node, fh: log.fh, at: 0, "line 1\n").written == 7)
        let sub = guest.mkdir("sub")
        #expect(guest.lookup("sub").nodeID == sub.nodeID)
        let inner = guest.create("inner", in: sub.nodeID)
        #expect(guest.write(inner.node, fh: inner.fh, at: 0, "inner bytes").written == 11)
        let subDir = guest.opendir(sub.nodeID), rootDir = guest.opendir(1)
        #expect(subDir.error == 0 && rootDir.error == 0)
        // Unlinked while open: the guest still reads it, on the destination too.
        let tmp = guest.create("tmp")
        #expect(guest.write(tmp.node, fh: tmp.fh, at: 0, "still here").written == 10)
        let tmpIno = try withName("tmp") { try source.driver.lookup(source.driver.root().inode, $0, root).key }
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
        #expect(report.failed == 0 && report.nodes == 5 && report.files == 3 && report.directories == 2, "\(report)")
        #expect(destination.holdsTheLease)
        let moved = try FUSEWire(destination.server, initialize: false)
        #expect(destination.server.lookupCount(of: sub.nodeID) == lookups)
        #expect(moved.size(log.node).size == 14)
        #expect(moved.write(log.node, fh: log.fh, at: 14, "line 3\n").written == 7)
        #expect(moved.read(inner.node, fh: inner.fh).text == "inner bytes")
        #expect(moved.read(tmp.node, fh: tmp.fh).text == "still here")
        #expect(moved.readdir(sub.nodeID, fh: subDir.fh).names.contains("inner"))
        #expect(Set(moved.readdir(1, fh: rootDir.fh).names).isSuperset(of: ["log", "sub", "closed"]))
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
        try destination.driver.drainPurges()
        #expect(try destination.driver.pool.size(Layout.inodeObject(tmpIno)).get() == nil)
    }

    @Test func aStandbyNeitherTakesNorBreaksTheLeaseOfALiveSource() throws {
        let target = try freshTarget("mig-standby")
        let source = try Side(target)
        let guest = try FUSEWire(source.server)
        let file = guest.create("f")
        let standby = try Side(target, standby: .always)
        #expect(throws: Errno.io) { _ = try withName("nope") { try standby.driver.mkdir(standby.driver.root().inode, $0, mode: 0o755, root) } }
        #expect(source.holdsTheLease && !standby.holdsTheLease)
        #expect(guest.write(file.node, fh: file.fh, at: 0, "one").written == 3)

        // A state whose source then resumed (the migration failed) reaches the standby:
        // the source serves, so the standby waits its bounded time and refuses the state.
        let state = try source.server.saveMigrationState(Self.options)
        source.server.migrationResumedAtSource()
        #expect(source.holdsTheLease)
        #expect(throws: MigrationError.self) { _ = try standby.server.loadMigrationState(state, Self.options) }
        #expect(source.holdsTheLease && !standby.holdsTheLease)
        #expect(guest.write(file.node, fh: file.fh, at: 3, " two").written == 4)
        #expect(guest.read(file.node, fh: file.fh).text == "one two")
    }

    @Test func aSourceResumingAfterAFailedMigrationTakesItsLeaseBackOrWritesNothing() throws {
        let target = try freshTarget("mig-resume")
        let source = try Side(target)
        let guest = try FUSEWire(source.server)
        let file = guest.create("f")
        #expect(guest.write(file.node, fh: file.fh, at: 0, "before").written == 6)
        _ = try source.server.saveMigrationState(Self.options)
        #expect(guest.write(file.node, fh: file.fh, at: 6, " lost").error == -EIO)
        // The destination never loaded it: QEMU resumes the source, whose rings start again.
        source.server.migrationResumedAtSource()
        #expect(source.holdsTheLease)
        #expect(guest.write(file.node, fh: file.fh, at: 6, " after").written == 6)
        #expect(guest.read(file.node, fh: file.fh).text == "before after")

        // Saved again, and this time another server took the namespace meanwhile: the
        // source cannot take the lease back, so it answers errors instead of writing unfenced.
        _ = try source.server.saveMigrationState(Self.options)
        let other = try Side(target)
        source.server.migrationResumedAtSource()
        #expect(!source.holdsTheLease && other.holdsTheLease)
        #expect(guest.write(file.node, fh: file.fh, at: 12, " never").error == -EIO)
        #expect(guest.create("g").error == -EIO)
        let otherGuest = try FUSEWire(other.server)
        let seen = otherGuest.lookup("f")
        #expect(otherGuest.size(seen.nodeID).size == 12)
    }

    @Test(arguments: MigrationOptions.OnError.allCases)
    func aFileRemovedBetweenSaveAndLoadFailsTheMigrationOrAnswersEIO(onError: MigrationOptions.OnError) throws {
        let target = try freshTarget("mig-gone-\(onError.rawValue)")
        let source = try Side(target)
        let guest = try FUSEWire(source.server)
        let gone = guest.create("gone"), kept = guest.create("kept")
        let destination = try Side(target, standby: .whenLeased)
        let state = try source.server.saveMigrationState(Self.options)
        // Between save and load the file's inode goes (another writer, or fsck).
        let ino = try withName("gone") { try source.driver.lookup(source.driver.root().inode, $0, root).key }
        #expect(source.driver.pool.remove(Layout.inodeObject(ino)) == 0)
        let options = MigrationOptions(onError: onError)
        switch onError {
        case .abort:
            #expect(throws: MigrationError.self) { _ = try destination.server.loadMigrationState(state, options) }
            // Refused before the destination took anything: the source takes its lease back.
            #expect(!destination.holdsTheLease)
            source.server.migrationResumedAtSource()
            #expect(source.holdsTheLease)
            #expect(guest.write(kept.node, fh: kept.fh, at: 0, "kept").written == 4)
        case .guestError:
            let report = try destination.server.loadMigrationState(state, options)
            #expect(report.failed == 2, "\(report)")     // the node and its open file
            #expect(destination.holdsTheLease)
            let moved = try FUSEWire(destination.server, initialize: false)
            #expect(moved.size(gone.node).error == -EIO)
            #expect(moved.write(gone.node, fh: gone.fh, at: 0, "x").error == -EIO)
            #expect(moved.write(kept.node, fh: kept.fh, at: 0, "kept").written == 4)
            #expect(moved.release(gone.node, fh: gone.fh) == 0)
        }
    }

    @Test func anInodeNumberOfAnotherNamespaceIsRefusedNeverAnotherFile() throws {
        let first = try freshTarget("mig-ns-a"), second = try freshTarget("mig-ns-b")
        let source = try Side(first)
        let guest = try FUSEWire(source.server)
        let a = guest.create("a")
        #expect(guest.write(a.node, fh: a.fh, at: 0, "first namespace").written == 15)
        // The other namespace has a file with the same inode number (both allocators start alike).
        let elsewhere = try Side(second)
        let b = try FUSEWire(elsewhere.server).create("b")
        #expect(b.error == 0)
        elsewhere.driver.close()
        let ino = try withName("a") { try source.driver.lookup(source.driver.root().inode, $0, root).key }
        let inoThere = try withName("b") { try elsewhere.driver.lookup(elsewhere.driver.root().inode, $0, root).key }
        #expect(ino == inoThere)
        let state = try source.server.saveMigrationState(Self.options)
        let destination = try Side(second, standby: .always)
        #expect(throws: MigrationError.self) { _ = try destination.server.loadMigrationState(state, Self.options) }
        #expect(!destination.holdsTheLease)

        // Identities that are not what the source writes are refused, whatever their length.
        let node = try source.driver.migrationIdentity(
            ofNode: try withName("a") { try source.driver.lookup(source.driver.root().inode, $0, root).inode }, Self.options)
        #expect(node.count == RADOSDriver.nodeIdentitySize)
        for bad in [[], Array(node.dropLast()), node + [0], [2] + node.dropFirst()] {
            #expect(throws: Errno.self) { _ = try source.driver.migratedNode(bad, Self.options) }
        }
        var wrongType = node
        wrongType[2] = 0x40     // S_IFDIR (0x4000) where the file is S_IFREG (0x8000)
        #expect(throws: Errno.stale) { _ = try source.driver.migratedNode(wrongType, Self.options) }
        #expect(throws: Errno.self) { _ = try source.driver.migratedDirectory([1] + [UInt8](repeating: 0xff, count: 4) + node, Self.options) }
        #expect(throws: Errno.self) { _ = try source.driver.migratedFile([1, 0, 0, 0, 0] + [255, 255, 255, 255], Self.options) }
    }

    /// A source that dies between its write-back and its release at save leaves the lease
    /// held by no one alive: the destination waits for it to expire, takes it, and fences
    /// the dead holder (blocklisted: nothing it still had in flight can land).
    @Test func aDestinationTakesTheLeaseOfASourceThatDiedHoldingItAndFencesIt() throws {
        let target = try freshTarget("mig-dead-source")
        let source = try Side(target)
        let guest = try FUSEWire(source.server)
        let file = guest.create("f")
        #expect(guest.write(file.node, fh: file.fh, at: 0, "acknowledged").written == 12)
        let destination = try Side(target, standby: .whenLeased)
        let state = try source.server.saveMigrationState(Self.options)
        // What a source dying just before its release leaves: a held lease nobody renews,
        // and its address as the holder.
        let deadPool = try RADOSPool(target)
        let dead = try Lease(pool: deadPool, seconds: Self.leaseSeconds, purpose: "a source that died")
        #expect(dead.isValid && !destination.holdsTheLease)

        _ = try destination.server.loadMigrationState(state, Self.options)
        #expect(destination.holdsTheLease)
        #expect(destination.driver.lease?.fencing?.contains("fenced the previous holder") == true,
                "\(destination.driver.lease?.fencing ?? "no fencing")")
        // The dead holder's writes are refused by the OSDs now.
        #expect(deadPool.write(Layout.superObject) { $0.setxattr("ferry.test", [1]) } < 0)
        let moved = try FUSEWire(destination.server, initialize: false)
        #expect(moved.read(file.node, fh: file.fh).text == "acknowledged")
        #expect(moved.write(file.node, fh: file.fh, at: 12, " and more").written == 9)
    }

    /// A `ferry virtiofsd` started while another daemon holds the lease waits as a standby;
    /// if what connects is a guest of its own rather than a migration, it takes the lease as
    /// soon as it is free. A source that handed its export over never does.
    @Test func aStandbyServingItsOwnGuestBecomesTheWriterOnceTheLeaseIsFreeButAHandedOverSourceNever() throws {
        let target = try freshTarget("mig-standby-own")
        let holder = try Side(target)
        let standby = try Side(target, standby: .whenLeased)
        let guest = try FUSEWire(standby.server)
        #expect(guest.create("early").error == -EIO)
        holder.driver.close()
        // One attempt a second at most: poll within a generous bound.
        var made = guest.create("later")
        let deadline = monotonicSeconds() + 30
        while made.error != 0 && monotonicSeconds() < deadline {
            usleep(200_000)
            made = guest.create("later")
        }
        #expect(made.error == 0)
        #expect(standby.holdsTheLease)

        // The new writer hands over: however many requests reach it afterwards while its
        // guest's connection lasts, it does not try to take the lease again.
        _ = try standby.server.saveMigrationState(Self.options)
        standby.driver.meta.locked { standby.driver.lastStandbyAttempt = -.infinity }
        #expect(guest.write(made.node, fh: made.fh, at: 0, "x").error == -EIO)
        #expect(guest.create("never").error == -EIO)
        #expect(standby.driver.meta.locked { standby.driver.lastStandbyAttempt } == -.infinity)
        // The lease was free all along: the next server takes it.
        let next = try Side(target)
        #expect(next.holdsTheLease && !standby.holdsTheLease)
    }
}
