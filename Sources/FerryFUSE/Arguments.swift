// Fixed-size request argument structs, field for field as in <linux/fuse.h> 7.38.
// `size` is the number of bytes the struct occupies on the wire.

public struct FUSEInitIn: Sendable, Equatable {
    public static let size = 64          // 7.36+: with flags2 and padding; older kernels send 16
    public static let compatSize = 16
    public var major: UInt32
    public var minor: UInt32
    public var maxReadahead: UInt32
    /// `flags | (flags2 << 32)` when FUSE_INIT_EXT is set, else `flags`.
    public var flags: UInt64
    public init(major: UInt32, minor: UInt32, maxReadahead: UInt32, flags: UInt64) {
        self.major = major; self.minor = minor; self.maxReadahead = maxReadahead; self.flags = flags
    }
}

/// A view over BATCH_FORGET's `fuse_forget_one` array (16 bytes each), bounds-checked
/// against the request length when decoded.
/// @unchecked Sendable: a read-only view into the request buffer, which one request owns while it runs.
public struct FUSEForgetList: @unchecked Sendable {
    public let count: Int
    public let bytes: UnsafeRawBufferPointer
    public init(count: Int, bytes: UnsafeRawBufferPointer) { self.count = count; self.bytes = bytes }
    /// Entry `i` as (nodeid, nlookup).
    public subscript(i: Int) -> (nodeID: UInt64, nlookup: UInt64) {
        precondition(i >= 0 && i < count)
        return (bytes.loadUnaligned(fromByteOffset: i * 16, as: UInt64.self).littleEndian,
                bytes.loadUnaligned(fromByteOffset: i * 16 + 8, as: UInt64.self).littleEndian)
    }
}

public struct FUSEGetattrIn: Sendable, Equatable {
    public static let size = 16
    public var getattrFlags: UInt32      // FUSE_GETATTR_FH
    public var fh: UInt64
    public init(getattrFlags: UInt32, fh: UInt64) { self.getattrFlags = getattrFlags; self.fh = fh }
}

public struct FUSESetattrIn: Sendable, Equatable {
    public static let size = 88
    public var valid: UInt32             // FATTR_* bits
    public var fh: UInt64
    public var size: UInt64
    public var lockOwner: UInt64
    public var atime: UInt64
    public var mtime: UInt64
    public var ctime: UInt64
    public var atimensec: UInt32
    public var mtimensec: UInt32
    public var ctimensec: UInt32
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public init(valid: UInt32 = 0, fh: UInt64 = 0, size: UInt64 = 0, lockOwner: UInt64 = 0,
                atime: UInt64 = 0, mtime: UInt64 = 0, ctime: UInt64 = 0,
                atimensec: UInt32 = 0, mtimensec: UInt32 = 0, ctimensec: UInt32 = 0,
                mode: UInt32 = 0, uid: UInt32 = 0, gid: UInt32 = 0) {
        self.valid = valid; self.fh = fh; self.size = size; self.lockOwner = lockOwner
        self.atime = atime; self.mtime = mtime; self.ctime = ctime
        self.atimensec = atimensec; self.mtimensec = mtimensec; self.ctimensec = ctimensec
        self.mode = mode; self.uid = uid; self.gid = gid
    }
}

public struct FUSEMknodIn: Sendable, Equatable {
    public static let size = 16
    public var mode: UInt32
    public var rdev: UInt32
    public var umask: UInt32
    public init(mode: UInt32, rdev: UInt32, umask: UInt32) { self.mode = mode; self.rdev = rdev; self.umask = umask }
}

public struct FUSEMkdirIn: Sendable, Equatable {
    public static let size = 8
    public var mode: UInt32
    public var umask: UInt32
    public init(mode: UInt32, umask: UInt32) { self.mode = mode; self.umask = umask }
}

public struct FUSEOpenIn: Sendable, Equatable {
    public static let size = 8
    public var flags: UInt32             // O_* flags of open(2)
    public var openFlags: UInt32         // FUSE_OPEN_KILL_SUIDGID
    public init(flags: UInt32, openFlags: UInt32) { self.flags = flags; self.openFlags = openFlags }
}

public struct FUSECreateIn: Sendable, Equatable {
    public static let size = 16
    public var flags: UInt32
    public var mode: UInt32
    public var umask: UInt32
    public var openFlags: UInt32
    public init(flags: UInt32, mode: UInt32, umask: UInt32, openFlags: UInt32) {
        self.flags = flags; self.mode = mode; self.umask = umask; self.openFlags = openFlags
    }
}

/// `fuse_read_in`, also used by READDIR and READDIRPLUS.
public struct FUSEReadIn: Sendable, Equatable {
    public static let size = 40
    public var fh: UInt64
    public var offset: UInt64
    public var size: UInt32
    public var readFlags: UInt32         // FUSE_READ_LOCKOWNER
    public var lockOwner: UInt64
    public var flags: UInt32
    public init(fh: UInt64, offset: UInt64, size: UInt32, readFlags: UInt32 = 0, lockOwner: UInt64 = 0, flags: UInt32 = 0) {
        self.fh = fh; self.offset = offset; self.size = size; self.readFlags = readFlags
        self.lockOwner = lockOwner; self.flags = flags
    }
}

public struct FUSEWriteIn: Sendable, Equatable {
    public static let size = 40
    public var fh: UInt64
    public var offset: UInt64
    public var size: UInt32
    public var writeFlags: UInt32        // FUSE_WRITE_CACHE, FUSE_WRITE_LOCKOWNER, FUSE_WRITE_KILL_SUIDGID
    public var lockOwner: UInt64
    public var flags: UInt32
    public init(fh: UInt64, offset: UInt64, size: UInt32, writeFlags: UInt32 = 0, lockOwner: UInt64 = 0, flags: UInt32 = 0) {
        self.fh = fh; self.offset = offset; self.size = size; self.writeFlags = writeFlags
        self.lockOwner = lockOwner; self.flags = flags
    }
}

public struct FUSEFlushIn: Sendable, Equatable {
    public static let size = 24
    public var fh: UInt64
    public var lockOwner: UInt64
    public init(fh: UInt64, lockOwner: UInt64) { self.fh = fh; self.lockOwner = lockOwner }
}

public struct FUSEReleaseIn: Sendable, Equatable {
    public static let size = 24
    public var fh: UInt64
    public var flags: UInt32
    public var releaseFlags: UInt32      // FUSE_RELEASE_FLUSH, FUSE_RELEASE_FLOCK_UNLOCK
    public var lockOwner: UInt64
    public init(fh: UInt64, flags: UInt32, releaseFlags: UInt32, lockOwner: UInt64) {
        self.fh = fh; self.flags = flags; self.releaseFlags = releaseFlags; self.lockOwner = lockOwner
    }
}

public struct FUSEFsyncIn: Sendable, Equatable {
    public static let size = 16
    public var fh: UInt64
    public var fsyncFlags: UInt32        // bit 0: datasync
    public init(fh: UInt64, fsyncFlags: UInt32) { self.fh = fh; self.fsyncFlags = fsyncFlags }
}

public struct FUSESetxattrIn: Sendable, Equatable {
    public static let size = 16
    public static let compatSize = 8
    public var size: UInt32
    public var flags: UInt32             // XATTR_CREATE / XATTR_REPLACE
    public var setxattrFlags: UInt32     // FUSE_SETXATTR_ACL_KILL_SGID (extended layout only)
    public init(size: UInt32, flags: UInt32, setxattrFlags: UInt32 = 0) {
        self.size = size; self.flags = flags; self.setxattrFlags = setxattrFlags
    }
}

/// `struct fuse_file_lock`.
public struct FUSEFileLock: Sendable, Equatable {
    public static let size = 24
    public var start: UInt64
    public var end: UInt64
    public var type: UInt32
    public var pid: UInt32
    public init(start: UInt64, end: UInt64, type: UInt32, pid: UInt32) {
        self.start = start; self.end = end; self.type = type; self.pid = pid
    }
}

public struct FUSELockIn: Sendable, Equatable {
    public static let size = 48
    public var fh: UInt64
    public var owner: UInt64
    public var lock: FUSEFileLock
    public var lockFlags: UInt32         // FUSE_LK_FLOCK
    public init(fh: UInt64, owner: UInt64, lock: FUSEFileLock, lockFlags: UInt32) {
        self.fh = fh; self.owner = owner; self.lock = lock; self.lockFlags = lockFlags
    }
}

public struct FUSEBmapIn: Sendable, Equatable {
    public static let size = 16
    public var block: UInt64
    public var blockSize: UInt32
    public init(block: UInt64, blockSize: UInt32) { self.block = block; self.blockSize = blockSize }
}

public struct FUSEIoctlIn: Sendable, Equatable {
    public static let size = 32
    public var fh: UInt64
    public var flags: UInt32
    public var cmd: UInt32
    public var arg: UInt64
    public var inSize: UInt32
    public var outSize: UInt32
    public init(fh: UInt64, flags: UInt32, cmd: UInt32, arg: UInt64, inSize: UInt32, outSize: UInt32) {
        self.fh = fh; self.flags = flags; self.cmd = cmd; self.arg = arg; self.inSize = inSize; self.outSize = outSize
    }
}

public struct FUSEPollIn: Sendable, Equatable {
    public static let size = 24
    public var fh: UInt64
    public var kh: UInt64
    public var flags: UInt32
    public var events: UInt32
    public init(fh: UInt64, kh: UInt64, flags: UInt32, events: UInt32) {
        self.fh = fh; self.kh = kh; self.flags = flags; self.events = events
    }
}

public struct FUSEFallocateIn: Sendable, Equatable {
    public static let size = 32
    public var fh: UInt64
    public var offset: UInt64
    public var length: UInt64
    public var mode: UInt32
    public init(fh: UInt64, offset: UInt64, length: UInt64, mode: UInt32) {
        self.fh = fh; self.offset = offset; self.length = length; self.mode = mode
    }
}

public struct FUSELseekIn: Sendable, Equatable {
    public static let size = 24
    public var fh: UInt64
    public var offset: UInt64
    public var whence: UInt32
    public init(fh: UInt64, offset: UInt64, whence: UInt32) { self.fh = fh; self.offset = offset; self.whence = whence }
}

public struct FUSECopyFileRangeIn: Sendable, Equatable {
    public static let size = 56
    public var fhIn: UInt64
    public var offsetIn: UInt64
    public var nodeIDOut: UInt64
    public var fhOut: UInt64
    public var offsetOut: UInt64
    public var length: UInt64
    public var flags: UInt64
    public init(fhIn: UInt64, offsetIn: UInt64, nodeIDOut: UInt64, fhOut: UInt64, offsetOut: UInt64, length: UInt64, flags: UInt64) {
        self.fhIn = fhIn; self.offsetIn = offsetIn; self.nodeIDOut = nodeIDOut; self.fhOut = fhOut
        self.offsetOut = offsetOut; self.length = length; self.flags = flags
    }
}
