// Reply structs, field for field as in <linux/fuse.h> 7.42, and their little-endian
// encoding. Every encoder writes exactly `size` bytes (padding zeroed).

/// A reply struct that can be written into a reply buffer.
public protocol FUSEEncodable {
    static var size: Int { get }
    /// Writes exactly `Self.size` bytes at `pointer`, which must have room for them.
    func encode(to pointer: UnsafeMutableRawPointer)
}

/// `struct fuse_attr` (88 bytes).
public struct FUSEAttr: Sendable, Equatable {
    public var ino: UInt64 = 0
    public var size: UInt64 = 0
    public var blocks: UInt64 = 0
    public var atime: UInt64 = 0
    public var mtime: UInt64 = 0
    public var ctime: UInt64 = 0
    public var atimensec: UInt32 = 0
    public var mtimensec: UInt32 = 0
    public var ctimensec: UInt32 = 0
    public var mode: UInt32 = 0
    public var nlink: UInt32 = 0
    public var uid: UInt32 = 0
    public var gid: UInt32 = 0
    public var rdev: UInt32 = 0
    public var blksize: UInt32 = 0
    public var flags: UInt32 = 0         // FUSE_ATTR_SUBMOUNT, FUSE_ATTR_DAX
    public init() {}
}

/// `struct fuse_entry_out` (128 bytes).
public struct FUSEEntryOut: Sendable, Equatable {
    public var nodeID: UInt64 = 0
    public var generation: UInt64 = 0
    public var entryValid: UInt64 = 0
    public var attrValid: UInt64 = 0
    public var entryValidNsec: UInt32 = 0
    public var attrValidNsec: UInt32 = 0
    public var attr = FUSEAttr()
    public init() {}
}

/// `struct fuse_attr_out` (104 bytes).
public struct FUSEAttrOut: Sendable, Equatable {
    public var attrValid: UInt64 = 0
    public var attrValidNsec: UInt32 = 0
    public var attr = FUSEAttr()
    public init() {}
}

/// `struct fuse_open_out` (16 bytes; before 7.40 the last word was padding).
public struct FUSEOpenOut: Sendable, Equatable {
    public var fh: UInt64 = 0
    public var openFlags: UInt32 = 0     // FOPEN_* bits
    /// With FOPEN_PASSTHROUGH: the id FUSE_DEV_IOC_BACKING_OPEN gave the backing file.
    public var backingID: Int32 = 0
    public init(fh: UInt64 = 0, openFlags: UInt32 = 0, backingID: Int32 = 0) {
        self.fh = fh; self.openFlags = openFlags; self.backingID = backingID
    }
}

/// FOPEN_* bits of `fuse_open_out.open_flags`.
public enum FUSEOpenReplyFlag {
    public static let directIO: UInt32 = 1 << 0
    public static let keepCache: UInt32 = 1 << 1
    public static let nonSeekable: UInt32 = 1 << 2
    public static let cacheDir: UInt32 = 1 << 3
    public static let stream: UInt32 = 1 << 4
    public static let noflush: UInt32 = 1 << 5
    public static let parallelDirectWrites: UInt32 = 1 << 6
    /// FOPEN_PASSTHROUGH (7.40): `backing_id` names the file the kernel reads and writes.
    public static let passthrough: UInt32 = 1 << 7
}

/// `struct fuse_write_out` (8 bytes).
public struct FUSEWriteOut: Sendable, Equatable {
    public var size: UInt32 = 0
    public init(size: UInt32 = 0) { self.size = size }
}

/// `struct fuse_statfs_out` (80 bytes: `struct fuse_kstatfs`).
public struct FUSEStatfsOut: Sendable, Equatable {
    public var blocks: UInt64 = 0
    public var bfree: UInt64 = 0
    public var bavail: UInt64 = 0
    public var files: UInt64 = 0
    public var ffree: UInt64 = 0
    public var bsize: UInt32 = 0
    public var namelen: UInt32 = 0
    public var frsize: UInt32 = 0
    public init() {}
}

/// `struct fuse_getxattr_out` (8 bytes): the size answer when the request's size is 0.
public struct FUSEGetxattrOut: Sendable, Equatable {
    public var size: UInt32 = 0
    public init(size: UInt32 = 0) { self.size = size }
}

/// `struct fuse_lk_out` (24 bytes).
public struct FUSELockOut: Sendable, Equatable {
    public var lock: FUSEFileLock
    public init(lock: FUSEFileLock) { self.lock = lock }
}

/// `struct fuse_bmap_out` (8 bytes).
public struct FUSEBmapOut: Sendable, Equatable {
    public var block: UInt64 = 0
    public init(block: UInt64 = 0) { self.block = block }
}

/// `struct fuse_lseek_out` (8 bytes).
public struct FUSELseekOut: Sendable, Equatable {
    public var offset: UInt64 = 0
    public init(offset: UInt64 = 0) { self.offset = offset }
}

/// `struct fuse_poll_out` (8 bytes).
public struct FUSEPollOut: Sendable, Equatable {
    public var revents: UInt32 = 0
    public init(revents: UInt32 = 0) { self.revents = revents }
}

/// `struct fuse_init_out` (64 bytes).
public struct FUSEInitOut: Sendable, Equatable {
    public var major: UInt32 = 7
    public var minor: UInt32 = 42
    public var maxReadahead: UInt32 = 0
    /// Low 32 bits go to `flags`, high 32 bits to `flags2` (with FUSE_INIT_EXT).
    public var flags: UInt64 = 0
    public var maxBackground: UInt16 = 0
    public var congestionThreshold: UInt16 = 0
    public var maxWrite: UInt32 = 0
    public var timeGranularity: UInt32 = 0
    public var maxPages: UInt16 = 0
    public var mapAlignment: UInt16 = 0
    /// 7.40, read by the kernel only with FUSE_PASSTHROUGH.
    public var maxStackDepth: UInt32 = 0
    public init() {}
}
