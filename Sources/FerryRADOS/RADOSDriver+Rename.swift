import CFerry
import FerryCore
#if canImport(Glibc)
import Glibc
#endif

/// RENAME: within one shard object a single op; across shard objects the intent log makes
/// it crash-safe (docs/backends/rados.md, "Atomicity").
extension RADOSDriver {
    public func rename(_ parent: RADOSInode, _ name: FileName, to newParent: RADOSInode, _ newName: FileName,
                       flags: UInt32, _ caller: Credentials) throws(Errno) {
        try meta.withLock { () throws(Errno) in
            try checkWritable()
            try requireDirectory(parent)
            try requireDirectory(newParent)
            let noReplaceFlag = UInt32(FERRY_RENAME_NOREPLACE), exchangeFlag = UInt32(FERRY_RENAME_EXCHANGE)
            let noReplace = flags & noReplaceFlag != 0, exchange = flags & exchangeFlag != 0
            if flags & ~(noReplaceFlag | exchangeFlag) != 0 || (noReplace && exchange) { throw .invalid }
            let sourceKey = Array(name.bytes), targetKey = Array(newName.bytes)
            guard let source = try dentry(parent, sourceKey) else { throw .noEntry }
            let target = try dentry(newParent, targetKey)
            if exchange {
                guard let target else { throw .noEntry }
                try renameExchange(parent, sourceKey, source, newParent, targetKey, target)
                return
            }
            if let target {
                if noReplace { throw .exists }
                if target.ino == source.ino { return }
            }
            let moved = try loadInode(source.ino)
            var replaced: RADOSInode? = nil
            if let target {
                replaced = try loadInodeIfPresent(target.ino)
                if let replaced {
                    if moved.record.isDirectory && !replaced.record.isDirectory { throw .notDirectory }
                    if !moved.record.isDirectory && replaced.record.isDirectory { throw .isDirectory }
                    if replaced.record.isDirectory, try !isEmpty(replaced) { throw .notEmpty }
                }
            }
            let movesDirectory = moved.record.isDirectory && parent !== newParent
            let sourceShard = shardObject(parent.ino, sourceKey), targetShard = shardObject(newParent.ino, targetKey)
            if sourceShard == targetShard {
                // One shard object: both names change in one op.
                let rc = pool.write(sourceShard) { op in
                    op.omapRemove([sourceKey])
                    op.omapSet([(targetKey, source.encoded())])
                }
                if rc < 0 { throw radosErrno(rc) }
                parent.names[sourceKey] = .some(nil)
                newParent.names[targetKey] = .some(source)
            } else {
                let key = try recordRenameIntent(parent, sourceKey, source, newParent, targetKey, target, exchange: false)
                try setDentry(newParent, targetKey, source)
                try removeDentry(parent, sourceKey)
                if movesDirectory {
                    // Before the intent goes: `..` is part of what finishing a rename redoes.
                    moved.record.parent = newParent.ino
                    moved.record.ctime = Timestamp.now()
                    try persist(moved)
                }
                RADOSIntents.forget(pool, key)
            }
            moved.record.ctime = Timestamp.now()
            markDirty(moved)
            touch(parent)
            touch(newParent)
            if movesDirectory {
                // After the names: a crash in between leaves link counts fsck recounts.
                if parent.record.nlink > 2 { parent.record.nlink -= 1 }
                newParent.record.nlink += 1
                try persist(parent)
                try persist(newParent)
            }
            if let replaced {
                if replaced.record.isDirectory {
                    replaced.record.nlink = 0
                    try removeInode(replaced)
                    if newParent.record.nlink > 2 { newParent.record.nlink -= 1 }
                    try persist(newParent)
                } else {
                    try dropLink(replaced)
                }
            }
        }
    }

    /// Writes the intent of a rename across shard objects (finished by the next start or by
    /// fsck if this one stops halfway); answers its key, for `RADOSIntents.forget`.
    private func recordRenameIntent(_ parent: RADOSInode, _ sourceKey: [UInt8], _ source: Dentry,
                                    _ newParent: RADOSInode, _ targetKey: [UInt8], _ target: Dentry?,
                                    exchange: Bool) throws(Errno) -> [UInt8] {
        let intent = RenameIntent(sourceDirectory: parent.ino, sourceName: sourceKey,
                                  targetDirectory: newParent.ino, targetName: targetKey,
                                  moved: source, replaced: target, exchange: exchange)
        return try RADOSIntents.record(pool, intent, sequence: &intentSequence)
    }

    func renameExchange(_ parent: RADOSInode, _ sourceKey: [UInt8], _ source: Dentry,
                        _ newParent: RADOSInode, _ targetKey: [UInt8], _ target: Dentry) throws(Errno) {
        let a = try loadInode(source.ino), b = try loadInode(target.ino)
        let sourceShard = shardObject(parent.ino, sourceKey), targetShard = shardObject(newParent.ino, targetKey)
        if sourceShard == targetShard {
            let rc = pool.write(sourceShard) { op in
                op.omapSet([(sourceKey, target.encoded()), (targetKey, source.encoded())])
            }
            if rc < 0 { throw radosErrno(rc) }
            parent.names[sourceKey] = .some(target)
            newParent.names[targetKey] = .some(source)
        } else {
            let key = try recordRenameIntent(parent, sourceKey, source, newParent, targetKey, target, exchange: true)
            try setDentry(newParent, targetKey, source)
            try setDentry(parent, sourceKey, target)
            if parent !== newParent {
                if a.record.isDirectory { a.record.parent = newParent.ino; try persist(a) }
                if b.record.isDirectory { b.record.parent = parent.ino; try persist(b) }
                if a.record.isDirectory != b.record.isDirectory {
                    let (gains, loses) = a.record.isDirectory ? (newParent, parent) : (parent, newParent)
                    gains.record.nlink += 1
                    if loses.record.nlink > 2 { loses.record.nlink -= 1 }
                    try persist(gains)
                    try persist(loses)
                }
            }
            RADOSIntents.forget(pool, key)
        }
        let now = Timestamp.now()
        a.record.ctime = now; b.record.ctime = now
        markDirty(a); markDirty(b)
        touch(parent); touch(newParent)
    }
}
