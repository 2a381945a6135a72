// Client side of the wire: decoding the replies a server sends, the inverse of
// Encoder.swift. Decoders take exactly-sized views and return nil when bytes are short,
// because a client under test must report a broken server, not crash on it.

extension UnsafeRawBufferPointer {
    @inline(__always) fileprivate func u16(_ o: Int) -> UInt16 { UInt16(littleEndian: loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
    @inline(__always) fileprivate func u32(_ o: Int) -> UInt32 { UInt32(littleEndian: loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
    @inline(__always) fileprivate func u64(_ o: Int) -> UInt64 { UInt64(littleEndian: loadUnaligned(fromByteOffset: o, as: UInt64.self)) }
}

/// Reply decoders for a FUSE client.
public enum FUSEClientDecoder {
    public static func outHeader(_ b: UnsafeRawBufferPointer) -> FUSEOutHeader? {
        guard b.count >= FUSEOutHeader.size else { return nil }
        return FUSEOutHeader(length: b.u32(0), error: Int32(bitPattern: b.u32(4)), unique: b.u64(8))
    }

    public static func attr(_ b: UnsafeRawBufferPointer, at o: Int = 0) -> FUSEAttr? {
        guard b.count >= o + 88 else { return nil }
        var a = FUSEAttr()
        a.ino = b.u64(o); a.size = b.u64(o + 8); a.blocks = b.u64(o + 16)
        a.atime = b.u64(o + 24); a.mtime = b.u64(o + 32); a.ctime = b.u64(o + 40)
        a.atimensec = b.u32(o + 48); a.mtimensec = b.u32(o + 52); a.ctimensec = b.u32(o + 56)
        a.mode = b.u32(o + 60); a.nlink = b.u32(o + 64); a.uid = b.u32(o + 68); a.gid = b.u32(o + 72)
        a.rdev = b.u32(o + 76); a.blksize = b.u32(o + 80); a.flags = b.u32(o + 84)
        return a
    }

    public static func entryOut(_ b: UnsafeRawBufferPointer) -> FUSEEntryOut? {
        guard b.count >= 128, let attr = attr(b, at: 40) else { return nil }
        var e = FUSEEntryOut()
        e.nodeID = b.u64(0); e.generation = b.u64(8); e.entryValid = b.u64(16); e.attrValid = b.u64(24)
        e.entryValidNsec = b.u32(32); e.attrValidNsec = b.u32(36); e.attr = attr
        return e
    }

    public static func attrOut(_ b: UnsafeRawBufferPointer) -> FUSEAttrOut? {
        guard b.count >= 104, let attr = attr(b, at: 16) else { return nil }
        var a = FUSEAttrOut()
        a.attrValid = b.u64(0); a.attrValidNsec = b.u32(8); a.attr = attr
        return a
    }

    public static func openOut(_ b: UnsafeRawBufferPointer) -> FUSEOpenOut? {
        guard b.count >= 16 else { return nil }
        return FUSEOpenOut(fh: b.u64(0), openFlags: b.u32(8), backingID: Int32(bitPattern: b.u32(12)))
    }

    public static func writeOut(_ b: UnsafeRawBufferPointer) -> FUSEWriteOut? {
        guard b.count >= 4 else { return nil }
        return FUSEWriteOut(size: b.u32(0))
    }

    /// `fuse_init_out`; servers older than 7.23 send only the first 24 bytes.
    public static func initOut(_ b: UnsafeRawBufferPointer) -> FUSEInitOut? {
        guard b.count >= 24 else { return nil }
        var r = FUSEInitOut()
        r.major = b.u32(0); r.minor = b.u32(4); r.maxReadahead = b.u32(8)
        var flags = UInt64(b.u32(12))
        r.maxBackground = b.u16(16); r.congestionThreshold = b.u16(18); r.maxWrite = b.u32(20)
        if b.count >= 32 { r.timeGranularity = b.u32(24); r.maxPages = b.u16(28); r.mapAlignment = b.u16(30) }
        if b.count >= 36 { flags |= UInt64(b.u32(32)) << 32 }
        if b.count >= 40 { r.maxStackDepth = b.u32(36) }
        r.flags = flags
        return r
    }

    /// One `struct fuse_dirent` of a READDIR reply.
    public struct Dirent: Sendable, Equatable {
        public var ino: UInt64
        public var offset: UInt64
        public var type: UInt32
        public var name: [UInt8]
    }

    /// The entries of a READDIR reply body, or nil when a record runs past the end.
    public static func dirents(_ b: UnsafeRawBufferPointer) -> [Dirent]? {
        var out: [Dirent] = []
        var o = 0
        while o < b.count {
            guard b.count - o >= 24 else { return nil }
            let nameLength = Int(b.u32(o + 16))
            guard nameLength <= b.count - o - 24 else { return nil }
            out.append(Dirent(ino: b.u64(o), offset: b.u64(o + 8), type: b.u32(o + 20),
                              name: Array(b[(o + 24)..<(o + 24 + nameLength)])))
            o += (24 + nameLength + 7) & ~7
        }
        return out
    }
}
