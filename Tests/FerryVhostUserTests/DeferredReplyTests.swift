import CFerry
import FerryCore
@testable import FerryVhostUser
import FerryVirtio
import Foundation
import Synchronization
import Testing

/// A handler that defers every SETLKW (the server core does so for a waiting lock) and
/// answers everything else at once with a bare header.
final class DeferringHandler: FUSERequestHandler, @unchecked Sendable {
    let sinks = Mutex<[any DeferredReply]>([])

    func handle(request: UnsafeRawBufferPointer, reply: inout ReplyArea) -> ReplyDisposition {
        let opcode = request.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
        let unique = request.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        if opcode == 33, let sink = reply.deferral?.deferReply() {
            sinks.withLock { $0.append(sink) }
            return .deferred
        }
        return .inline(length: Self.header(unique, into: reply.scratch))
    }
    func handle(request: UnsafeRawBufferPointer, payload: IOVectors, reply: inout ReplyArea) -> ReplyDisposition {
        handle(request: request, reply: &reply)
    }
    func connectionLost() {}

    static func header(_ unique: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        buffer.storeBytes(of: UInt32(16), toByteOffset: 0, as: UInt32.self)
        buffer.storeBytes(of: Int32(0), toByteOffset: 4, as: Int32.self)
        buffer.storeBytes(of: unique, toByteOffset: 8, as: UInt64.self)
        return 16
    }

    /// Sends the reply to the `index`th deferred request.
    func answer(_ index: Int, unique: UInt64) {
        let sink = sinks.withLock { $0[index] }
        withUnsafeTemporaryAllocation(byteCount: 16, alignment: 8) { b in
            _ = Self.header(unique, into: b)
            sink.send(UnsafeRawBufferPointer(b))
        }
    }
}

/// Deferred replies on a virtqueue: the chain stays out of the used ring until its reply
/// comes (later chains complete meanwhile), and a reply for a ring that was stopped since
/// is dropped.
@Suite struct DeferredReplyTests {
    let handler = DeferringHandler()
    let t: DeviceTests

    init() throws { t = try DeviceTests(threadPoolSize: 0, serving: handler) }

    /// A request with `opcode` at descriptors (2*slot, 2*slot+1); returns the reply buffer's address.
    @discardableResult
    func post(_ opcode: UInt32, unique: UInt64, slot: Int) -> UInt64 {
        let a = t.g.buffer(fuseRequest(opcode: opcode, unique: unique)), out = t.g.buffer(count: 64)
        t.g.setDescriptor(2 * slot, address: a, length: 40, flags: SplitVirtqueue.Descriptor.next, next: UInt16(2 * slot + 1))
        t.g.setDescriptor(2 * slot + 1, address: out, length: 64, flags: SplitVirtqueue.Descriptor.write)
        t.g.makeAvailable(UInt16(2 * slot))
        return out
    }

    func usedBecomes(_ n: UInt16) -> Bool {
        for _ in 0..<1000 {
            if t.g.usedIndex == n { return true }
            usleep(2000)
        }
        return false
    }

    @Test func aDeferredChainIsUsedOnlyWhenItsReplyComes() {
        t.start(eventIndex: false)
        let waiting = post(33, unique: 1, slot: 0)
        post(3, unique: 2, slot: 1)
        #expect(t.kickAndWait(forUsed: 1))
        #expect(t.g.usedElement(0).id == 2)          // the later GETATTR, not the waiting lock
        #expect(handler.sinks.withLock { $0.count } == 1)
        usleep(20_000)
        #expect(t.g.usedIndex == 1)
        handler.answer(0, unique: 1)
        #expect(usedBecomes(2))
        #expect(t.g.usedElement(1).id == 0 && t.g.usedElement(1).length == 16)
        let reply = t.g.bytes(at: waiting, count: 16)
        #expect(reply.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self) } == 1)
    }

    @Test func stoppingTheRingAnswersADeferredChainENOLCKAndDropsItsLateReply() {
        t.start(eventIndex: false)
        let waiting = post(33, unique: 1, slot: 0)
        #expect(t.kickAndWait(forUsed: 0))
        #expect(eventuallyDeferred())
        // GET_VRING_BASE (a migration, a stopped VM): the chain is used now, with ENOLCK.
        #expect(t.send(.getVringBase, t.state(1, 0)) == .payload(VhostUserFSDevice.bytes(VringState(index: 1, num: 1))))
        #expect(t.g.usedIndex == 1 && t.g.usedElement(0).id == 0 && t.g.usedElement(0).length == 16)
        let reply = t.g.bytes(at: waiting, count: 16)
        #expect(reply.withUnsafeBytes { ($0.loadUnaligned(fromByteOffset: 4, as: Int32.self), $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) } == (-ENOLCK, 1))
        // The ring starts again; the late reply for the old run goes nowhere.
        #expect(t.send(.setVringBase, t.state(1, 1)) == .none(succeeded: true))
        #expect(t.send(.setVringKick, t.u64(1), fds: [dup(t.kick)]) == .none(succeeded: true))
        handler.answer(0, unique: 1)
        post(3, unique: 2, slot: 1)
        #expect(t.kickAndWait(forUsed: 2))
        usleep(20_000)
        #expect(t.g.usedIndex == 2 && t.g.usedElement(1).id == 2)
    }

    @Test func aNewKickFdKeepsADeferredChainWaiting() {
        t.start(eventIndex: false)
        post(33, unique: 1, slot: 0)
        #expect(t.kickAndWait(forUsed: 0))
        #expect(eventuallyDeferred())
        // SET_VRING_KICK restarts the worker on the same ring: the wait goes on.
        #expect(t.send(.setVringKick, t.u64(1), fds: [dup(t.kick)]) == .none(succeeded: true))
        usleep(20_000)
        #expect(t.g.usedIndex == 0)
        handler.answer(0, unique: 1)
        #expect(usedBecomes(1))
        #expect(t.g.usedElement(0).id == 0 && t.g.usedElement(0).length == 16)
    }

    func eventuallyDeferred() -> Bool {
        for _ in 0..<1000 {
            if handler.sinks.withLock({ $0.count }) == 1 { return true }
            usleep(2000)
        }
        return false
    }
}
