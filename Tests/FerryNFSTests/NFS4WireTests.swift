#if canImport(Glibc)
import Glibc
#endif
import CNFS
import FerryCore
@testable import FerryNFS
import Testing

/// Ferry's own NFSv4 wire: COMPOUNDs encoded to the byte, replies decoded with every length
/// checked, and an RPC transport that a hostile server cannot make allocate or crash.
@Suite struct NFS4WireTests {
    static func words(_ bytes: [UInt8]) -> [UInt32] {
        stride(from: 0, to: bytes.count, by: 4).map { i in bytes[i..<i + 4].reduce(0) { $0 << 8 | UInt32($1) } }
    }

    @Test func aSequencedCompoundEncodesAsRFC8881Says() {
        var request = NFS4Request(XDRWriter(), minor: 1)
        request.sequence(session: Array(1...16), sequenceID: 7, slot: 2, highestSlot: 3)
        request.putfh(FileHandle(bytes: [1, 2, 3, 4, 5]))
        request.getattr(NFS4Attribute.bitmap([NFS4Attribute.type, NFS4Attribute.size, NFS4Attribute.fileID, NFS4Attribute.mode]))
        let bytes = request.finish().bytes
        let session: [UInt32] = [0x0102_0304, 0x0506_0708, 0x090a_0b0c, 0x0d0e_0f10]
        #expect(Self.words(bytes) == [0, 1, 3,                       // tag "", minor 1, 3 operations
                                      53] + session + [7, 2, 3, 0,    // SEQUENCE: session, sequence id, slot, highest, no cache
                                      22, 5, 0x0102_0304, 0x0500_0000, // PUTFH: 5 bytes, padded
                                      9, 2, 0x0010_0012, 0x0000_0002]) // GETATTR: bits 1, 4, 20 and 33
    }

    @Test func aWriteCarriesItsDataOnceAndPadded() {
        var request = NFS4Request(XDRWriter(), minor: 0)
        [UInt8]([9, 8, 7]).withUnsafeBytes { request.write(offset: 1 << 32, stable: 0, data: $0) }
        // Anonymous stateid (4 words), offset 2^32, UNSTABLE, 3 bytes and one of padding.
        #expect(Self.words(request.finish().bytes) == [0, 0, 1, 38, 0, 0, 0, 0, 1, 0, 0, 3, 0x0908_0700])
    }

    /// A reply built word by word: status, empty tag, operation count, then `results`.
    static func reply(status: UInt32 = 0, _ results: [[UInt32]], bytes extra: [UInt8] = []) -> [UInt8] {
        var w = XDRWriter()
        w.u32(status); w.u32(0); w.u32(UInt32(results.count))
        for r in results { for v in r { w.u32(v) } }
        return w.bytes + extra
    }

    static func decode<T>(_ bytes: [UInt8], _ body: (inout NFS4Reply) throws(NFS4Error) -> T) -> Result<T, NFS4Error> {
        bytes.withUnsafeBytes { raw in
            do throws(NFS4Error) {
                var reply = try NFS4Reply(XDRReader(raw))
                return .success(try body(&reply))
            } catch { return .failure(error) }
        }
    }

    @Test func aFileHandleLongerThanNFSv4AllowsIsGarbage() {
        let bytes = Self.reply([[22, 0], [10, 0, 200]] , bytes: [UInt8](repeating: 1, count: 200))
        let result = Self.decode(bytes) { r throws(NFS4Error) in try r.putfh(); return try r.getfh() }
        #expect(result.failure == .garbage)
    }

    @Test func aLengthPastTheEndOfTheReplyIsGarbageNotACrash() {
        // READ: eof false, then 1 MiB of data claimed in a reply of a few bytes.
        let result = Self.decode(Self.reply([[22, 0], [25, 0, 0, 1 << 20, 0xdead_beef]])) { r throws(NFS4Error) in
            try r.putfh(); return try r.read().data.count
        }
        #expect(result.failure == .garbage)
    }

    @Test func aReplyCutShortInAReaddirIsGarbage() {
        // One entry, then the list stops where the next "value follows" should be.
        let result = Self.decode(Self.reply([[22, 0], [26, 0, 0, 0, 1, 0, 3, 1, 0x6100_0000, 0, 0]])) { r throws(NFS4Error) in
            try r.putfh(); return try r.readdir { _ in }.eof
        }
        #expect(result.failure == .garbage)
    }

    @Test func anOperationOtherThanTheOneSentIsGarbage() {
        let result = Self.decode(Self.reply([[24, 0]])) { r throws(NFS4Error) in try r.putfh() }
        #expect(result.failure == .garbage)
    }

    @Test func aFailedOperationIsItsStatus() {
        let result = Self.decode(Self.reply(status: 2, [[22, 0], [15, 2]])) { r throws(NFS4Error) in try r.putfh(); try r.lookup() }
        #expect(result.failure == .status(2))
        // The server stopped at the first failure: later operations were never answered.
        let stopped = Self.decode(Self.reply(status: 10008, [[22, 10008]])) { r throws(NFS4Error) in try r.putfh(); try r.lookup() }
        #expect(stopped.failure == .status(10008))
    }

    @Test func aLockEncodesItsOwnerOrItsLockStateAsRFC8881Says() {
        var request = NFS4Request(XDRWriter(), minor: 1)
        let open = NFS4StateID(seqid: 0, other: Array(1...12))
        request.lock(type: 2, offset: 10, length: UInt64.max, locker: .new(open: open, clientID: 0x1_0000_0002, owner: Array("ab".utf8)))
        request.lock(type: 1, offset: 0, length: 5, locker: .existing(NFS4StateID(seqid: 3, other: Array(1...12))))
        request.locku(type: 2, NFS4StateID(seqid: 0, other: Array(1...12)), offset: 0, length: UInt64.max)
        let other: [UInt32] = [0x0102_0304, 0x0506_0708, 0x090a_0b0c]
        #expect(Self.words(request.finish().bytes) == [0, 1, 3,
            // LOCK WRITE_LT, no reclaim, offset 10, to end of file; new owner: open seqid,
            // open stateid, lock seqid, client id, owner "ab"
            12, 2, 0, 0, 10, 0xFFFF_FFFF, 0xFFFF_FFFF, 1, 0, 0] + other + [0, 1, 2, 2, 0x6162_0000,
            // LOCK READ_LT, offset 0, length 5; existing: lock stateid, lock seqid
            12, 1, 0, 0, 0, 0, 5, 0, 3] + other + [0,
            // LOCKU WRITE_LT, seqid, stateid, offset, length
            14, 2, 0, 0] + other + [0, 0, 0xFFFF_FFFF, 0xFFFF_FFFF])
    }

    /// v4.0: the seqids of the open and lock owners are sent, stateids with their own seqid,
    /// the open by name (no CLAIM_FH), and RELEASE_LOCKOWNER (RFC 7530 §16.16, §16.10, §16.12, §16.37).
    @Test func v40LockOperationsCarryTheirSeqidsAsRFC7530Says() {
        var request = NFS4Request(XDRWriter(), minor: 0)
        let other: [UInt32] = [0x0102_0304, 0x0506_0708, 0x090a_0b0c]
        [UInt8]("f.txt".utf8).withUnsafeBytes { request.openByName($0, access: 3, clientID: 0x1_0000_0002, owner: Array("ab".utf8), seqid: 4) }
        request.lock(type: 2, offset: 10, length: UInt64.max,
                     locker: .new(open: NFS4StateID(seqid: 2, other: Array(1...12)), openSeqid: 5, clientID: 0x1_0000_0002,
                                  owner: Array("xyz".utf8), lockSeqid: 0))
        request.lock(type: 1, offset: 0, length: 5, locker: .existing(NFS4StateID(seqid: 3, other: Array(1...12)), lockSeqid: 9))
        request.locku(type: 2, NFS4StateID(seqid: 4, other: Array(1...12)), seqid: 10, offset: 0, length: UInt64.max)
        request.releaseLockOwner(clientID: 0x1_0000_0002, owner: Array("xyz".utf8))
        #expect(Self.words(request.finish().bytes) == [0, 0, 5,
            // OPEN: seqid 4, share BOTH, deny NONE, owner (client id, "ab"), NOCREATE, CLAIM_NULL "f.txt"
            18, 4, 3, 0, 1, 2, 2, 0x6162_0000, 0, 0, 5, 0x662e_7478, 0x7400_0000,
            // LOCK WRITE_LT, new owner: open seqid 5, open stateid (seqid 2), lock seqid 0, owner
            12, 2, 0, 0, 10, 0xFFFF_FFFF, 0xFFFF_FFFF, 1, 5, 2] + other + [0, 1, 2, 3, 0x7879_7a00,
            // LOCK READ_LT, existing: lock stateid (seqid 3), lock seqid 9
            12, 1, 0, 0, 0, 0, 5, 0, 3] + other + [9,
            // LOCKU WRITE_LT, seqid 10, stateid (seqid 4), whole file
            14, 2, 10, 4] + other + [0, 0, 0xFFFF_FFFF, 0xFFFF_FFFF,
            // RELEASE_LOCKOWNER: client id, owner
            39, 1, 2, 3, 0x7879_7a00])
    }

    @Test func v40LockOwnerNamesAreOnePerFileAndStillNameTheProcess() {
        let owner = NFS4FileLocks.Owner(id: 0x2a, flock: false)
        let file = NFS4FileLocks(serial: 0x1f)
        #expect(NFS4FileLocks.name(of: owner) == Array("ferry-lock-p2a".utf8))
        #expect(NFS4FileLocks.name(of: owner, file: file) == Array("ferry-lock-p2a-1f".utf8))
        #expect(NFS4FileLocks.posixOwner(named: NFS4FileLocks.name(of: owner, file: file)) == 0x2a)
        #expect(NFS4FileLocks.posixOwner(named: NFS4FileLocks.name(of: owner)) == 0x2a)
        #expect(NFS4FileLocks.posixOwner(named: NFS4FileLocks.name(of: .init(id: 0x2a, flock: true), file: file)) == nil)
        // Seqids move on after every reply but those RFC 7530 §9.1.7 names.
        #expect(NFS4FileLocks.advancesSeqid(0) && NFS4FileLocks.advancesSeqid(10010) && NFS4FileLocks.advancesSeqid(10013))
        #expect(!NFS4FileLocks.advancesSeqid(10026) && !NFS4FileLocks.advancesSeqid(10023) && !NFS4FileLocks.advancesSeqid(10022))
    }

    @Test func aDeniedLockOrLocktCarriesTheLockInTheWay() {
        // LOCK4denied: offset 100, length 100, WRITE_LT, owner (client id, "x").
        let denied: [UInt32] = [0, 100, 0, 100, 2, 0, 7, 1, 0x7800_0000]
        let lock = Self.decode(Self.reply(status: 10010, [[22, 0], [12, 10010] + denied])) { r throws(NFS4Error) in
            try r.putfh(); return try r.lock()
        }
        let inTheWay = NFS4LockDenied(offset: 100, length: 100, type: 2, clientID: 7, owner: Array("x".utf8))
        #expect(lock.success == .failure(inTheWay))
        let test = Self.decode(Self.reply(status: 10010, [[22, 0], [13, 10010] + denied])) { r throws(NFS4Error) in
            try r.putfh(); return try r.lockt()
        }
        #expect(test.success == .some(inTheWay))
        // A denial whose owner runs past the end of the reply is garbage, not a read past it.
        let cut = Self.decode(Self.reply(status: 10010, [[22, 0], [13, 10010, 0, 100, 0, 100, 2, 0, 7, 1000]])) { r throws(NFS4Error) in
            try r.putfh(); return try r.lockt()
        }
        #expect(cut.failure == .garbage)
        let free = Self.decode(Self.reply([[22, 0], [13, 0]])) { r throws(NFS4Error) in try r.putfh(); return try r.lockt() }
        #expect(free.success == .some(nil))
    }

    @Test func anUnknownDelegationTypeInOpenIsGarbage() {
        let stateid: [UInt32] = [1, 2, 3, 4], cinfo: [UInt32] = [1, 0, 1, 0, 2]
        let result = Self.decode(Self.reply([[18, 0] + stateid + cinfo + [0, 0, 9]])) { r throws(NFS4Error) in _ = try r.open() }
        #expect(result.failure == .garbage)
    }

    @Test func attributesFerryDidNotAskForMakeTheWholeSetUndecodable() {
        var w = XDRWriter()
        w.u32(2)
        #expect(w.bytes.withUnsafeBytes { Decoded4(words: [1 << NFS4Attribute.type], encoded: $0)?.type } == 2)
        #expect(w.bytes.withUnsafeBytes { Decoded4(words: [1 << 12], encoded: $0) } == nil)    // acl
        #expect(w.bytes.withUnsafeBytes { Decoded4(words: [1 << NFS4Attribute.size], encoded: $0) } == nil)   // cut short
    }

    @Test func theServerStatusesMapToTheErrnosALocalFileSystemGives() {
        #expect(Errno(nfs4: NFS4Status.notsupp) == .notSupported)
        #expect(Errno(nfs4: NFS4Status.noXattr) == .noData)
        #expect(Errno(nfs4: 2) == .noEntry)
        #expect(NFS4Status.losesSession(NFS4Status.badSession) && NFS4Status.losesSession(NFS4Status.staleClientID))
        #expect(NFS4Status.asksToWait(NFS4Status.grace) && !NFS4Status.losesSession(NFS4Status.grace))
    }

    // MARK: - The RPC transport against a hostile server (the other end of a socketpair)

    final class Server {
        let transport: RPCSocket
        let peer: Int32
        init(replyLimit: Int = 4096) {
            var fds: [Int32] = [0, 0]
            precondition(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &fds) == 0)
            transport = RPCSocket(fd: fds[0], replyLimit: replyLimit)
            peer = fds[1]
        }
        deinit { close(peer) }

        /// Queues a call and returns its xid and the call.
        func call(_ replied: @escaping (inout XDRReader) -> Bool = { _ in true }) -> (UInt32, PendingCall) {
            transport.setCredentials(Credentials(uid: 1000, gid: 100, pid: 1))
            let call = PendingCall(onReply: replied, onCancel: nil)
            var (xid, w) = transport.beginCall(version: 4, procedure: 1)
            var request = NFS4Request(taking: &w, minor: 0)
            request.finish(into: &w)
            transport.queue(&w, xid: xid, call)
            try? transport.writeOut()
            return (xid, call)
        }

        /// Sends raw bytes as the server, then lets the transport read them.
        func send(_ bytes: [UInt8]) throws(ConnectionFailure) {
            write(bytes)
            try transport.service(Int16(POLLIN))
        }

        func write(_ bytes: [UInt8]) {
            _ = bytes.withUnsafeBytes { Glibc.send(peer, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
        }

        func sent() -> [UInt8] {
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = buffer.withUnsafeMutableBytes { recv(peer, $0.baseAddress!, $0.count, 0) }
            return Array(buffer.prefix(max(0, n)))
        }
    }

    static func record(_ words: [UInt32], last: Bool = true) -> [UInt8] {
        var w = XDRWriter()
        w.u32(UInt32(words.count * 4) | (last ? 0x8000_0000 : 0))
        for v in words { w.u32(v) }
        return w.bytes
    }

    @Test func aCallCarriesAUTHSYSWithTheCallersGroups() {
        let server = Server()
        let groups: [UInt32] = [4, 5]
        groups.withUnsafeBufferPointer { server.transport.setCredentials(Credentials(uid: 1000, gid: 100, pid: 1, groups: $0)) }
        var (xid, w) = server.transport.beginCall(version: 4, procedure: 1)
        server.transport.queue(&w, xid: xid, PendingCall(onReply: { _ in true }, onCancel: nil))
        try? server.transport.writeOut()
        let words = Self.words(server.sent())
        #expect(words == [0x8000_0000 | 76, xid, 0, 2, 100003, 4, 1,
                          1, 36, 0, 5, 0x6665_7272, 0x7900_0000, 1000, 100, 2, 4, 5,   // AUTH_SYS: stamp, "ferry", uid, gid, groups
                          0, 0])
    }

    @Test func anAcceptedReplyReachesItsCallByXid() throws {
        let server = Server()
        var seen: UInt32 = 0
        let (_, first) = server.call { r in seen = r.u32() ?? 0; return true }
        let (xid2, second) = server.call()
        // The second call's reply first: matched by xid, the first stays waiting.
        try server.send(Self.record([xid2, 1, 0, 0, 0, 0, 0, 0, 0]))
        #expect(second.finished && !first.finished)
        _ = server.sent()
        try server.send(Self.record([xid2 - 1, 1, 0, 0, 0, 0, 77]))
        #expect(first.finished && seen == 77)
    }

    @Test func aRecordLongerThanTheLimitBreaksTheConnectionBeforeAnythingIsRead() {
        let server = Server(replyLimit: 4096)
        let (_, call) = server.call()
        var mark = XDRWriter()
        mark.u32(0x8000_0000 | 0x7fff_ffff)   // 2 GiB announced
        #expect(throws: ConnectionFailure.self) { try server.send(mark.bytes) }
        #expect(!call.finished)
    }

    @Test func fragmentsAddingUpPastTheLimitBreakTheConnection() {
        let server = Server(replyLimit: 64)
        let (xid, _) = server.call()
        #expect(throws: ConnectionFailure.self) {
            try server.send(Self.record([xid] + [UInt32](repeating: 0, count: 10), last: false) + Self.record([UInt32](repeating: 0, count: 10)))
        }
    }

    @Test func aTruncatedRecordThenCloseIsABrokenConnection() {
        let server = Server()
        let (xid, call) = server.call()
        var partial = Self.record([xid, 1, 0, 0, 0, 0])
        partial.removeLast(6)
        server.write(partial)
        shutdown(server.peer, Int32(SHUT_WR))
        #expect(throws: ConnectionFailure.self) { try server.transport.service(Int16(POLLIN)) }
        #expect(!call.finished)
        server.transport.cancelAll()
        #expect(call.finished && call.status == RPC_STATUS_CANCEL)
    }

    @Test func aDeniedCallIsAnsweredWithoutItsResults() throws {
        let server = Server()
        var ran = false
        let (xid, call) = server.call { _ in ran = true; return true }
        try server.send(Self.record([xid, 1, 1, 1, 1]))      // MSG_DENIED, AUTH_ERROR, AUTH_BADCRED
        #expect(call.finished && call.denied && !ran)
    }

    @Test func aVerifierLongerThanRPCAllowsIsNotAccepted() throws {
        let server = Server()
        let (xid, call) = server.call()
        try server.send(Self.record([xid, 1, 0, 1, 1000] + [UInt32](repeating: 0, count: 250) + [0]))
        #expect(call.finished && call.denied)
    }

    @Test func aReplyToNoCallOfOursIsDropped() throws {
        let server = Server()
        let (xid, call) = server.call()
        try server.send(Self.record([xid &+ 1000, 1, 0, 0, 0, 0]))
        #expect(!call.finished)
    }
}

extension Result {
    var failure: Failure? { if case .failure(let e) = self { return e } else { return nil } }
    var success: Success? { if case .success(let v) = self { return v } else { return nil } }
}
