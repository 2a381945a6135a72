import FerryCore
import FerryFUSE
#if canImport(Glibc)
import Glibc
#endif

/// A guest's side of a FUSE session with a server, as a transport drives it: requests built
/// byte by byte as the kernel sends them, replies read back from the transport's buffers.
/// The migration tests move such a session from one server to another.
final class FUSEWire {
    let handler: any FUSERequestHandler
    private let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 << 20, alignment: 4096)
    private let vector = UnsafeMutablePointer<iovec>.allocate(capacity: 1)
    private var unique: UInt64 = 1

    /// `initialize`: send INIT (a new session); false for a session loaded from a migration.
    init(_ handler: any FUSERequestHandler, initialize: Bool = true) {
        self.handler = handler
        if initialize {
            var b = Body()
            b.u32(7); b.u32(38); b.u32(128 * 1024); b.u32(0xFFFF_FFFF); b.u32(0x3); b.zeros(44)
            precondition(send(FUSEOpcode.`init`, b).error == 0, "INIT failed")
        }
    }

    deinit { scratch.deallocate(); vector.deallocate() }

    struct Body {
        var bytes: [UInt8] = []
        mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
        mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
        mutating func name(_ s: String) { bytes.append(contentsOf: Array(s.utf8)); bytes.append(0) }
        mutating func zeros(_ n: Int) { bytes.append(contentsOf: [UInt8](repeating: 0, count: n)) }
    }

    /// A reply: `error` is 0 or a negative errno; `payload` what follows the header.
    struct Reply {
        var error: Int32
        var payload: [UInt8]
        func u64(at offset: Int) -> UInt64 { payload.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt64.self) } }
        /// fuse_entry_out
        var nodeID: UInt64 { u64(at: 0) }
        var generation: UInt64 { u64(at: 8) }
    }

    @discardableResult
    func send(_ opcode: FUSEOpcode, _ body: Body = Body(), node: UInt64 = 1) -> Reply {
        var h = Body()
        unique += 1
        h.u32(UInt32(40 + body.bytes.count)); h.u32(opcode.rawValue); h.u64(unique); h.u64(node)
        h.u32(0); h.u32(0); h.u32(1); h.u32(0)
        let request = h.bytes + body.bytes
        vector.pointee = iovec(iov_base: scratch.baseAddress! + 16, iov_len: scratch.count - 16)
        var area = ReplyArea(scratch: scratch, readVectors: IOVectors(base: vector, count: 1))
        let disposition = request.withUnsafeBytes { handler.handle(request: $0, reply: &area) }
        let bytes: [UInt8]
        switch disposition {
        case .none: return Reply(error: 0, payload: [])
        case .inline(let length): bytes = Array(scratch[0..<length])
        case .data(let n): bytes = Array(scratch[0..<(16 + n)])
        }
        let error = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) }
        return Reply(error: error, payload: Array(bytes.dropFirst(16)))
    }

    /// CREATE: the entry (node id, generation) and the fh.
    func create(_ name: String, in parent: UInt64 = 1, flags: Int32 = O_RDWR) -> (error: Int32, node: UInt64, generation: UInt64, fh: UInt64) {
        var b = Body(); b.u32(UInt32(bitPattern: flags | O_CREAT)); b.u32(0o644); b.u32(0); b.u32(0); b.name(name)
        let r = send(.create, b, node: parent)
        return (r.error, r.error == 0 ? r.nodeID : 0, r.error == 0 ? r.generation : 0, r.error == 0 ? r.u64(at: 128) : 0)
    }

    /// OPEN: the fh, or the error.
    func open(_ node: UInt64, flags: Int32 = O_RDONLY) -> (error: Int32, fh: UInt64) {
        var b = Body(); b.u32(UInt32(bitPattern: flags)); b.u32(0)
        let r = send(.open, b, node: node)
        return (r.error, r.error == 0 ? r.u64(at: 0) : 0)
    }

    func mkdir(_ name: String, in parent: UInt64 = 1) -> Reply {
        var b = Body(); b.u32(0o755); b.u32(0); b.name(name)
        return send(.mkdir, b, node: parent)
    }

    func lookup(_ name: String, in parent: UInt64 = 1) -> Reply {
        var b = Body(); b.name(name)
        return send(.lookup, b, node: parent)
    }

    func unlink(_ name: String, in parent: UInt64 = 1) -> Int32 {
        var b = Body(); b.name(name)
        return send(.unlink, b, node: parent).error
    }

    /// The error, or the count written.
    func write(_ node: UInt64, fh: UInt64, at offset: UInt64, _ text: String) -> (error: Int32, written: UInt32) {
        let data = Array(text.utf8)
        var b = Body()
        b.u64(fh); b.u64(offset); b.u32(UInt32(data.count)); b.u32(0); b.u64(0); b.u32(0); b.u32(0)
        b.bytes += data
        let r = send(.write, b, node: node)
        return (r.error, r.error == 0 ? r.payload.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } : 0)
    }

    /// The bytes read as text, or nil with the error.
    func read(_ node: UInt64, fh: UInt64, at offset: UInt64 = 0, size: UInt32 = 4096) -> (error: Int32, text: String) {
        var b = Body(); b.u64(fh); b.u64(offset); b.u32(size); b.u32(0); b.u64(0); b.u32(0); b.u32(0)
        let r = send(.read, b, node: node)
        return (r.error, String(decoding: r.payload, as: UTF8.self))
    }

    /// fuse_attr_out's size (error 0), or the error.
    func size(_ node: UInt64) -> (error: Int32, size: UInt64) {
        var b = Body(); b.u32(0); b.u32(0); b.u64(0)
        let r = send(.getattr, b, node: node)
        return (r.error, r.error == 0 ? r.u64(at: 16 + 8) : 0)
    }

    func opendir(_ node: UInt64) -> (error: Int32, fh: UInt64) {
        var b = Body(); b.u32(UInt32(O_RDONLY)); b.u32(0)
        let r = send(.opendir, b, node: node)
        return (r.error, r.error == 0 ? r.u64(at: 0) : 0)
    }

    /// One READDIR page's names from `offset`.
    func readdir(_ node: UInt64, fh: UInt64, at offset: UInt64 = 0) -> (error: Int32, names: [String]) {
        var b = Body(); b.u64(fh); b.u64(offset); b.u32(64 * 1024); b.u32(0); b.u64(0); b.u32(0); b.u32(0)
        let r = send(.readdir, b, node: node)
        guard r.error == 0 else { return (r.error, []) }
        var names: [String] = []
        var at = 0
        // fuse_dirent: ino, off, namelen, type, name padded to 8 bytes.
        while at + 24 <= r.payload.count {
            let length = Int(r.payload.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at + 16, as: UInt32.self) })
            guard at + 24 + length <= r.payload.count else { break }
            names.append(String(decoding: r.payload[(at + 24)..<(at + 24 + length)], as: UTF8.self))
            at += (24 + length + 7) & ~7
        }
        return (0, names)
    }

    func release(_ node: UInt64, fh: UInt64, directory: Bool = false) -> Int32 {
        var b = Body(); b.u64(fh); b.u32(0); b.u32(0); b.u64(0)
        return send(directory ? .releasedir : .release, b, node: node).error
    }
}
