import Logging

/// Live migration of the server core's state: the negotiated session, every node the
/// guest holds (node id, generation, lookup count, and the driver's identity for it), and
/// every open file and directory by `fh`. The guest keeps its node ids and handles; the
/// destination finds each one again through its own driver. The byte layout is in
/// `MigrationFormat` and docs/migration.md.
///
/// Both directions run with every queue stopped (the transport drained them), so no
/// request changes the tables meanwhile.
extension FUSEServer: MigratableHandler {
    public var canMigrate: Bool { driver.supportsMigration }

    public func saveMigrationState(_ options: MigrationOptions) throws(MigrationError) -> [UInt8] {
        guard driver.supportsMigration else { throw MigrationError("this export's backend cannot migrate") }
        var w = MigrationWriter()
        w.raw(MigrationFormat.magic)
        w.u32(MigrationFormat.version)
        w.u32(0)
        w.u64(session.load(ordering: .acquiring))
        w.u32(policy.maxWrite)
        w.u32(0)

        // An identity the driver cannot give (a deleted file has no path) is sent as
        // failed: the destination's --migration-on-error decides.
        var unidentified = 0
        let (slots, nextGeneration) = nodes.migrationSnapshot()
        w.u64(nextGeneration)
        w.u32(UInt32(slots.count))
        for slot in slots {
            switch slot {
            case .empty:
                w.u8(MigrationFormat.SlotKind.empty.rawValue)
            case .node(_, let inode, let lookups, let generation):
                if let identity = try? driver.migrationIdentity(ofNode: inode, options) {
                    w.u8(MigrationFormat.SlotKind.present.rawValue); w.u64(generation); w.u64(lookups); w.blob(identity)
                } else {
                    unidentified += 1
                    w.u8(MigrationFormat.SlotKind.failed.rawValue); w.u64(generation); w.u64(lookups)
                }
            case .failed(let lookups, let generation):
                w.u8(MigrationFormat.SlotKind.failed.rawValue); w.u64(generation); w.u64(lookups)
            }
        }
        let fileSlots = files.migrationSnapshot()
        w.u32(UInt32(fileSlots.count))
        for slot in fileSlots {
            switch slot {
            case .empty(let g):
                w.u32(g); w.u8(MigrationFormat.SlotKind.empty.rawValue)
            case .open(let file, let g):
                if let identity = try? driver.migrationIdentity(ofFile: file, options) {
                    w.u32(g); w.u8(MigrationFormat.SlotKind.present.rawValue); w.blob(identity)
                } else {
                    unidentified += 1
                    w.u32(g); w.u8(MigrationFormat.SlotKind.failed.rawValue)
                }
            case .failed(let g):
                w.u32(g); w.u8(MigrationFormat.SlotKind.failed.rawValue)
            }
        }
        let directorySlots = directories.migrationSnapshot()
        w.u32(UInt32(directorySlots.count))
        for slot in directorySlots {
            switch slot {
            case .empty(let g):
                w.u32(g); w.u8(MigrationFormat.SlotKind.empty.rawValue)
            case .open(let open, let g):
                if let directory = try? driver.migrationIdentity(ofDirectory: open.directory, options),
                   let inode = try? driver.migrationIdentity(ofNode: open.inode, options) {
                    w.u32(g); w.u8(MigrationFormat.SlotKind.present.rawValue); w.blob(directory); w.blob(inode)
                } else {
                    unidentified += 1
                    w.u32(g); w.u8(MigrationFormat.SlotKind.failed.rawValue)
                }
            case .failed(let g):
                w.u32(g); w.u8(MigrationFormat.SlotKind.failed.rawValue)
            }
        }
        logger.info("migration state saved", metadata: [
            "bytes": "\(w.bytes.count)", "nodes": "\(nodes.count)", "files": "\(files.count)",
            "directories": "\(directories.count)", "unidentified": "\(unidentified)",
        ])
        return w.bytes
    }

    public func loadMigrationState(_ state: [UInt8], _ options: MigrationOptions) throws(MigrationError) -> MigrationLoadReport {
        guard driver.supportsMigration else { throw MigrationError("this export's backend cannot migrate") }
        guard !FUSESessionWord(raw: session.load(ordering: .acquiring)).initialized else {
            throw MigrationError("this export already serves a session; a migration loads into a fresh one")
        }
        var r = MigrationReader(state)
        guard Array(try r.take(MigrationFormat.magic.count)) == MigrationFormat.magic else {
            throw MigrationError("not a Ferry migration state")
        }
        let version = try r.u32()
        guard version == MigrationFormat.version else {
            throw MigrationError("migration state version \(version); this daemon reads version \(MigrationFormat.version)")
        }
        _ = try r.u32()
        let sessionWord = FUSESessionWord(raw: try r.u64())
        let maxWrite = try r.u32()
        _ = try r.u32()
        // The guest keeps the max_write it agreed with the source: a smaller buffer here
        // would refuse its writes.
        guard maxWrite <= policy.maxWrite else {
            throw MigrationError("the source agreed max_write \(maxWrite); this export allows \(policy.maxWrite)")
        }

        var report = MigrationLoadReport()
        // A node or handle that cannot be found: the whole load fails (abort), or that
        // one answers EIO (guest-error).
        func unfound(_ what: String) throws(MigrationError) {
            if options.onError == .abort { throw MigrationError(what) }
            logger.warning("migrated state names something this host cannot find; the guest gets EIO for it",
                           metadata: ["what": "\(what)"])
            report.failed += 1
        }

        let nextGeneration = try r.u64()
        let nodeCount = try r.count(limit: policy.maxNodes, "nodes")
        var restored: [NodeTable<Driver.InodeKey, Driver.Inode>.MigratedSlot] = []
        restored.reserveCapacity(nodeCount)
        let rootKey = nodes.rootKey
        var byKey: [Driver.InodeKey: Driver.Inode] = [:]
        for i in 0..<nodeCount {
            let nodeID = UInt64(i) + 2
            guard let kind = MigrationFormat.SlotKind(rawValue: try r.u8()) else { throw MigrationError("bad slot kind at node \(nodeID)") }
            switch kind {
            case .empty:
                restored.append(.empty)
            case .failed:
                let generation = try r.u64(), lookups = try r.u64()
                try unfound("node \(nodeID): the source could not identify it")
                restored.append(.failed(lookups: lookups, generation: generation))
            case .present:
                let generation = try r.u64(), lookups = try r.u64()
                let identity = try r.blob()
                do {
                    let entry = try driver.migratedNode(identity, options)
                    // Two node ids on one file (or on the root) would merge what the guest
                    // holds apart: a path that now leads elsewhere.
                    guard entry.key != rootKey, byKey[entry.key] == nil else {
                        throw Errno.exists
                    }
                    byKey[entry.key] = entry.inode
                    restored.append(.node(key: entry.key, inode: entry.inode, lookups: lookups, generation: generation))
                    report.nodes += 1
                } catch {
                    try unfound("node \(nodeID): \(error)")
                    restored.append(.failed(lookups: lookups, generation: generation))
                }
            }
        }

        let fileCount = try r.count(limit: policy.maxOpenHandles, "open files")
        var restoredFiles: [HandleTable<Driver.File>.MigratedSlot] = []
        for i in 0..<fileCount {
            let generation = try r.u32()
            guard let kind = MigrationFormat.SlotKind(rawValue: try r.u8()) else { throw MigrationError("bad slot kind at file \(i)") }
            switch kind {
            case .empty: restoredFiles.append(.empty(generation: generation))
            case .failed:
                try unfound("open file \(i): the source could not identify it")
                restoredFiles.append(.failed(generation: generation))
            case .present:
                let identity = try r.blob()
                do {
                    restoredFiles.append(.open(try driver.migratedFile(identity, options), generation: generation))
                    report.files += 1
                } catch {
                    try unfound("open file \(i): \(error)")
                    restoredFiles.append(.failed(generation: generation))
                }
            }
        }

        let directoryCount = try r.count(limit: policy.maxOpenHandles, "open directories")
        var restoredDirectories: [HandleTable<OpenDirectory>.MigratedSlot] = []
        for i in 0..<directoryCount {
            let generation = try r.u32()
            guard let kind = MigrationFormat.SlotKind(rawValue: try r.u8()) else { throw MigrationError("bad slot kind at directory \(i)") }
            switch kind {
            case .empty: restoredDirectories.append(.empty(generation: generation))
            case .failed:
                try unfound("open directory \(i): the source could not identify it")
                restoredDirectories.append(.failed(generation: generation))
            case .present:
                let directoryIdentity = try r.blob(), inodeIdentity = try r.blob()
                do {
                    let directory = try driver.migratedDirectory(directoryIdentity, options)
                    let entry = try driver.migratedNode(inodeIdentity, options)
                    // READDIRPLUS looks names up in the node: the one the table holds, if any.
                    let inode = entry.key == rootKey ? nodes.inode(1)! : (byKey[entry.key] ?? entry.inode)
                    restoredDirectories.append(.open(OpenDirectory(directory: directory, inode: inode), generation: generation))
                    report.directories += 1
                } catch {
                    try unfound("open directory \(i): \(error)")
                    restoredDirectories.append(.failed(generation: generation))
                }
            }
        }
        guard r.atEnd else { throw MigrationError("\(state.count - r.offset) bytes after the end of the state") }

        // Everything found: install it all at once.
        nodes.restore(restored, nextGeneration: nextGeneration)
        files.restore(restoredFiles)
        directories.restore(restoredDirectories)
        session.store(sessionWord.raw, ordering: .releasing)
        logger.info("migration state loaded", metadata: [
            "nodes": "\(report.nodes)", "files": "\(report.files)", "directories": "\(report.directories)",
            "failed": "\(report.failed)",
        ])
        return report
    }
}
