import FerryCore
import FerryFUSE
import FerryFUSETestClient
#if canImport(Glibc)
import Glibc
#endif

/// The session these tests drive: each reply decoded with FerryFUSE's client decoders, an
/// error reply thrown as `FUSEFailure`.
typealias FUSEClient = FUSETestClient

extension FUSETestClient {
    typealias Body = FUSETestClient.Body

    /// One request; the reply's argument bytes, nil for a request with no reply.
    @discardableResult
    func call(_ opcode: FUSEOpcode, nodeID: UInt64, _ body: Body = Body(), uid: UInt32 = 0) throws -> [UInt8]? {
        let reply = send(opcode, body, node: nodeID, uid: uid)
        guard reply.answered else { return nil }
        if reply.error != 0 { throw FUSEFailure(errno: -reply.error) }
        return reply.payload
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
