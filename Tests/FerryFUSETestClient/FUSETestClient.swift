import FerryCore
import FerryFUSE
#if canImport(Glibc)
import Glibc
#endif

/// A FUSE error reply: the server's errno.
public struct FUSEFailure: Error, Equatable {
    public let errno: Int32
    public init(errno: Int32) { self.errno = errno }
}

/// A guest's side of a FUSE session with a server in this process, as a transport drives
/// it: each request built byte by byte as the kernel sends it, each reply read back from
/// the transport's buffers. The backends' migration tests move such a session from one
/// server to another; each suite adds the operations it needs in the style it checks them
/// (FerryNFSTests: throwing, decoded; FerryRADOSTests: the errno beside the value).
public final class FUSETestClient {
    public let handler: any FUSERequestHandler
    private let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 << 20, alignment: 4096)
    private let vector = UnsafeMutablePointer<iovec>.allocate(capacity: 1)
    private var unique: UInt64 = 1
    /// Handed to the server with every request: a transport that can answer later.
    public let deferral: (any ReplyDeferral)?
    /// The unique of the last request sent.
    public var lastUnique: UInt64 { unique }

    /// `initialize`: send INIT (a new session); false for a session loaded from a migration.
    /// `deferral`: lets the server defer replies (and so agree lock flags at INIT).
    public init(_ handler: any FUSERequestHandler, initialize: Bool = true, deferral: (any ReplyDeferral)? = nil) throws {
        self.handler = handler
        self.deferral = deferral
        if initialize {
            var b = Body()
            b.u32(7); b.u32(38); b.u32(128 * 1024); b.u32(0xFFFF_FFFF); b.u32(0x3); b.zeros(44)
            let reply = send(.`init`, b, node: 0)
            if reply.error != 0 { throw FUSEFailure(errno: -reply.error) }
        }
    }

    deinit { scratch.deallocate(); vector.deallocate() }

    /// A request's argument bytes, little-endian.
    public struct Body {
        public var bytes: [UInt8] = []
        public init() {}
        public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
        public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
        public mutating func name(_ s: String) { bytes.append(contentsOf: Array(s.utf8)); bytes.append(0) }
        public mutating func zeros(_ n: Int) { bytes.append(contentsOf: [UInt8](repeating: 0, count: n)) }
    }

    /// A reply: `error` is 0 or a negative errno; `payload` what follows the header.
    public struct Reply {
        /// false for a request the server does not answer (FORGET).
        public var answered: Bool
        public var error: Int32
        public var payload: [UInt8]
        public func u64(at offset: Int) -> UInt64 { payload.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt64.self) } }
        /// fuse_entry_out's node id and generation.
        public var nodeID: UInt64 { u64(at: 0) }
        public var generation: UInt64 { u64(at: 8) }
    }

    /// One request, as uid (and gid) `uid`.
    @discardableResult
    public func send(_ opcode: FUSEOpcode, _ body: Body = Body(), node: UInt64 = 1, uid: UInt32 = 0) -> Reply {
        unique += 1
        var h = Body()
        h.u32(UInt32(40 + body.bytes.count)); h.u32(opcode.rawValue); h.u64(unique); h.u64(node)
        h.u32(uid); h.u32(uid); h.u32(1); h.u32(0)
        let request = h.bytes + body.bytes
        vector.pointee = iovec(iov_base: scratch.baseAddress! + 16, iov_len: scratch.count - 16)
        var area = ReplyArea(scratch: scratch, readVectors: IOVectors(base: vector, count: 1), deferral: deferral)
        let bytes: [UInt8]
        switch request.withUnsafeBytes({ handler.handle(request: $0, reply: &area) }) {
        case .none, .deferred: return Reply(answered: false, error: 0, payload: [])
        case .inline(let length): bytes = Array(scratch[0..<length])
        case .data(let n): bytes = Array(scratch[0..<(16 + n)])
        }
        let error = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) }
        return Reply(answered: true, error: error, payload: Array(bytes.dropFirst(16)))
    }
}
