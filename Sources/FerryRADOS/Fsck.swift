import FerryCore
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// What `ferry fsck` found, one line each, and whether it was repaired.
public struct FsckFinding: Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        /// A rename a server left half done (finished).
        case pendingIntent = "pending-rename"
        /// A dentry naming an inode that does not exist. Never produced by Ferry's ordering.
        case danglingDentry = "dangling-dentry"
        /// An inode no dentry names: a crash between its creation and its name, or between
        /// the removal of its last name and of itself (a leak).
        case orphanInode = "orphan-inode"
        /// nlink differs from the names counted (a leak when too high).
        case wrongLinkCount = "wrong-nlink"
        /// A directory's `..` field does not name the directory holding it.
        case wrongParent = "wrong-parent"
        /// Data objects past the file's size (a write whose size was not recorded yet).
        case dataPastSize = "data-past-size"
        /// Directory shards or data objects of an inode that no longer exists.
        case strayObject = "stray-object"
        /// An object whose name is not in the format, or an unreadable record.
        case foreignObject = "foreign-object"
        /// An inode queued for purging that no server purged yet (purged).
        case pendingPurge = "pending-purge"
        /// An object map key whose data object does not exist: a crash between the key and
        /// the object's first write, or a write that failed. Harmless (removed).
        case staleMapEntry = "stale-map-entry"
        /// A data object its inode's object map does not list: an unlink or truncate would
        /// leave it behind. Never produced by Ferry's ordering (recorded).
        case unmappedData = "unmapped-data"
        /// A version 1 file system, without object maps (upgraded).
        case oldFormat = "old-format"
    }
    public var kind: Kind
    public var detail: String
    public var repaired: Bool
    public var description: String { "\(kind.rawValue): \(detail)\(repaired ? " (repaired)" : "")" }

    /// Kinds a crash of a server can leave behind (the format's ordering guarantees no others).
    public var isCrashLeftover: Bool {
        switch kind {
        case .pendingIntent, .orphanInode, .wrongLinkCount, .dataPastSize, .strayObject, .pendingPurge, .staleMapEntry: return true
        case .danglingDentry, .wrongParent, .foreignObject, .unmappedData, .oldFormat: return false
        }
    }
}

/// Checks (and repairs) a file system: walks the tree from the root, lists every object,
/// and compares. Run with the lease held, so no server writes meanwhile.
public enum RADOSFsck {
    public static func run(_ pool: RADOSPool, repair: Bool, logger: Logger? = nil) throws(RADOSError) -> [FsckFinding] {
        let sb = try RADOSFormat.superblock(pool)
        var findings: [FsckFinding] = []
        var mapsChecked = true
        if sb.version < Layout.formatVersion {
            if repair { try RADOSFormat.upgrade(pool) } else { mapsChecked = false }
            findings.append(FsckFinding(kind: .oldFormat, detail: "format \(sb.version): files have no object maps", repaired: repair))
        }
        // Pending renames first: finishing them is part of every server start.
        if case .success(let intents) = pool.omapAll(Layout.intentsObject), !intents.isEmpty {
            if repair { try RADOSIntents.finishAll(pool, shards: sb.shards, logger: logger) }
            for (key, _) in intents {
                findings.append(FsckFinding(kind: .pendingIntent, detail: String(decoding: key, as: UTF8.self), repaired: repair))
            }
        }

        // Queued purges: finished (every step is idempotent), or left alone and not reported
        // as orphans.
        var queued = Set<UInt64>()
        switch RADOSObjectMap.queued(pool) {
        case .failure(let e): throw e
        case .success(let inos):
            for ino in inos {
                if repair {
                    do throws(Errno) { try RADOSObjectMap.purge(pool, ino) } catch {
                        throw RADOSError(error.rawValue, "purging inode \(ino)")
                    }
                } else {
                    queued.insert(ino)
                }
                findings.append(FsckFinding(kind: .pendingPurge, detail: Layout.inodeObject(ino), repaired: repair))
            }
        }

        // Every object, by kind.
        let objects: [String]
        switch pool.listObjects() {
        case .failure(let e): throw e
        case .success(let o): objects = o
        }
        var inodeObjects = Set<UInt64>()
        var shardObjects: [UInt64: [Int]] = [:]
        var dataObjects: [UInt64: [UInt64]] = [:]
        for name in objects {
            switch Layout.classify(name) {
            case .superblock, .intents, .purge: break
            case .inode(let ino): inodeObjects.insert(ino)
            case .shard(let ino, let s): shardObjects[ino, default: []].append(s)
            case .data(let ino, let b): dataObjects[ino, default: []].append(b)
            case .foreign: findings.append(FsckFinding(kind: .foreignObject, detail: name, repaired: false))
            }
        }
        var records: [UInt64: InodeRecord] = [:]
        for ino in inodeObjects {
            switch pool.xattr(Layout.inodeObject(ino), Layout.inodeXattr) {
            case .failure(let e): throw e
            case .success(let bytes):
                if let bytes, let r = InodeRecord(decoding: bytes) { records[ino] = r } else {
                    findings.append(FsckFinding(kind: .foreignObject, detail: "\(Layout.inodeObject(ino)) has no readable record", repaired: false))
                }
            }
        }

        // Walk the tree: count names per inode, find each directory's holder.
        var names: [UInt64: Int] = [:]
        var subdirectories: [UInt64: Int] = [:]
        var holder: [UInt64: UInt64] = [Layout.rootIno: Layout.rootIno]
        var queue: [UInt64] = [Layout.rootIno]
        var visited = Set<UInt64>([Layout.rootIno])
        while let dir = queue.popLast() {
            for s in shardObjects[dir] ?? [] {
                let oid = Layout.shardObject(dir, s)
                let entries: [([UInt8], [UInt8])]
                switch pool.omapAll(oid) {
                case .failure(let e): throw e
                case .success(let e): entries = e
                }
                for (name, value) in entries {
                    let display = "\(String(decoding: name, as: UTF8.self)) in directory \(dir)"
                    guard let d = Dentry(decoding: value), let record = records[d.ino] else {
                        if repair { _ = pool.write(oid) { op in op.omapRemove([name]) } }
                        findings.append(FsckFinding(kind: .danglingDentry, detail: display, repaired: repair))
                        continue
                    }
                    if record.isDirectory {
                        // A directory has one name; a second one is dangling by definition.
                        if visited.contains(d.ino) {
                            if repair { _ = pool.write(oid) { op in op.omapRemove([name]) } }
                            findings.append(FsckFinding(kind: .danglingDentry, detail: "\(display): second name of directory \(d.ino)", repaired: repair))
                            continue
                        }
                        visited.insert(d.ino)
                        holder[d.ino] = dir
                        subdirectories[dir, default: 0] += 1
                        queue.append(d.ino)
                    }
                    names[d.ino, default: 0] += 1
                }
            }
        }

        for (ino, record) in records.sorted(by: { $0.key < $1.key }) {
            let oid = Layout.inodeObject(ino)
            let reachable = ino == Layout.rootIno || names[ino] != nil
            if queued.contains(ino) && !reachable { continue }
            if !reachable {
                if repair { removeInode(pool, ino, record: record, shards: shardObjects[ino] ?? [], data: dataObjects[ino] ?? []) }
                findings.append(FsckFinding(kind: .orphanInode, detail: "\(oid) (mode \(String(record.mode, radix: 8)), nlink \(record.nlink))", repaired: repair))
                continue
            }
            var fixed = record
            let expected: UInt32 = record.isDirectory ? UInt32(2 + (subdirectories[ino] ?? 0)) : UInt32(names[ino] ?? 0)
            if record.nlink != expected {
                fixed.nlink = expected
                findings.append(FsckFinding(kind: .wrongLinkCount, detail: "\(oid): nlink \(record.nlink), names \(expected)", repaired: repair))
            }
            if record.isDirectory, let h = holder[ino], record.parent != h {
                fixed.parent = h
                findings.append(FsckFinding(kind: .wrongParent, detail: "\(oid): parent \(record.parent), held by \(h)", repaired: repair))
            }
            if fixed != record && repair {
                let encoded = fixed.encoded()
                _ = pool.write(oid) { op in op.assertExists(); op.setxattr(Layout.inodeXattr, encoded) }
            }
            var blocks = Set(dataObjects[ino] ?? [])
            // Objects wholly past the size are reported (and removed) as data-past-size only.
            var pastSize = Set<UInt64>()
            if record.isRegular {
                let bs = UInt64(sb.blockSize)
                for b in blocks.sorted() where b * bs + (pool.sizeOrZero(Layout.dataObject(ino, b))) > record.size {
                    let obj = Layout.dataObject(ino, b)
                    if b * bs >= record.size {
                        pastSize.insert(b)
                        if repair {
                            _ = pool.remove(obj)
                            _ = pool.write(oid) { op in op.omapRemove([Layout.objectMapKey(b)]) }
                            blocks.remove(b)
                        }
                    } else if repair {
                        _ = pool.truncate(obj, size: record.size - b * bs)
                    }
                    findings.append(FsckFinding(kind: .dataPastSize, detail: "\(obj) past size \(record.size)", repaired: repair))
                }
            }
            if mapsChecked && record.isRegular {
                try checkObjectMap(pool, ino, objects: blocks, ignoring: pastSize, repair: repair, into: &findings)
            }
        }
        // Objects of inodes that do not exist.
        for (ino, shards) in shardObjects where records[ino] == nil {
            for s in shards {
                if repair { _ = pool.remove(Layout.shardObject(ino, s)) }
                findings.append(FsckFinding(kind: .strayObject, detail: Layout.shardObject(ino, s), repaired: repair))
            }
        }
        for (ino, blocks) in dataObjects where records[ino] == nil {
            for b in blocks {
                if repair { _ = pool.remove(Layout.dataObject(ino, b)) }
                findings.append(FsckFinding(kind: .strayObject, detail: Layout.dataObject(ino, b), repaired: repair))
            }
        }
        return findings
    }

    /// Every data object must be in the map (else an unlink would leave it); a key without
    /// an object is a harmless leftover.
    static func checkObjectMap(_ pool: RADOSPool, _ ino: UInt64, objects: Set<UInt64>, ignoring: Set<UInt64>, repair: Bool,
                               into findings: inout [FsckFinding]) throws(RADOSError) {
        let oid = Layout.inodeObject(ino)
        var mapped = Set<UInt64>()
        switch pool.omapAll(oid, prefix: Layout.objectMapPrefix) {
        case .failure(let e): throw e
        case .success(let entries): for (key, _) in entries { if let b = Layout.block(ofObjectMapKey: key) { mapped.insert(b) } }
        }
        let unmapped = objects.subtracting(mapped).subtracting(ignoring).sorted()
        let stale = mapped.subtracting(objects).subtracting(ignoring).sorted()
        if repair && !unmapped.isEmpty {
            _ = pool.write(oid) { op in op.omapSet(unmapped.map { (Layout.objectMapKey($0), []) }) }
        }
        if repair && !stale.isEmpty {
            _ = pool.write(oid) { op in op.omapRemove(stale.map(Layout.objectMapKey)) }
        }
        for b in unmapped {
            findings.append(FsckFinding(kind: .unmappedData, detail: "\(Layout.dataObject(ino, b)) not in the object map of \(oid)", repaired: repair))
        }
        for b in stale {
            findings.append(FsckFinding(kind: .staleMapEntry, detail: "\(oid) maps block \(b), which has no object", repaired: repair))
        }
    }

    static func removeInode(_ pool: RADOSPool, _ ino: UInt64, record: InodeRecord, shards: [Int], data: [UInt64]) {
        for b in data { _ = pool.remove(Layout.dataObject(ino, b)) }
        for s in shards { _ = pool.remove(Layout.shardObject(ino, s)) }
        _ = pool.remove(Layout.inodeObject(ino))
    }
}

extension RADOSPool {
    func sizeOrZero(_ oid: String) -> UInt64 {
        if case .success(let s?) = size(oid) { return s }
        return 0
    }
}
