import FerryFUSE
import FerryTestSupport
import FerryVhostFrontend
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// RADOS exports of two real `ferry serve` daemons on one namespace of the shared test
/// cluster, driven over their sockets as QEMU drives them (the Swift front-end): the second
/// daemon's export starts as a standby while the first holds the lease, `ferry exports`
/// and the metrics say so from the driver's own state, and it becomes the writer when a
/// migrated guest arrives or, for a guest of its own, once the lease is free.
@Suite(.serialized, .requires(.root, .ceph))
struct ServeRADOSStandbyTests {
    /// A formatted namespace of the shared cluster, fresh for each test.
    static func formattedNamespace(_ name: String) throws -> (CephCluster, String) {
        let cluster = try CephCluster.shared()
        let namespace = "\(name)-\(getpid())"
        let formatted = try runToCompletion(try BuiltProducts.require("ferry"), ["format", cluster.source(namespace)] + cluster.cephArguments)
        try #require(formatted.succeeded, "\(formatted.output)")
        return (cluster, namespace)
    }

    /// `ferry serve` with tenant acme's one export "vm" on `namespace`.
    static func serve(_ cluster: CephCluster, _ namespace: String) throws -> ServeFixture {
        let f = try ServeFixture()
        try f.writeTenant("acme", f.export("vm", tenant: "acme", backend: cluster.exportBackend(namespace: namespace, keyringIn: f.top)))
        try f.start()
        return f
    }

    /// `lease` of the export in `exports list --json`: its role and holder.
    static func lease(_ f: ServeFixture) throws -> (role: String?, holder: String?) {
        let lease = try f.listJSON().first?["lease"] as? [String: Any]
        return (lease?["role"] as? String, lease?["holder"] as? String)
    }

    static func show(_ f: ServeFixture) throws -> String {
        try f.ferry(["exports", "show", "acme/vm", "--config", f.config]).output
    }

    /// MKDIR's errno, 0 when it worked.
    static func mkdirError(_ q: FUSEQueueClient, _ name: String) -> Int32 {
        do {
            _ = try q.mkdir(parent: FUSESession.rootNodeID, name: name, mode: 0o755)
            return 0
        } catch FrontendError.fuseError(_, let e) {
            return e
        } catch {
            return -1
        }
    }

    @Test(.timeLimit(.minutes(5)))
    func aStandbyTakesTheLeaseWithAMigratedGuestAndTheSourceServesANewGuestOnceTheLeaseIsFree() throws {
        let (cluster, namespace) = try Self.formattedNamespace("serve-standby-migrate")
        let source = try Self.serve(cluster, namespace)
        defer { _ = source.stop() }
        #expect(try Self.lease(source).role == "writer", "\(source.log)")
        let destination = try Self.serve(cluster, namespace)
        defer { _ = destination.stop() }

        // The destination waits as a standby, naming who holds the lease.
        let standby = try Self.lease(destination)
        #expect(standby.role == "standby", "\(destination.log)")
        #expect(standby.holder?.hasPrefix("client.") == true, "\(standby)")
        #expect(try Self.show(destination).contains("standby: lease held by client."))
        #expect(try destination.ferry(["exports", "list", "--config", destination.config]).output.contains("listening (standby)"))
        #expect(try destination.scrape().contains("ferry_export_lease_role{tenant=\"acme\",export=\"vm\",role=\"standby\"} 1"))
        #expect(try Self.show(source).contains("writer (holds the namespace's lease)"))

        // A guest writing at the source, then switch-over as QEMU does it.
        let guest = try FUSESession(socketPath: source.socket("acme-vm"))
        let (file, open) = try guest.queue.create(parent: FUSESession.rootNodeID, name: "log", flags: O_WRONLY | O_APPEND, mode: 0o644)
        #expect(try guest.queue.write(nodeID: file.nodeID, fh: open.fh, offset: 0, data: Array("line 1\n".utf8)) == 7)
        try guest.frontend.stopQueues()
        let state = try guest.frontend.saveBackendState()
        #expect(try Self.lease(source).role == "handed-over", "\(source.log)")

        var c = FrontendConfiguration()
        c.incomingState = state
        let moved = try FUSESession(socketPath: destination.socket("acme-vm"), configuration: c, sendInit: false)
        #expect(try moved.queue.write(nodeID: file.nodeID, fh: open.fh, offset: 7, data: Array("line 2\n".utf8)) == 7)
        #expect(try Self.lease(destination).role == "writer", "\(destination.log)")
        #expect(try Self.show(destination).contains("writer (holds the namespace's lease)"))
        #expect(try destination.scrape().contains("ferry_export_lease_role{tenant=\"acme\",export=\"vm\",role=\"writer\"} 1"))
        let handedOver = try Self.lease(source)
        #expect(handedOver.role == "handed-over" && handedOver.holder?.hasPrefix("client.") == true, "\(handedOver)")

        // The source QEMU quits. A new guest on the source's export, still listening, is
        // not the migrated one resumed: it takes no lease from the destination.
        shutdown(guest.frontend.channel.fd, Int32(SHUT_RDWR))
        #expect(FerryWait.until(30) { (try? source.state("acme", "vm")) == "listening" }, "\(source.log)")
        #expect(try Self.lease(source).role == "standby", "\(source.log)")
        let next = try FUSESession(socketPath: source.socket("acme-vm"))
        #expect(Self.mkdirError(next.queue, "refused") == EIO)
        #expect(!source.log.contains("resuming"), "\(source.log)")
        #expect(try Self.lease(destination).role == "writer", "\(destination.log)")

        // Once the destination's daemon stops and frees the lease, that guest's writes
        // make the source's export the writer.
        #expect(destination.stop() == 0, "\(destination.log)")
        // At most one try for the lease a second: a bound, not a measure of speed.
        #expect(FerryWait.until(30) { Self.mkdirError(next.queue, "new") == 0 }, "\(source.log)")
        #expect(try Self.lease(source).role == "writer", "\(source.log)")
        let entry = try next.queue.lookup(parent: FUSESession.rootNodeID, name: "log")
        let reopened = try next.queue.open(nodeID: entry.nodeID, flags: O_RDONLY)
        #expect(try next.queue.read(nodeID: entry.nodeID, fh: reopened.fh, offset: 0, size: 100) == Array("line 1\nline 2\n".utf8))
    }

    @Test(.timeLimit(.minutes(5)))
    func aStandbyRefusesWritesWhileTheLeaseIsHeldAndBecomesTheWriterWhenItFrees() throws {
        let (cluster, namespace) = try Self.formattedNamespace("serve-standby-frees")
        let holder = try Self.serve(cluster, namespace)
        defer { _ = holder.stop() }
        let standby = try Self.serve(cluster, namespace)
        defer { _ = standby.stop() }
        #expect(try Self.lease(standby).role == "standby", "\(standby.log)")
        #expect(try standby.state("acme", "vm") == "listening")

        let guest = try FUSESession(socketPath: standby.socket("acme-vm"))
        #expect(Self.mkdirError(guest.queue, "early") == EIO)
        #expect(try Self.lease(standby).role == "standby")

        #expect(holder.stop() == 0, "\(holder.log)")
        #expect(FerryWait.until(30) { Self.mkdirError(guest.queue, "later") == 0 }, "\(standby.log)")
        #expect(try Self.lease(standby).role == "writer", "\(standby.log)")
        #expect(try Self.show(standby).contains("writer (holds the namespace's lease)"))
    }
}
