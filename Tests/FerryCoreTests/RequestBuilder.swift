import FerryCore
import FerryFUSE
#if canImport(Glibc)
import Glibc
#endif

/// Builds FUSE requests byte by byte, as a kernel would send them.
struct RequestBuilder {
    private(set) var body: [UInt8] = []

    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { body.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { body.append(contentsOf: $0) } }
    mutating func name(_ s: String) { body.append(contentsOf: Array(s.utf8)); body.append(0) }
    mutating func bytes(_ b: [UInt8]) { body.append(contentsOf: b) }
    mutating func zeros(_ n: Int) { body.append(contentsOf: [UInt8](repeating: 0, count: n)) }

    func request(_ opcode: FUSEOpcode, unique: UInt64 = 7, nodeID: UInt64 = 1,
                 uid: UInt32 = 0, gid: UInt32 = 0, pid: UInt32 = 1) -> [UInt8] {
        Self.request(opcode.rawValue, body: body, unique: unique, nodeID: nodeID, uid: uid, gid: gid, pid: pid)
    }

    static func request(_ opcode: UInt32, body: [UInt8], unique: UInt64 = 7, nodeID: UInt64 = 1,
                        uid: UInt32 = 0, gid: UInt32 = 0, pid: UInt32 = 1) -> [UInt8] {
        var h = RequestBuilder()
        h.u32(UInt32(40 + body.count)); h.u32(opcode); h.u64(unique); h.u64(nodeID)
        h.u32(uid); h.u32(gid); h.u32(pid); h.u32(0)
        return h.body + body
    }

    static func initRequest(minor: UInt32 = 38, flags: UInt64 = 0xFFFF_FFFF | (0x3 << 32)) -> [UInt8] {
        var b = RequestBuilder()
        b.u32(7); b.u32(minor); b.u32(128 * 1024); b.u32(UInt32(truncatingIfNeeded: flags))
        b.u32(UInt32(truncatingIfNeeded: flags >> 32)); b.zeros(44)
        return b.request(.`init`, unique: 1)
    }
}

/// A reply as the transport would send it.
struct Reply {
    var bytes: [UInt8]
    var error: Int32 { bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) } }
    var unique: UInt64 { bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self) } }
    var length: UInt32 { bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 0, as: UInt32.self) } }
    func u64(at offset: Int) -> UInt64 { bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 16 + offset, as: UInt64.self) } }
    func u32(at offset: Int) -> UInt32 { bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 16 + offset, as: UInt32.self) } }
    /// fuse_entry_out fields.
    var nodeID: UInt64 { u64(at: 0) }
    var generation: UInt64 { u64(at: 8) }
    var entryValid: UInt64 { u64(at: 16) }
}

/// Drives a server the way a transport does, with buffers it owns.
final class TestTransport {
    let handler: any FUSERequestHandler
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 << 20, alignment: 4096)
    let vector = UnsafeMutablePointer<iovec>.allocate(capacity: 1)

    /// Handed to the server with every request (a transport that can answer later).
    let deferral: (any ReplyDeferral)?

    init(_ handler: any FUSERequestHandler, initialize: Bool = true, deferral: (any ReplyDeferral)? = nil) {
        self.handler = handler
        self.deferral = deferral
        if initialize {
            let r = send(RequestBuilder.initRequest())
            precondition(r?.error == 0, "INIT failed")
        }
    }

    deinit { scratch.deallocate(); vector.deallocate() }

    /// Sends one request; nil when the server sends no reply.
    @discardableResult
    func send(_ request: [UInt8]) -> Reply? {
        vector.pointee = iovec(iov_base: scratch.baseAddress! + 16, iov_len: scratch.count - 16)
        var area = ReplyArea(scratch: scratch, readVectors: IOVectors(base: vector, count: 1), deferral: deferral)
        let disposition = request.withUnsafeBytes { handler.handle(request: $0, reply: &area) }
        switch disposition {
        case .none, .deferred: return nil
        case .inline(let length): return Reply(bytes: Array(scratch[0..<length]))
        case .data(let n): return Reply(bytes: Array(scratch[0..<(16 + n)]))
        }
    }

    func lookup(_ name: String, in parent: UInt64 = 1, uid: UInt32 = 0) -> Reply {
        var b = RequestBuilder(); b.name(name)
        return send(b.request(.lookup, nodeID: parent, uid: uid))!
    }

    func forget(_ nodeID: UInt64, _ count: UInt64) {
        var b = RequestBuilder(); b.u64(count)
        precondition(send(b.request(.forget, nodeID: nodeID)) == nil, "FORGET must not be answered")
    }

    func getattr(_ nodeID: UInt64) -> Reply {
        var b = RequestBuilder(); b.u32(0); b.u32(0); b.u64(0)
        return send(b.request(.getattr, nodeID: nodeID))!
    }

    func mkdir(_ name: String, in parent: UInt64 = 1, mode: UInt32 = 0o755, uid: UInt32 = 0, gid: UInt32 = 0) -> Reply {
        var b = RequestBuilder(); b.u32(mode); b.u32(0); b.name(name)
        return send(b.request(.mkdir, nodeID: parent, uid: uid, gid: gid))!
    }
}
