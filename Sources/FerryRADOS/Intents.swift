import FerryCore
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// A rename across shard objects, as recorded in `ferry.intents` before its first step.
struct RenameIntent: Equatable {
    var sourceDirectory: UInt64
    var sourceName: [UInt8]
    var targetDirectory: UInt64
    var targetName: [UInt8]
    /// The entry being moved, and the one it replaces (or, for an exchange, swaps with).
    var moved: Dentry
    var replaced: Dentry?
    var exchange: Bool

    func encoded() -> [UInt8] {
        var out: [UInt8] = [1, exchange ? 1 : 0]
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func bytes(_ b: [UInt8]) { withUnsafeBytes(of: UInt16(b.count).littleEndian) { out += $0 }; out += b }
        u64(sourceDirectory); u64(targetDirectory)
        out += moved.encoded()
        out += replaced?.encoded() ?? [UInt8](repeating: 0, count: 9)
        bytes(sourceName); bytes(targetName)
        return out
    }

    init(sourceDirectory: UInt64, sourceName: [UInt8], targetDirectory: UInt64, targetName: [UInt8],
         moved: Dentry, replaced: Dentry?, exchange: Bool) {
        self.sourceDirectory = sourceDirectory; self.sourceName = sourceName
        self.targetDirectory = targetDirectory; self.targetName = targetName
        self.moved = moved; self.replaced = replaced; self.exchange = exchange
    }

    init?(decoding b: [UInt8]) {
        guard b.count >= 2 + 16 + 18 + 4, b[0] == 1 else { return nil }
        func u64(_ o: Int) -> UInt64 { b.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: o, as: UInt64.self)) } }
        func u16(_ o: Int) -> Int { Int(b[o]) | Int(b[o + 1]) << 8 }
        exchange = b[1] != 0
        sourceDirectory = u64(2); targetDirectory = u64(10)
        guard let m = Dentry(decoding: Array(b[18..<27])), let r = Dentry(decoding: Array(b[27..<36])) else { return nil }
        moved = m
        replaced = r.ino == 0 ? nil : r
        let n1 = u16(36)
        guard b.count >= 38 + n1 + 2 else { return nil }
        sourceName = Array(b[38..<(38 + n1)])
        let n2 = u16(38 + n1)
        guard b.count == 40 + n1 + n2 else { return nil }
        targetName = Array(b[(40 + n1)...])
    }
}

/// The intent log: what makes a rename across shard objects crash-safe. Every step of a
/// rename is idempotent, so finishing one is doing the steps again.
enum RADOSIntents {
    /// Writes the intent; returns its key.
    static func record(_ pool: RADOSPool, _ intent: RenameIntent, sequence: inout UInt64) throws(Errno) -> [UInt8] {
        sequence += 1
        let key = Array(("rename." + Layout.hex16(sequence)).utf8)
        let rc = pool.write(Layout.intentsObject) { op in op.omapSet([(key, intent.encoded())]) }
        if rc < 0 { throw radosErrno(rc) }
        return key
    }

    /// Removes a finished intent (best effort: a leftover one is finished again harmlessly).
    static func forget(_ pool: RADOSPool, _ key: [UInt8]) {
        _ = pool.write(Layout.intentsObject) { op in op.omapRemove([key]) }
    }

    /// Finishes every recorded rename; returns how many there were.
    @discardableResult
    static func finishAll(_ pool: RADOSPool, shards: Int, logger: Logger?) throws(RADOSError) -> Int {
        let entries: [([UInt8], [UInt8])]
        switch pool.omapAll(Layout.intentsObject) {
        case .failure(let e): throw e
        case .success(let e): entries = e
        }
        for (key, value) in entries {
            guard let intent = RenameIntent(decoding: value) else {
                logger?.error("ignoring a damaged intent \(String(decoding: key, as: UTF8.self))")
                continue
            }
            try finish(pool, intent, shards: shards)
            logger?.notice("finished an interrupted rename (\(String(decoding: key, as: UTF8.self)))")
            forget(pool, key)
        }
        return entries.count
    }

    static func finish(_ pool: RADOSPool, _ i: RenameIntent, shards: Int) throws(RADOSError) {
        let targetShard = Layout.shardObject(i.targetDirectory, Layout.shard(of: i.targetName, shards: shards))
        let sourceShard = Layout.shardObject(i.sourceDirectory, Layout.shard(of: i.sourceName, shards: shards))
        var rc = pool.write(targetShard) { op in op.omapSet([(i.targetName, i.moved.encoded())]) }
        if rc < 0 { throw RADOSError(-rc, "finishing a rename in \(targetShard)") }
        if i.exchange, let other = i.replaced {
            rc = pool.write(sourceShard) { op in op.omapSet([(i.sourceName, other.encoded())]) }
            if rc < 0 { throw RADOSError(-rc, "finishing an exchange in \(sourceShard)") }
            try setParent(pool, other, i.sourceDirectory)
        } else {
            // Remove the old name only if it still names the moved inode.
            if case .success(let values) = pool.omapValues(sourceShard, keys: [i.sourceName]),
               let v = values[i.sourceName], Dentry(decoding: v)?.ino == i.moved.ino {
                rc = pool.write(sourceShard) { op in op.omapRemove([i.sourceName]) }
                if rc < 0 { throw RADOSError(-rc, "finishing a rename in \(sourceShard)") }
            }
        }
        try setParent(pool, i.moved, i.targetDirectory)
    }

    /// A moved directory's `..`.
    static func setParent(_ pool: RADOSPool, _ d: Dentry, _ parent: UInt64) throws(RADOSError) {
        guard d.type == 4 else { return }
        let oid = Layout.inodeObject(d.ino)
        guard case .success(let bytes?) = pool.xattr(oid, Layout.inodeXattr),
              var record = InodeRecord(decoding: bytes), record.parent != parent else { return }
        record.parent = parent
        let encoded = record.encoded()
        let rc = pool.write(oid) { op in op.assertExists(); op.setxattr(Layout.inodeXattr, encoded) }
        if rc < 0 && rc != -ENOENT { throw RADOSError(-rc, "setting the parent of \(oid)") }
    }
}
