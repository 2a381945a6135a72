import FerryCore
#if canImport(Glibc)
import Glibc
#endif

/// The on-RADOS format, version 2 (docs/backends/rados.md is the specification: keep them
/// in step). Pure values and names; no I/O.
public enum Layout {
    public static let formatVersion = 2
    public static let formatTag = "ferry-rados 2"
    /// Version 1 had no object maps: a writer (server or `fsck --repair`) upgrades it in place.
    public static let legacyFormatTag = "ferry-rados 1"
    public static let superObject = "ferry.super"
    public static let intentsObject = "ferry.intents"
    /// omap: inodes whose last name is gone, waiting for their objects to be removed.
    public static let purgeObject = "ferry.purge"
    public static let leaseName = "ferry.lease"
    /// xattr of `ferry.super`: the lease holder's client address, for fencing.
    public static let holderXattr = "ferry.holder"

    public static let formatXattr = "ferry.format"
    public static let blockSizeXattr = "ferry.block_size"
    public static let shardsXattr = "ferry.dir_shards"
    public static let nextInoXattr = "ferry.next_ino"
    public static let inodeXattr = "ferry.inode"
    public static let targetXattr = "ferry.target"
    /// omap key prefix of user extended attributes in an inode object.
    public static let userXattrPrefix: [UInt8] = Array("x.".utf8)
    /// omap key prefix of the object map in an inode object: `b.BLOCK` for every data object
    /// that may exist, so truncate, unlink and SEEK_DATA cost what the file stores, not its size.
    public static let objectMapPrefix = "b."

    public static func objectMapKey(_ block: UInt64) -> [UInt8] { Array((objectMapPrefix + hex16(block)).utf8) }
    /// The block an object map key names (nil: not such a key).
    public static func block(ofObjectMapKey key: [UInt8]) -> UInt64? {
        guard key.count == 18, key.starts(with: objectMapPrefix.utf8) else { return nil }
        return UInt64(String(decoding: key[2...], as: UTF8.self), radix: 16)
    }
    public static func purgeKey(_ ino: UInt64) -> [UInt8] { Array(hex16(ino).utf8) }
    public static func ino(ofPurgeKey key: [UInt8]) -> UInt64? {
        key.count == 16 ? UInt64(String(decoding: key, as: UTF8.self), radix: 16) : nil
    }

    public static let rootIno: UInt64 = 1
    /// Inode numbers the allocator reserves at a time.
    public static let allocationRange: UInt64 = 1024
    public static let defaultBlockSize = 4 << 20
    public static let defaultShards = 16

    public static func hex16(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }

    public static func inodeObject(_ ino: UInt64) -> String { "i." + hex16(ino) }
    public static func shardObject(_ ino: UInt64, _ shard: Int) -> String {
        let s = String(shard, radix: 16)
        return "d." + hex16(ino) + "." + (s.count < 2 ? "0" + s : s)
    }
    public static func dataObject(_ ino: UInt64, _ block: UInt64) -> String { "f." + hex16(ino) + "." + hex16(block) }

    /// Which shard of its directory `name` lives in: FNV-1a 64 modulo the shard count.
    public static func shard(of name: UnsafeRawBufferPointer, shards: Int) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in name { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return Int(h % UInt64(shards))
    }
    public static func shard(of name: [UInt8], shards: Int) -> Int {
        name.withUnsafeBytes { shard(of: $0, shards: shards) }
    }

    /// What an object name says it is (for fsck).
    public enum ObjectKind: Equatable {
        case superblock, intents, purge
        case inode(UInt64)
        case shard(UInt64, Int)
        case data(UInt64, UInt64)
        case foreign
    }

    public static func classify(_ name: String) -> ObjectKind {
        if name == superObject { return .superblock }
        if name == intentsObject { return .intents }
        if name == purgeObject { return .purge }
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        switch (parts.first, parts.count) {
        case ("i", 2):
            if parts[1].count == 16, let ino = UInt64(parts[1], radix: 16) { return .inode(ino) }
        case ("d", 3):
            if parts[1].count == 16, let ino = UInt64(parts[1], radix: 16), let s = Int(parts[2], radix: 16) { return .shard(ino, s) }
        case ("f", 3):
            if parts[1].count == 16, let ino = UInt64(parts[1], radix: 16), let b = UInt64(parts[2], radix: 16) { return .data(ino, b) }
        default: break
        }
        return .foreign
    }
}

/// An inode record: the `ferry.inode` xattr of `i.INO`, 96 bytes little-endian.
public struct InodeRecord: Equatable, Sendable {
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var nlink: UInt32
    public var rdev: UInt32 = 0
    public var size: UInt64 = 0
    public var atime: Timestamp
    public var mtime: Timestamp
    public var ctime: Timestamp
    /// Directories: the parent's inode number (what `..` names).
    public var parent: UInt64 = 0
    public var generation: UInt64 = 0
    /// Bytes of data written (capped at `size`): what `st_blocks` reports. Objects are
    /// allocated on write, so a sparse file reports its holes as unallocated.
    public var allocated: UInt64 = 0

    public static let encodedSize = 96

    public init(mode: UInt32, uid: UInt32, gid: UInt32, nlink: UInt32, time: Timestamp) {
        self.mode = mode; self.uid = uid; self.gid = gid; self.nlink = nlink
        atime = time; mtime = time; ctime = time
    }

    public var fileType: UInt32 { mode & UInt32(S_IFMT) }
    public var isDirectory: Bool { fileType == UInt32(S_IFDIR) }
    public var isRegular: Bool { fileType == UInt32(S_IFREG) }

    public func encoded() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Self.encodedSize)
        out.withUnsafeMutableBytes { p in
            p.storeBytes(of: UInt32(1).littleEndian, toByteOffset: 0, as: UInt32.self)
            p.storeBytes(of: mode.littleEndian, toByteOffset: 4, as: UInt32.self)
            p.storeBytes(of: uid.littleEndian, toByteOffset: 8, as: UInt32.self)
            p.storeBytes(of: gid.littleEndian, toByteOffset: 12, as: UInt32.self)
            p.storeBytes(of: nlink.littleEndian, toByteOffset: 16, as: UInt32.self)
            p.storeBytes(of: rdev.littleEndian, toByteOffset: 20, as: UInt32.self)
            p.storeBytes(of: size.littleEndian, toByteOffset: 24, as: UInt64.self)
            for (i, t) in [atime, mtime, ctime].enumerated() {
                p.storeBytes(of: t.seconds.littleEndian, toByteOffset: 32 + 12 * i, as: Int64.self)
                p.storeBytes(of: t.nanoseconds.littleEndian, toByteOffset: 40 + 12 * i, as: UInt32.self)
            }
            p.storeBytes(of: parent.littleEndian, toByteOffset: 68, as: UInt64.self)
            p.storeBytes(of: generation.littleEndian, toByteOffset: 76, as: UInt64.self)
            p.storeBytes(of: allocated.littleEndian, toByteOffset: 84, as: UInt64.self)
        }
        return out
    }

    public init?(decoding bytes: [UInt8]) {
        guard bytes.count >= Self.encodedSize else { return nil }
        let r = bytes.withUnsafeBytes { p -> InodeRecord? in
            guard UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 0, as: UInt32.self)) == 1 else { return nil }
            func u32(_ o: Int) -> UInt32 { UInt32(littleEndian: p.loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
            func u64(_ o: Int) -> UInt64 { UInt64(littleEndian: p.loadUnaligned(fromByteOffset: o, as: UInt64.self)) }
            func time(_ i: Int) -> Timestamp {
                Timestamp(seconds: Int64(bitPattern: u64(32 + 12 * i)), nanoseconds: u32(40 + 12 * i))
            }
            var r = InodeRecord(mode: u32(4), uid: u32(8), gid: u32(12), nlink: u32(16), time: time(0))
            r.rdev = u32(20); r.size = u64(24)
            r.mtime = time(1); r.ctime = time(2)
            r.parent = u64(68); r.generation = u64(76); r.allocated = u64(84)
            return r
        }
        guard let r else { return nil }
        self = r
    }
}

/// A directory entry's omap value: the child's inode number and `DT_*` type.
public struct Dentry: Equatable, Sendable {
    public var ino: UInt64
    public var type: UInt8
    public init(ino: UInt64, type: UInt8) { self.ino = ino; self.type = type }

    public func encoded() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 9)
        out.withUnsafeMutableBytes { $0.storeBytes(of: ino.littleEndian, toByteOffset: 0, as: UInt64.self) }
        out[8] = type
        return out
    }

    public init?(decoding bytes: [UInt8]) {
        guard bytes.count == 9 else { return nil }
        ino = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        type = bytes[8]
    }

    /// DT_* for a mode's file type.
    public static func type(ofMode mode: UInt32) -> UInt8 { UInt8((mode & UInt32(S_IFMT)) >> 12) }
}

/// The superblock's parameters, as read from `ferry.super`.
public struct Superblock: Sendable, Equatable {
    public var blockSize: Int
    public var shards: Int
    public var nextIno: UInt64
    /// 1: no object maps yet (`RADOSFormat.upgrade`); 2: the current format.
    public var version: Int = Layout.formatVersion
}

extension Timestamp {
    static func now() -> Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Timestamp(seconds: Int64(ts.tv_sec), nanoseconds: UInt32(ts.tv_nsec))
    }
}
