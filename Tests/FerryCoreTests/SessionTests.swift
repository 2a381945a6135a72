import FerryCore
import FerryFUSE
import Foundation
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A FUSE session runs from INIT to DESTROY (the guest unmounted) or to a lost
/// connection; the guest may mount the same tag again in the same boot.
@Suite struct SessionTests {
    func destroy(_ t: TestTransport) -> Reply? { t.send(RequestBuilder().request(.destroy, unique: 99)) }

    @Test func destroyEndsTheSessionSoTheNextInitIsAccepted() throws {
        let server = try makeServer()
        let t = TestTransport(server)
        let id = t.mkdir("a").nodeID
        var o = RequestBuilder(); o.u32(UInt32(O_RDONLY)); o.u32(0)
        #expect(t.send(o.request(.opendir, nodeID: id))?.error == 0)

        let reply = try #require(destroy(t))
        #expect(reply.error == 0 && reply.unique == 99)
        #expect(server.nodeCount == 1 && server.openHandleCount == 0)
        #expect(t.getattr(1).error == -EIO)     // the session is over until the next INIT

        let again = try #require(t.send(RequestBuilder.initRequest()))
        #expect(again.error == 0, "the second INIT was refused")
        #expect(t.getattr(1).error == 0)
        #expect(t.getattr(id).error == -EBADF)  // the old session's node ids mean nothing now
        #expect(t.lookup("a").error == 0)
    }

    @Test func sessionsCanFollowEachOtherManyTimes() throws {
        let server = try makeServer()
        let t = TestTransport(server)
        for round in 0..<5 {
            #expect(t.mkdir("d\(round)").error == 0)
            #expect(t.lookup("d\(round)").error == 0)
            #expect(destroy(t)?.error == 0)
            #expect(server.nodeCount == 1)
            #expect(t.send(RequestBuilder.initRequest())?.error == 0, "INIT \(round + 2) refused")
        }
        #expect(server.nodeCount == 1)
    }

    @Test func aForgetAfterDestroyGetsNoReply() throws {
        let server = try makeServer()
        let t = TestTransport(server)
        let id = t.mkdir("a").nodeID
        #expect(destroy(t)?.error == 0)
        t.forget(id, 1)     // TestTransport fails the test if FORGET is answered
    }

    /// A request that passed the session check on another queue while the guest sent
    /// DESTROY finishes before the nodes are dropped: what it adds does not leak into
    /// the next session.
    @Test(.timeLimit(.minutes(10)))
    func destroyWaitsForARequestStillRunningOnAnotherQueue() throws {
        let driver = MemoryDriver()
        let server = try makeServer(driver)
        let main = TestTransport(server)
        #expect(main.mkdir("slow").error == 0)
        let inDriver = Flag(), release = Flag()
        driver.beforeLookup = { name in
            guard name == "slow" else { return }
            inDriver.set()
            while !release.isSet { usleep(1000) }
        }
        let lookupDone = Flag(), destroyDone = Flag()
        let lookupReply = Mutex<Reply?>(nil)
        let queue2 = Thread {
            let t = TestTransport(server, initialize: false)
            let r = t.lookup("slow")
            lookupReply.withLock { $0 = r }
            lookupDone.set()
        }
        queue2.start()
        while !inDriver.isSet { usleep(1000) }

        let queue1 = Thread {
            let t = TestTransport(server, initialize: false)
            _ = t.send(RequestBuilder().request(.destroy, unique: 99))
            destroyDone.set()
        }
        queue1.start()
        // Wait until DESTROY has ended the session (new requests get EIO), or has returned.
        let probe = TestTransport(server, initialize: false)
        while !destroyDone.isSet && probe.getattr(1).error != -EIO { usleep(1000) }
        #expect(!destroyDone.isSet, "DESTROY returned while a LOOKUP was still running")

        release.set()
        while !(lookupDone.isSet && destroyDone.isSet) { usleep(1000) }
        #expect(lookupReply.withLock { $0 }?.error == 0)
        // The LOOKUP's node was dropped with the session, not carried into the next one.
        #expect(server.nodeCount == 1)
        #expect(main.send(RequestBuilder.initRequest())?.error == 0)
        #expect(server.nodeCount == 1)
    }

    /// Two DESTROYs at once (a hostile guest, two queues) both return.
    @Test(.timeLimit(.minutes(10)))
    func twoDestroysOnTwoQueuesBothReturn() throws {
        let server = try makeServer()
        let main = TestTransport(server)
        #expect(main.mkdir("a").error == 0)
        let done = Counter()
        let threads = (0..<2).map { _ in
            Thread {
                let t = TestTransport(server, initialize: false)
                for _ in 0..<200 {
                    _ = t.send(RequestBuilder.initRequest())
                    _ = t.send(RequestBuilder().request(.destroy))
                }
                done.add()
            }
        }
        threads.forEach { $0.start() }
        while done.value < 2 { usleep(1000) }
        #expect(main.send(RequestBuilder.initRequest()) != nil)
    }
}

/// A one-way flag shared between test threads.
final class Flag: Sendable {
    private let raised = Atomic<Bool>(false)
    func set() { raised.store(true, ordering: .sequentiallyConsistent) }
    var isSet: Bool { raised.load(ordering: .sequentiallyConsistent) }
}

final class Counter: Sendable {
    private let count = Atomic<Int>(0)
    func add() { count.add(1, ordering: .sequentiallyConsistent) }
    var value: Int { count.load(ordering: .sequentiallyConsistent) }
}
