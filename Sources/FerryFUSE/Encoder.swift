// Little-endian encoders for the reply structs. Each zeroes its whole struct first so
// padding and reserved words never leak stale buffer contents to the kernel or guest.

extension UnsafeMutableRawPointer {
    @inline(__always)
    func storeLE(_ value: UInt16, at offset: Int) { storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt16.self) }
    @inline(__always)
    func storeLE(_ value: UInt32, at offset: Int) { storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt32.self) }
    @inline(__always)
    func storeLE(_ value: UInt64, at offset: Int) { storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt64.self) }

    @inline(__always)
    func zero(_ count: Int) { initializeMemory(as: UInt8.self, repeating: 0, count: count) }
}

extension FUSEAttr: FUSEEncodable {
    public static var size: Int { 88 }
    public func encode(to p: UnsafeMutableRawPointer) {
        // No padding in fuse_attr, but zeroing keeps every encoder uniform.
        p.zero(Self.size)
        p.storeLE(ino, at: 0)
        p.storeLE(size, at: 8)
        p.storeLE(blocks, at: 16)
        p.storeLE(atime, at: 24)
        p.storeLE(mtime, at: 32)
        p.storeLE(ctime, at: 40)
        p.storeLE(atimensec, at: 48)
        p.storeLE(mtimensec, at: 52)
        p.storeLE(ctimensec, at: 56)
        p.storeLE(mode, at: 60)
        p.storeLE(nlink, at: 64)
        p.storeLE(uid, at: 68)
        p.storeLE(gid, at: 72)
        p.storeLE(rdev, at: 76)
        p.storeLE(blksize, at: 80)
        p.storeLE(flags, at: 84)
    }
}

extension FUSEEntryOut: FUSEEncodable {
    public static var size: Int { 128 }
    public func encode(to p: UnsafeMutableRawPointer) {
        p.storeLE(nodeID, at: 0)
        p.storeLE(generation, at: 8)
        p.storeLE(entryValid, at: 16)
        p.storeLE(attrValid, at: 24)
        p.storeLE(entryValidNsec, at: 32)
        p.storeLE(attrValidNsec, at: 36)
        attr.encode(to: p + 40)
    }
}

extension FUSEAttrOut: FUSEEncodable {
    public static var size: Int { 104 }
    public func encode(to p: UnsafeMutableRawPointer) {
        p.storeLE(attrValid, at: 0)
        p.storeLE(attrValidNsec, at: 8)
        p.storeLE(UInt32(0), at: 12)     // dummy
        attr.encode(to: p + 16)
    }
}

extension FUSEOpenOut: FUSEEncodable {
    public static var size: Int { 16 }
    public func encode(to p: UnsafeMutableRawPointer) {
        p.zero(Self.size)
        p.storeLE(fh, at: 0)
        p.storeLE(openFlags, at: 8)
        p.storeLE(UInt32(bitPattern: backingID), at: 12)
    }
}

extension FUSEWriteOut: FUSEEncodable {
    public static var size: Int { 8 }
    public func encode(to p: UnsafeMutableRawPointer) {
        p.zero(Self.size)
        p.storeLE(size, at: 0)
    }
}

extension FUSEStatfsOut: FUSEEncodable {
    public static var size: Int { 80 }
    public func encode(to p: UnsafeMutableRawPointer) {
        // fuse_kstatfs ends with padding and spare[6], all zero.
        p.zero(Self.size)
        p.storeLE(blocks, at: 0)
        p.storeLE(bfree, at: 8)
        p.storeLE(bavail, at: 16)
        p.storeLE(files, at: 24)
        p.storeLE(ffree, at: 32)
        p.storeLE(bsize, at: 40)
        p.storeLE(namelen, at: 44)
        p.storeLE(frsize, at: 48)
    }
}

extension FUSEGetxattrOut: FUSEEncodable {
    public static var size: Int { 8 }
    public func encode(to p: UnsafeMutableRawPointer) {
        p.zero(Self.size)
        p.storeLE(size, at: 0)
    }
}

extension FUSEFileLock: FUSEEncodable {
    public func encode(to p: UnsafeMutableRawPointer) {
        p.storeLE(start, at: 0)
        p.storeLE(end, at: 8)
        p.storeLE(type, at: 16)
        p.storeLE(pid, at: 20)
    }
}

extension FUSELockOut: FUSEEncodable {
    public static var size: Int { FUSEFileLock.size }
    public func encode(to p: UnsafeMutableRawPointer) { lock.encode(to: p) }
}

extension FUSEBmapOut: FUSEEncodable {
    public static var size: Int { 8 }
    public func encode(to p: UnsafeMutableRawPointer) { p.storeLE(block, at: 0) }
}

extension FUSELseekOut: FUSEEncodable {
    public static var size: Int { 8 }
    public func encode(to p: UnsafeMutableRawPointer) { p.storeLE(offset, at: 0) }
}

extension FUSEPollOut: FUSEEncodable {
    public static var size: Int { 8 }
    public func encode(to p: UnsafeMutableRawPointer) {
        p.zero(Self.size)
        p.storeLE(revents, at: 0)
    }
}

extension FUSEInitOut: FUSEEncodable {
    public static var size: Int { 64 }
    public func encode(to p: UnsafeMutableRawPointer) {
        p.zero(Self.size)                // request_timeout (7.43, never sent), unused[11]
        p.storeLE(major, at: 0)
        p.storeLE(minor, at: 4)
        p.storeLE(maxReadahead, at: 8)
        p.storeLE(UInt32(truncatingIfNeeded: flags), at: 12)
        p.storeLE(maxBackground, at: 16)
        p.storeLE(congestionThreshold, at: 18)
        p.storeLE(maxWrite, at: 20)
        p.storeLE(timeGranularity, at: 24)
        p.storeLE(maxPages, at: 28)
        p.storeLE(mapAlignment, at: 30)
        p.storeLE(UInt32(truncatingIfNeeded: flags >> 32), at: 32)   // flags2
        p.storeLE(maxStackDepth, at: 36)
    }
}
