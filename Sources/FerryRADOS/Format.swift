import FerryCore
#if canImport(Glibc)
import Glibc
#endif

/// `ferry format`, and what every opener checks: the superblock.
public enum RADOSFormat {
    /// Creates an empty file system (superblock and root directory) in an empty namespace.
    /// Refuses (EEXIST) when the namespace already holds one.
    public static func format(_ pool: RADOSPool, blockSize: Int = Layout.defaultBlockSize,
                              shards: Int = Layout.defaultShards) throws(RADOSError) {
        precondition(shards > 0 && shards <= 256 && blockSize >= 4096)
        let generation = UInt64.random(in: 1...UInt64.max)
        let now = Timestamp.now()
        // The root first: a superblock always names a file system that has a root.
        var root = InodeRecord(mode: UInt32(S_IFDIR) | 0o755, uid: 0, gid: 0, nlink: 2, time: now)
        root.parent = Layout.rootIno
        root.generation = generation
        if case .success(let existing?) = pool.xattr(Layout.superObject, Layout.formatXattr) {
            throw RADOSError(EEXIST, explanation: "\(pool.target) already holds a Ferry file system (\(String(decoding: existing, as: UTF8.self)))")
        }
        var rc = pool.write(Layout.inodeObject(Layout.rootIno)) { op in
            op.create(exclusive: false)
            op.setxattr(Layout.inodeXattr, root.encoded())
        }
        if rc < 0 { throw RADOSError(-rc, "creating the root directory in \(pool.target)") }
        rc = pool.write(Layout.superObject) { op in
            op.create(exclusive: true)
            op.setxattr(Layout.blockSizeXattr, Array(String(blockSize).utf8))
            op.setxattr(Layout.shardsXattr, Array(String(shards).utf8))
            op.setxattr(Layout.nextInoXattr, Array(String(Layout.rootIno + 1).utf8))
            op.setxattr(Layout.formatXattr, Array(Layout.formatTag.utf8))
        }
        if rc == -EEXIST { throw RADOSError(EEXIST, explanation: "\(pool.target) is not empty: ferry.super exists (a half-formatted or foreign file system?)") }
        if rc < 0 { throw RADOSError(-rc, "writing the superblock of \(pool.target)") }
    }

    /// Reads and checks the superblock: an unformatted pool, or another format version, is
    /// an error that says so.
    public static func superblock(_ pool: RADOSPool) throws(RADOSError) -> Superblock {
        func attribute(_ name: String) throws(RADOSError) -> String? {
            switch pool.xattr(Layout.superObject, name) {
            case .failure(let e): throw e
            case .success(let v): return v.map { String(decoding: $0, as: UTF8.self) }
            }
        }
        guard let tag = try attribute(Layout.formatXattr) else {
            throw RADOSError(ENOENT, explanation: "\(pool.target) is not formatted: run `ferry format \(pool.target)` first")
        }
        guard tag == Layout.formatTag || tag == Layout.legacyFormatTag else {
            throw RADOSError(EINVAL, explanation: "\(pool.target) holds format '\(tag)'; this ferry reads '\(Layout.formatTag)' "
                             + "(and upgrades '\(Layout.legacyFormatTag)')")
        }
        guard let b = try attribute(Layout.blockSizeXattr).flatMap({ Int($0) }), b >= 4096,
              let s = try attribute(Layout.shardsXattr).flatMap({ Int($0) }), s > 0, s <= 256,
              let n = try attribute(Layout.nextInoXattr).flatMap({ UInt64($0) })
        else { throw RADOSError(EINVAL, explanation: "the superblock of \(pool.target) is damaged") }
        return Superblock(blockSize: b, shards: s, nextIno: n, version: tag == Layout.formatTag ? Layout.formatVersion : 1)
    }

    /// Upgrades a version 1 file system (no object maps) to version 2, with the lease held:
    /// lists the namespace's objects once and records every data object in its inode's object
    /// map (one omap op per inode), then sets the new tag. Idempotent, so a crash halfway
    /// only means doing it again. Returns how many data objects were mapped.
    @discardableResult
    public static func upgrade(_ pool: RADOSPool) throws(RADOSError) -> Int {
        let objects: [String]
        switch pool.listObjects() {
        case .failure(let e): throw e
        case .success(let o): objects = o
        }
        var blocks: [UInt64: [UInt64]] = [:]
        for name in objects {
            if case .data(let ino, let b) = Layout.classify(name) { blocks[ino, default: []].append(b) }
        }
        for (ino, list) in blocks {
            for start in stride(from: 0, to: list.count, by: 1024) {
                let keys = list[start..<min(list.count, start + 1024)].map { (Layout.objectMapKey($0), [UInt8]()) }
                let rc = pool.write(Layout.inodeObject(ino)) { op in op.assertExists(); op.omapSet(keys) }
                // ENOENT: data of an inode that is gone (fsck removes it).
                if rc < 0 && rc != -ENOENT { throw RADOSError(-rc, "recording the object map of inode \(ino)") }
            }
        }
        let rc = pool.write(Layout.superObject) { op in
            op.compareXattrEqual(Layout.formatXattr, Array(Layout.legacyFormatTag.utf8))
            op.setxattr(Layout.formatXattr, Array(Layout.formatTag.utf8))
        }
        if rc < 0 && rc != -ECANCELED { throw RADOSError(-rc, "writing the format version of \(pool.target)") }
        return blocks.values.reduce(0) { $0 + $1.count }
    }

    /// Reserves `Layout.allocationRange` inode numbers: one guarded compound op, so two
    /// allocators can never hand out the same number. Returns the first of the range.
    static func reserveInodes(_ pool: RADOSPool) throws(Errno) -> UInt64 {
        for _ in 0..<16 {
            guard case .success(let seen?) = pool.xattr(Layout.superObject, Layout.nextInoXattr),
                  let first = UInt64(String(decoding: seen, as: UTF8.self)) else { throw .io }
            let rc = pool.write(Layout.superObject) { op in
                op.compareXattrEqual(Layout.nextInoXattr, seen)
                op.setxattr(Layout.nextInoXattr, Array(String(first + Layout.allocationRange).utf8))
            }
            if rc == 0 { return first }
            if rc != -ECANCELED { throw radosErrno(rc) }
        }
        throw .io
    }
}

/// What the guest sees for a librados failure: timeouts and transport trouble are EIO.
func radosErrno(_ rc: Int32) -> Errno {
    switch -rc {
    case ENOENT, EEXIST, ENOSPC, EDQUOT, ENODATA, ERANGE, E2BIG, EROFS, ENAMETOOLONG: return Errno(-rc)
    default: return .io
    }
}
