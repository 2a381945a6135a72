import CFerry
import FerryCore
import FerryFUSE
import FerryPOSIX
import Foundation
import Logging
import Synchronization
import Testing

/// Lock requests on a session that did not agree FUSE_POSIX_LOCKS / FUSE_FLOCK_LOCKS (the
/// export does not allow them, or the transport cannot defer a reply) get ENOSYS without
/// reaching the driver. A Linux client sends
/// none then; a hostile one that sends SETLKW on a file locked on the host must not hold a
/// queue thread, nor DESTROY and the export's stop behind it.
@Suite(.serialized) struct LockRequestTests {
    typealias Export = CreateExclusiveTests.Export

    /// A write lock on the whole of `path` held by an open file description of the host.
    static func hostLock(_ path: String, holder: Int32? = nil) throws -> Int32 {
        let fd = holder ?? Glibc.open(path, O_RDWR)
        try #require(fd >= 0)
        var fl = flock()
        fl.l_type = Int16(F_WRLCK); fl.l_whence = Int16(SEEK_SET); fl.l_start = 0; fl.l_len = 0
        try #require(fcntl(fd, 37 /* F_OFD_SETLK */, &fl) == 0)
        return fd
    }

    @Test func setlkwOnAFileLockedOnTheHostIsAnsweredAndTheExportStillStops() throws {
        let e = try Export()
        try Data("x".utf8).write(to: URL(fileURLWithPath: e.root + "/locked"))
        let held = try Self.hostLock(e.root + "/locked")
        var heldOpen = true
        defer { if heldOpen { close(held) } }
        let (node, fh) = try e.open("locked")

        // On a thread of its own, as a queue would run it: if it waits for the host's lock,
        // the test lets the lock go below (after a bound, only so that it ends) and the
        // reply's error says what happened, not the time it took.
        let request = Export.lock(.setlkw, node: node, fh: fh)
        let answered = DispatchSemaphore(value: 0)
        let reply = Mutex<Reply?>(nil)
        // nonisolated(unsafe): the transport's scratch buffer is used by one thread at a time;
        // this test sends on it again only after the thread's request was answered.
        nonisolated(unsafe) let transport = e.transport
        let thread = Thread {
            let r = transport.send(request)
            reply.withLock { $0 = r }
            answered.signal()
        }
        thread.start()
        let cameWhileLocked = answered.wait(timeout: .now() + 30) == .success
        if cameWhileLocked {
            // Nothing is in flight: DESTROY and the export's stop return with the host's lock still held.
            #expect(e.transport.send(RequestBuilder().request(.destroy))?.error == 0)
            e.server.shutdown()
        }
        close(held); heldOpen = false
        if !cameWhileLocked { answered.wait() }
        #expect(cameWhileLocked, "SETLKW waited for the host's lock")
        #expect(reply.withLock { $0?.error } == -ENOSYS)
    }

    @Test(arguments: [FUSEOpcode.getlk, .setlk, .setlkw])
    func lockRequestsAreNotImplementedWhenTheSessionDidNotAgreeLocks(opcode: FUSEOpcode) throws {
        let e = try Export()
        try Data("x".utf8).write(to: URL(fileURLWithPath: e.root + "/free"))
        let (node, fh) = try e.open("free")
        #expect(e.transport.send(Export.lock(opcode, node: node, fh: fh))?.error == -ENOSYS)
        #expect(e.transport.send(Export.lock(opcode, node: node, fh: fh, flock: true))?.error == -ENOSYS)
        // Nothing was taken on the host: another description locks the file freely.
        let other = try Self.hostLock(e.root + "/free")
        close(other)
    }
}

/// What the lock tests send on a POSIX export's session.
extension CreateExclusiveTests.Export {
    /// LOOKUP then OPEN O_RDWR: (node id, fh).
    func open(_ name: String) throws -> (UInt64, UInt64) {
        let entry = transport.lookup(name)
        try #require(entry.error == 0)
        var b = RequestBuilder(); b.u32(UInt32(O_RDWR)); b.u32(0)
        let r = transport.send(b.request(.open, nodeID: entry.nodeID))!
        try #require(r.error == 0)
        return (entry.nodeID, r.u64(at: 0))
    }

    static func lock(_ opcode: FUSEOpcode, node: UInt64, fh: UInt64, flock: Bool = false, unique: UInt64 = 7) -> [UInt8] {
        var b = RequestBuilder()
        b.u64(fh); b.u64(0x1234)                                   // fh, owner
        b.u64(0); b.u64(UInt64(Int64.max)); b.u32(UInt32(F_WRLCK)); b.u32(1)   // start, end, type, pid
        b.u32(flock ? FUSERequestFlag.lockFlock : 0); b.u32(0)
        return b.request(opcode, unique: unique, nodeID: node)
    }
}

extension LockRequestTests {
    /// Whether a whole-file write lock through `fd` (an OFD lock) meets a conflict.
    static func hostLockFails(_ fd: Int32) -> Bool {
        var fl = flock()
        fl.l_type = Int16(F_WRLCK); fl.l_whence = Int16(SEEK_SET)
        return fcntl(fd, 37 /* F_OFD_SETLK */, &fl) != 0
    }
}

/// flock(2), which Swift cannot name beside `struct flock`.
func ferryTestFlock(_ fd: Int32, _ operation: Int32) -> Int32 {
    ferry_flock(fd, operation | (operation == LOCK_UN ? 0 : LOCK_NB))
}
