import FerryCore
import FerryFUSE
import FerryPOSIX
import Foundation
import Logging
import Synchronization
import Testing

/// A transport's deferred-reply sink that records what it is sent.
final class RecordingSink: ReplyDeferral, DeferredReply, @unchecked Sendable {
    private let replies = Mutex<[[UInt8]]>([])
    private let arrived = DispatchSemaphore(value: 0)

    func deferReply() -> (any DeferredReply)? { self }
    func send(_ reply: UnsafeRawBufferPointer) {
        replies.withLock { $0.append(Array(reply)) }
        arrived.signal()
    }

    /// The next reply's (unique, error), or nil if none came within `seconds` (a bound only
    /// so that a broken build ends; what arrives decides).
    func next(within seconds: Double = 30) -> (unique: UInt64, error: Int32)? {
        guard arrived.wait(timeout: .now() + seconds) == .success else { return nil }
        let bytes = replies.withLock { $0.removeFirst() }
        return bytes.withUnsafeBytes {
            ($0.loadUnaligned(fromByteOffset: 8, as: UInt64.self), $0.loadUnaligned(fromByteOffset: 4, as: Int32.self))
        }
    }

    var pending: Int { replies.withLock { $0.count } }
}

/// Whether a thread of this process is named `name` (/proc/self/task/*/comm).
func threadNamed(_ name: String) -> Bool {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
    return tasks.contains { task in
        (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) == name
    }
}

/// The waiter logic on its own: attempts are closures, answers go to a recording sink.
@Suite(.serialized) struct LockWaitsTests {
    /// An attempt that meets a conflict `conflicts` times, then is granted.
    static func grantedAfter(_ conflicts: Int) -> () -> Errno? {
        let left = Mutex(conflicts)
        return { left.withLock { n in n -= 1; return n >= 0 ? Errno.again : nil } }
    }
    static func held() -> Errno? { Errno.again }

    @Test func aWaiterIsRetriedOnTheLockWaitThreadUntilGranted() {
        let waits = LockWaits(limit: 4)
        let sink = RecordingSink()
        #expect(waits.add(unique: 7, fh: 1, sink: sink, attempt: Self.grantedAfter(3)))
        let answer = sink.next()
        #expect(answer?.unique == 7 && answer?.error == 0)
        #expect(threadNamed("ferry-lockwait"))
        #expect(waits.count == 0 && waits.grantedCount == 1)
    }

    @Test func anErrorOtherThanAConflictIsTheAnswer() {
        let waits = LockWaits()
        let sink = RecordingSink()
        #expect(waits.add(unique: 8, fh: 1, sink: sink, attempt: { Errno(ENOLCK) }))
        #expect(sink.next()?.error == -ENOLCK)
    }

    @Test func interruptAnswersEINTREvenWhenItCameFirst() {
        let waits = LockWaits()
        let sink = RecordingSink()
        #expect(waits.add(unique: 9, fh: 1, sink: sink, attempt: Self.held))
        waits.interrupt(9)
        let answer = sink.next()
        #expect(answer?.unique == 9 && answer?.error == -EINTR)
        // INTERRUPT overtook its request (another queue): the request is answered on arrival.
        waits.interrupt(10)
        #expect(waits.add(unique: 10, fh: 1, sink: sink, attempt: Self.held))
        #expect(sink.next()?.error == -EINTR)
        #expect(waits.count == 0)
    }

    @Test func flushOfAnOpenFileEndsOnlyItsWaiters() {
        let waits = LockWaits()
        let sink = RecordingSink()
        #expect(waits.add(unique: 1, fh: 100, sink: sink, attempt: Self.held))
        #expect(waits.add(unique: 2, fh: 200, sink: sink, attempt: Self.held))
        waits.cancel(fh: 100)
        let answer = sink.next()
        #expect(answer?.unique == 1 && answer?.error == -EINTR)
        #expect(waits.count == 1)
        waits.cancelAll()
        let last = sink.next()
        #expect(last?.unique == 2 && last?.error == -ENOLCK)
    }

    @Test func aFlushDuringAnAttemptWaitsForItSoAGrantIsNeverAnsweredEINTR() {
        let waits = LockWaits()
        let sink = RecordingSink()
        let started = DispatchSemaphore(value: 0), proceed = DispatchSemaphore(value: 0)
        // The backend's attempt takes its time (a remote round trip) and then grants.
        #expect(waits.add(unique: 5, fh: 9, sink: sink, attempt: { started.signal(); proceed.wait(); return nil }))
        started.wait()
        let cancelled = DispatchSemaphore(value: 0)
        Thread { waits.cancel(fh: 9); cancelled.signal() }.start()
        // The cancel waits for the attempt under way (bounded, only so a broken build ends).
        #expect(cancelled.wait(timeout: .now() + 0.2) == .timedOut)
        proceed.signal()
        #expect(cancelled.wait(timeout: .now() + 30) == .success)
        let answer = sink.next()
        #expect(answer?.unique == 5 && answer?.error == 0)
        #expect(sink.pending == 0 && waits.count == 0)
    }

    @Test func waitersBeyondTheLimitAreRefusedAndStopAnswersEveryWaiter() {
        let waits = LockWaits(limit: 2)
        let sink = RecordingSink()
        #expect(waits.add(unique: 1, fh: 1, sink: sink, attempt: Self.held))
        #expect(waits.add(unique: 2, fh: 1, sink: sink, attempt: Self.held))
        #expect(!waits.add(unique: 3, fh: 1, sink: sink, attempt: Self.held))
        waits.stop()
        #expect(sink.next()?.error == -ENOLCK && sink.next()?.error == -ENOLCK)
        #expect(!waits.add(unique: 4, fh: 1, sink: sink, attempt: Self.held))
    }
}

/// SETLKW through the server core on a POSIX export: a conflict is deferred to the
/// lock-wait thread, never waited for on the request's thread.
@Suite(.serialized) struct DeferredLockTests {
    typealias Export = CreateExclusiveTests.Export

    static var lockingPolicy: ExportPolicy {
        var p = ExportPolicy()
        p.posixLocks = true; p.flockLocks = true
        return p
    }

    /// INIT's agreed flags.
    static func agreedFlags(_ e: Export) throws -> UInt32 {
        let reply = try #require(e.transport.send(RequestBuilder.initRequest()))
        try #require(reply.error == 0)
        return reply.u32(at: 12)
    }

    @Test func locksAreAgreedOnlyWithAPolicyThatAllowsThemAndATransportThatDefers() throws {
        let posix = UInt32(truncatingIfNeeded: FUSEInitFlags.posixLocks.rawValue)
        let flock = UInt32(truncatingIfNeeded: FUSEInitFlags.flockLocks.rawValue)
        let both = try Self.agreedFlags(try Export(policy: Self.lockingPolicy, deferral: RecordingSink(), initialize: false))
        #expect(both & posix != 0 && both & flock != 0)
        let noDeferral = try Self.agreedFlags(try Export(policy: Self.lockingPolicy, initialize: false))
        #expect(noDeferral & (posix | flock) == 0)
        let notAllowed = try Self.agreedFlags(try Export(deferral: RecordingSink(), initialize: false))
        #expect(notAllowed & (posix | flock) == 0)
    }

    @Test(arguments: [false, true])
    func aWaitingLockOnAHostLockedFileIsDeferredAndGrantedWhenTheHostUnlocks(flock: Bool) throws {
        let sink = RecordingSink()
        let e = try Export(policy: Self.lockingPolicy, deferral: sink)
        try Data("x".utf8).write(to: URL(fileURLWithPath: e.root + "/f"))
        let held = Glibc.open(e.root + "/f", O_RDWR)
        try #require(held >= 0)
        var heldOpen = true
        defer { if heldOpen { close(held) } }
        if flock {
            try #require(ferryTestFlock(held, LOCK_EX) == 0)
        } else {
            _ = try LockRequestTests.hostLock(e.root + "/f", holder: held)
        }
        let (node, fh) = try e.open("f")
        // SETLK answers the conflict; SETLKW is deferred (no reply on this thread).
        #expect(e.transport.send(Export.lock(.setlk, node: node, fh: fh, flock: flock))?.error == -EAGAIN)
        let request = Export.lock(.setlkw, node: node, fh: fh, flock: flock, unique: 77)
        #expect(e.transport.send(request) == nil)
        #expect(e.server.lockWaits.count == 1)
        #expect(sink.pending == 0)
        close(held); heldOpen = false
        let answer = sink.next()
        #expect(answer?.unique == 77 && answer?.error == 0)
        // Granted for real: the host now sees the file locked.
        let probe = Glibc.open(e.root + "/f", O_RDWR)
        defer { close(probe) }
        #expect(flock ? ferryTestFlock(probe, LOCK_EX | LOCK_NB) != 0 : LockRequestTests.hostLockFails(probe))
    }

    @Test func destroyAnswersAWaiterENOLCKAndFlushEINTR() throws {
        let sink = RecordingSink()
        let e = try Export(policy: Self.lockingPolicy, deferral: sink)
        try Data("x".utf8).write(to: URL(fileURLWithPath: e.root + "/f"))
        let held = try LockRequestTests.hostLock(e.root + "/f")
        defer { close(held) }
        let (node, fh) = try e.open("f")
        #expect(e.transport.send(Export.lock(.setlkw, node: node, fh: fh, unique: 50)) == nil)
        var b = RequestBuilder(); b.u64(fh); b.u32(0); b.u32(0); b.u64(0x1234)
        #expect(e.transport.send(b.request(.flush, nodeID: node))?.error == 0)
        let flushed = sink.next()
        #expect(flushed?.unique == 50 && flushed?.error == -EINTR)

        #expect(e.transport.send(Export.lock(.setlkw, node: node, fh: fh, unique: 51)) == nil)
        #expect(e.transport.send(RequestBuilder().request(.destroy))?.error == 0)
        let destroyed = sink.next()
        #expect(destroyed?.unique == 51 && destroyed?.error == -ENOLCK)
        #expect(e.server.lockWaits.count == 0)
    }
}
