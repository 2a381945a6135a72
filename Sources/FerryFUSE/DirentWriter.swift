/// Packs READDIR (`fuse_dirent`) or READDIRPLUS (`fuse_direntplus`) records into a reply
/// body, stopping cleanly at the size the kernel asked for.
///
/// Records are padded to 8 bytes with zeros. An append that would cross `limit` writes
/// nothing and returns false, so the caller can resume from that entry's offset next time.
public struct FUSEDirentWriter {
    /// `offsetof(struct fuse_dirent, name)`.
    static let direntHeaderSize = 24

    private let buffer: UnsafeMutableRawBufferPointer
    private let limit: Int
    /// Bytes written so far.
    public private(set) var length: Int = 0

    /// `limit` is the kernel's requested size; it is clamped to the buffer.
    public init(buffer: UnsafeMutableRawBufferPointer, limit: Int) {
        self.buffer = buffer
        self.limit = max(0, min(limit, buffer.count))
    }

    public var isEmpty: Bool { length == 0 }

    /// Size of one `fuse_dirent` record with padding.
    public static func direntSize(nameLength: Int) -> Int {
        align8(direntHeaderSize + nameLength)
    }

    /// Size of one `fuse_direntplus` record with padding.
    public static func direntPlusSize(nameLength: Int) -> Int {
        align8(FUSEEntryOut.size + direntHeaderSize + nameLength)
    }

    public mutating func append(ino: UInt64, offset: UInt64, type: UInt32, name: UnsafeRawBufferPointer) -> Bool {
        let size = Self.direntSize(nameLength: name.count)
        guard size <= limit - length else { return false }
        let p = buffer.baseAddress! + length
        Self.writeDirent(to: p, size: size, ino: ino, offset: offset, type: type, name: name)
        length += size
        return true
    }

    public mutating func appendPlus(entry: FUSEEntryOut, offset: UInt64, type: UInt32, name: UnsafeRawBufferPointer) -> Bool {
        let size = Self.direntPlusSize(nameLength: name.count)
        guard size <= limit - length else { return false }
        let p = buffer.baseAddress! + length
        entry.encode(to: p)
        Self.writeDirent(to: p + FUSEEntryOut.size, size: size - FUSEEntryOut.size,
                         ino: entry.attr.ino, offset: offset, type: type, name: name)
        length += size
        return true
    }

    private static func align8(_ n: Int) -> Int { (n + 7) & ~7 }

    private static func writeDirent(to p: UnsafeMutableRawPointer, size: Int, ino: UInt64, offset: UInt64,
                                    type: UInt32, name: UnsafeRawBufferPointer) {
        p.zero(size)
        p.storeLE(ino, at: 0)
        p.storeLE(offset, at: 8)
        p.storeLE(UInt32(name.count), at: 16)
        p.storeLE(type, at: 20)
        if let source = name.baseAddress, name.count > 0 {
            (p + direntHeaderSize).copyMemory(from: source, byteCount: name.count)
        }
    }
}
