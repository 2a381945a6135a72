// Readers for the fixed argument structs, offsets as in <linux/fuse.h> 7.38. Each checks
// the full struct size first, so the unchecked loads that follow stay in bounds.

extension FUSEDecoder {
    static func initIn(_ a: FUSEByteReader) throws(FUSEDecodeError) -> FUSEInitIn {
        // Kernels before 7.36 send only major, minor, max_readahead, flags.
        try a.require(FUSEInitIn.compatSize)
        var flags = UInt64(a.u32(12))
        if a.count >= FUSEInitIn.size, flags & UInt64(initExtFlag) != 0 {
            flags |= UInt64(a.u32(16)) << 32
        }
        return FUSEInitIn(major: a.u32(0), minor: a.u32(4), maxReadahead: a.u32(8), flags: flags)
    }

    static func forgetList(_ a: FUSEByteReader) throws(FUSEDecodeError) -> FUSEForgetList {
        // fuse_batch_forget_in { count, dummy }, then count * fuse_forget_one.
        try a.require(8)
        let count = Int(a.u32(0))
        let (needed, overflow) = count.multipliedReportingOverflow(by: 16)
        guard !overflow, needed <= a.count - 8 else { throw .inconsistentCount(opcode: a.opcode) }
        return FUSEForgetList(count: count, bytes: a.slice(8, 8 + needed))
    }

    static func getattrIn(_ a: FUSEByteReader) throws(FUSEDecodeError) -> FUSEGetattrIn {
        try a.require(FUSEGetattrIn.size)
        return FUSEGetattrIn(getattrFlags: a.u32(0), fh: a.u64(8))
    }

    static func setattrIn(_ a: FUSEByteReader) throws(FUSEDecodeError) -> FUSESetattrIn {
        // valid, padding, fh, size, lock_owner, atime, mtime, ctime, atimensec, mtimensec,
        // ctimensec, mode, unused4, uid, gid, unused5
        try a.require(FUSESetattrIn.size)
        return FUSESetattrIn(valid: a.u32(0), fh: a.u64(8), size: a.u64(16), lockOwner: a.u64(24),
                             atime: a.u64(32), mtime: a.u64(40), ctime: a.u64(48),
                             atimensec: a.u32(56), mtimensec: a.u32(60), ctimensec: a.u32(64),
                             mode: a.u32(68), uid: a.u32(76), gid: a.u32(80))
    }

    static func mknodIn(_ a: FUSEByteReader) throws(FUSEDecodeError) -> FUSEMknodIn {
        try a.require(FUSEMknodIn.size)
        return FUSEMknodIn(mode: a.u32(0), rdev: a.u32(4), umask: a.u32(8))
    }

    static func mkdirIn(_ a: FUSEByteReader) throws(FUSEDecodeError) -> FUSEMkdirIn {
        try a.require(FUSEMkdirIn.size)
        return FUSEMkdirIn(mode: a.u32(0), umask: a.u32(4))
    }

    static func openIn(_ a: FUSEByteReader) throws(FUSEDecodeError) -> FUSEOpenIn {
        try a.require(FUSEOpenIn.size)
        return FUSEOpenIn(flags: a.u32(0), openFlags: a.u32(4))
    }

    static func createIn(_ a: FUSEByteReader) throws(FUSEDecodeError) -> FUSECreateIn {
        try a.require(FUSECreateIn.size)
        return FUSECreateIn(flags: a.u32(0), mode: a.u32(4), umask: a.u32(8), openFlags: a.u32(12))
    }

    static func readIn(_ a: FUSEByteReader) throws(FUSEDecodeError) -> FUSEReadIn {
        try a.require(FUSEReadIn.size)
        return FUSEReadIn(fh: a.u64(0), offset: a.u64(8), size: a.u32(16), readFlags: a.u32(20),
                          lockOwner: a.u64(24), flags: a.u32(32))
    }

    static func writeIn(_ a: FUSEByteReader) throws(FUSEDecodeError) -> FUSEWriteIn {
        try a.require(FUSEWriteIn.size)
        return FUSEWriteIn(fh: a.u64(0), offset: a.u64(8), size: a.u32(16), writeFlags: a.u32(20),
                           lockOwner: a.u64(24), flags: a.u32(32))
    }

    static func flushIn(_ a: FUSEByteReader) throws(FUSEDecodeError) -> FUSEFlushIn {
        // fh, unused, padding, lock_owner
        try a.require(FUSEFlushIn.size)
        return FUSEFlushIn(fh: a.u64(0), lockOwner: a.u64(16))
    }

    static func releaseIn(_ a: FUSEByteReader) throws(FUSEDecodeError) -> FUSEReleaseIn {
        try a.require(FUSEReleaseIn.size)
        return FUSEReleaseIn(fh: a.u64(0), flags: a.u32(8), releaseFlags: a.u32(12), lockOwner: a.u64(16))
    }

    static func fsyncIn(_ a: FUSEByteReader) throws(FUSEDecodeError) -> FUSEFsyncIn {
        try a.require(FUSEFsyncIn.size)
        return FUSEFsyncIn(fh: a.u64(0), fsyncFlags: a.u32(8))
    }

    static func setxattr(_ a: FUSEByteReader, extended: Bool) throws(FUSEDecodeError) -> FUSERequest {
        // The struct grew from 8 to 16 bytes with FUSE_SETXATTR_EXT; only INIT tells which.
        let fixedSize = extended ? FUSESetxattrIn.size : FUSESetxattrIn.compatSize
        try a.require(fixedSize)
        let fixed = FUSESetxattrIn(size: a.u32(0), flags: a.u32(4), setxattrFlags: extended ? a.u32(8) : 0)
        let (name, valueStart) = try a.string(at: fixedSize)
        // The value is everything after the name and must be exactly `size` bytes.
        guard a.count - valueStart == Int(fixed.size) else { throw .inconsistentCount(opcode: a.opcode) }
        return .setxattr(fixed, name: name, value: a.slice(valueStart, a.count))
    }

    static func lockIn(_ a: FUSEByteReader) throws(FUSEDecodeError) -> FUSELockIn {
        // fh, owner, fuse_file_lock { start, end, type, pid }, lk_flags, padding
        try a.require(FUSELockIn.size)
        let lock = FUSEFileLock(start: a.u64(16), end: a.u64(24), type: a.u32(32), pid: a.u32(36))
        return FUSELockIn(fh: a.u64(0), owner: a.u64(8), lock: lock, lockFlags: a.u32(40))
    }

    static func bmapIn(_ a: FUSEByteReader) throws(FUSEDecodeError) -> FUSEBmapIn {
        try a.require(FUSEBmapIn.size)
        return FUSEBmapIn(block: a.u64(0), blockSize: a.u32(8))
    }

    static func ioctlIn(_ a: FUSEByteReader) throws(FUSEDecodeError) -> FUSEIoctlIn {
        try a.require(FUSEIoctlIn.size)
        return FUSEIoctlIn(fh: a.u64(0), flags: a.u32(8), cmd: a.u32(12), arg: a.u64(16),
                           inSize: a.u32(24), outSize: a.u32(28))
    }

    static func pollIn(_ a: FUSEByteReader) throws(FUSEDecodeError) -> FUSEPollIn {
        try a.require(FUSEPollIn.size)
        return FUSEPollIn(fh: a.u64(0), kh: a.u64(8), flags: a.u32(16), events: a.u32(20))
    }

    static func fallocateIn(_ a: FUSEByteReader) throws(FUSEDecodeError) -> FUSEFallocateIn {
        try a.require(FUSEFallocateIn.size)
        return FUSEFallocateIn(fh: a.u64(0), offset: a.u64(8), length: a.u64(16), mode: a.u32(24))
    }

    static func lseekIn(_ a: FUSEByteReader) throws(FUSEDecodeError) -> FUSELseekIn {
        try a.require(FUSELseekIn.size)
        return FUSELseekIn(fh: a.u64(0), offset: a.u64(8), whence: a.u32(16))
    }

    static func copyFileRangeIn(_ a: FUSEByteReader) throws(FUSEDecodeError) -> FUSECopyFileRangeIn {
        try a.require(FUSECopyFileRangeIn.size)
        return FUSECopyFileRangeIn(fhIn: a.u64(0), offsetIn: a.u64(8), nodeIDOut: a.u64(16), fhOut: a.u64(24),
                                   offsetOut: a.u64(32), length: a.u64(40), flags: a.u64(48))
    }
}
