import FerryCore
import FerryFUSE
#if canImport(Glibc)
import Glibc
#endif

/// A FUSE error reply: the server's errno.
struct FUSEFailure: Error, Equatable { let errno: Int32 }

/// Speaks FUSE to a server in this process, as a guest kernel would through a transport:
/// each request built byte by byte, each reply decoded with FerryFUSE's client decoders.
final class FUSEClient {
    let handler: any FUSERequestHandler
    private let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 << 20, alignment: 4096)
    private let vector = UnsafeMutablePointer<iovec>.allocate(capacity: 1)
    private var unique: UInt64 = 1

    /// `initialize`: send INIT (a fresh session); a destination that loaded a state does not.
    init(_ handler: any FUSERequestHandler, initialize: Bool = true) throws {
        self.handler = handler
        if initialize {
            var b = Body()
            b.u32(7); b.u32(38); b.u32(128 * 1024); b.u32(0xFFFF_FFFF); b.u32(0x3); b.zeros(44)
            _ = try call(.`init`, nodeID: 0, b)
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

    /// One request; the reply's argument bytes, nil for a request with no reply.
    @discardableResult
    func call(_ opcode: FUSEOpcode, nodeID: UInt64, _ body: Body = Body(), uid: UInt32 = 0) throws -> [UInt8]? {
        unique += 1
        var h = Body()
        h.u32(UInt32(40 + body.bytes.count)); h.u32(opcode.rawValue); h.u64(unique); h.u64(nodeID)
        h.u32(uid); h.u32(uid); h.u32(1); h.u32(0)
        let request = h.bytes + body.bytes
        vector.pointee = iovec(iov_base: scratch.baseAddress! + 16, iov_len: scratch.count - 16)
        var area = ReplyArea(scratch: scratch, readVectors: IOVectors(base: vector, count: 1))
        let reply: [UInt8]
        switch request.withUnsafeBytes({ handler.handle(request: $0, reply: &area) }) {
        case .none: return nil
        case .inline(let length): reply = Array(scratch[0..<length])
        case .data(let n): reply = Array(scratch[0..<(16 + n)])
        }
        let error = reply.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) }
        if error != 0 { throw FUSEFailure(errno: -error) }
        return Array(reply[16...])
    }

    private func decoded<T>(_ reply: [UInt8]?, _ decode: (UnsafeRawBufferPointer) -> T?) throws -> T {
        guard let value = reply?.withUnsafeBytes({ decode($0) }) else { throw FUSEFailure(errno: EPROTO) }
        return value
    }

    func lookup(_ parent: UInt64, _ name: String) throws -> FUSEEntryOut {
        var b = Body(); b.name(name)
        return try decoded(try call(.lookup, nodeID: parent, b), FUSEClientDecoder.entryOut)
    }

    func forget(_ nodeID: UInt64, _ count: UInt64) throws {
        var b = Body(); b.u64(count)
        try call(.forget, nodeID: nodeID, b)
    }

    func getattr(_ nodeID: UInt64) throws -> FUSEAttr {
        var b = Body(); b.u32(0); b.u32(0); b.u64(0)
        return try decoded(try call(.getattr, nodeID: nodeID, b), FUSEClientDecoder.attrOut).attr
    }

    func mkdir(_ parent: UInt64, _ name: String) throws -> FUSEEntryOut {
        var b = Body(); b.u32(0o755); b.u32(0); b.name(name)
        return try decoded(try call(.mkdir, nodeID: parent, b), FUSEClientDecoder.entryOut)
    }

    func create(_ parent: UInt64, _ name: String, flags: Int32) throws -> (entry: FUSEEntryOut, fh: UInt64) {
        var b = Body(); b.u32(UInt32(bitPattern: flags)); b.u32(UInt32(S_IFREG) | 0o644); b.u32(0); b.u32(0); b.name(name)
        let reply = try call(.create, nodeID: parent, b)
        let entry = try decoded(reply, FUSEClientDecoder.entryOut)
        let open = try decoded(reply.map { Array($0.dropFirst(128)) }, FUSEClientDecoder.openOut)
        return (entry, open.fh)
    }

    func open(_ nodeID: UInt64, flags: Int32) throws -> UInt64 {
        var b = Body(); b.u32(UInt32(bitPattern: flags)); b.u32(0)
        return try decoded(try call(.open, nodeID: nodeID, b), FUSEClientDecoder.openOut).fh
    }

    func opendir(_ nodeID: UInt64) throws -> UInt64 {
        var b = Body(); b.u32(0); b.u32(0)
        return try decoded(try call(.opendir, nodeID: nodeID, b), FUSEClientDecoder.openOut).fh
    }

    @discardableResult
    func write(_ nodeID: UInt64, _ fh: UInt64, at offset: UInt64, _ data: [UInt8], uid: UInt32 = 0) throws -> UInt32 {
        var b = Body(); b.u64(fh); b.u64(offset); b.u32(UInt32(data.count)); b.u32(0); b.u64(0); b.u32(0); b.u32(0)
        b.bytes += data
        return try decoded(try call(.write, nodeID: nodeID, b, uid: uid), FUSEClientDecoder.writeOut).size
    }

    func read(_ nodeID: UInt64, _ fh: UInt64, at offset: UInt64, _ size: Int) throws -> [UInt8] {
        var b = Body(); b.u64(fh); b.u64(offset); b.u32(UInt32(size)); b.u32(0); b.u64(0); b.u32(0); b.u32(0)
        return try call(.read, nodeID: nodeID, b) ?? []
    }

    func readdir(_ nodeID: UInt64, _ fh: UInt64) throws -> [String] {
        var names: [String] = [], offset: UInt64 = 0
        while true {
            var b = Body(); b.u64(fh); b.u64(offset); b.u32(64 * 1024); b.u32(0); b.u64(0); b.u32(0); b.u32(0)
            let entries = try decoded(try call(.readdir, nodeID: nodeID, b), FUSEClientDecoder.dirents)
            guard let last = entries.last else { return names }
            names += entries.map { String(decoding: $0.name, as: UTF8.self) }
            offset = last.offset
        }
    }

    func fsync(_ nodeID: UInt64, _ fh: UInt64) throws {
        var b = Body(); b.u64(fh); b.u32(0); b.u32(0)
        try call(.fsync, nodeID: nodeID, b)
    }

    func release(_ nodeID: UInt64, _ fh: UInt64, directory: Bool = false) throws {
        var b = Body(); b.u64(fh); b.u32(0); b.u32(0); b.u64(0)
        try call(directory ? .releasedir : .release, nodeID: nodeID, b)
    }

    func unlink(_ parent: UInt64, _ name: String) throws {
        var b = Body(); b.name(name)
        try call(.unlink, nodeID: parent, b)
    }
}
