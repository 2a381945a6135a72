import FerryCore
import FerryFUSE
import FerryFUSETestClient
#if canImport(Glibc)
import Glibc
#endif

/// The session these tests drive: each operation answers the errno (0 or negative) beside
/// what it returns, so a test checks refusals (EIO from a standby) as plainly as successes.
typealias FUSEWire = FUSETestClient

extension FUSETestClient {
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
