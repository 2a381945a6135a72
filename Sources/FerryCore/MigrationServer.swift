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
        unidentified += saveHandles(files.migrationSnapshot(), into: &w) { file in
            [try? driver.migrationIdentity(ofFile: file, options)]
        }
        unidentified += saveHandles(directories.migrationSnapshot(), into: &w) { open in
            [try? driver.migrationIdentity(ofDirectory: open.directory, options), try? driver.migrationIdentity(ofNode: open.inode, options)]
        }
        // The guest stays stopped from here; if the migration fails, the transport calls
        // `migrationResumedAtSource` before the rings run again.
        do { try driver.migrationSaved() } catch {
            throw MigrationError("the backend could not hand the export over: \(error)")
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

        let nextGeneration = try r.u64()
        let nodeCount = try r.count(limit: policy.maxNodes, "nodes")
        var restored: [NodeTable<Driver.InodeKey, Driver.Inode>.MigratedSlot] = []
        // Not reserved from the count: a state claiming many nodes and giving none must
        // cost no more than its bytes.
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
                try unfound("node \(nodeID): the source could not identify it", &report, options)
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
                    try unfound("node \(nodeID): \(error)", &report, options)
                    restored.append(.failed(lookups: lookups, generation: generation))
                }
            }
        }

        let restoredFiles = try loadHandles(&r, "open file", &report, options,
                                            identity: { (r: inout MigrationReader) throws(MigrationError) in try r.blob() },
                                            open: { (identity: [UInt8]) throws(Errno) in try driver.migratedFile(identity, options) })
        report.files = restoredFiles.filter { if case .open = $0 { true } else { false } }.count
        let restoredDirectories = try loadHandles(
            &r, "open directory", &report, options,
            identity: { (r: inout MigrationReader) throws(MigrationError) in (try r.blob(), try r.blob()) },
            open: { (identity: ([UInt8], [UInt8])) throws(Errno) -> OpenDirectory in
                let directory = try driver.migratedDirectory(identity.0, options)
                let entry = try driver.migratedNode(identity.1, options)
                // READDIRPLUS looks names up in the node: the one the table holds, if any.
                let inode = entry.key == rootKey ? nodes.inode(1)! : (byKey[entry.key] ?? entry.inode)
                return OpenDirectory(directory: directory, inode: inode)
            })
        report.directories = restoredDirectories.filter { if case .open = $0 { true } else { false } }.count
        guard r.atEnd else { throw MigrationError("\(state.count - r.offset) bytes after the end of the state") }

        // Everything found: the backend takes the export over (a RADOS lease), then
        // everything is installed at once.
        do { try driver.migrationWillLoad() } catch {
            throw MigrationError("the backend could not take the export over: \(error)")
        }
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

    public func migrationResumedAtSource() {
        logger.notice("the migration failed after the state was saved; resuming on this daemon")
        driver.migrationResumedAtSource()
    }

    /// Writes one handle table's slots; `identities` gives a value's identities (all or the
    /// slot is sent as failed). Returns how many could not be identified.
    private func saveHandles<Value: Sendable>(_ slots: [HandleTable<Value>.MigratedSlot], into w: inout MigrationWriter,
                                    identities: (Value) -> [[UInt8]?]) -> Int {
        var unidentified = 0
        w.u32(UInt32(slots.count))
        for slot in slots {
            switch slot {
            case .empty(let g):
                w.u32(g); w.u8(MigrationFormat.SlotKind.empty.rawValue)
            case .open(let value, let g):
                let found = identities(value)
                if found.allSatisfy({ $0 != nil }) {
                    w.u32(g); w.u8(MigrationFormat.SlotKind.present.rawValue)
                    for identity in found { w.blob(identity!) }
                } else {
                    unidentified += 1
                    w.u32(g); w.u8(MigrationFormat.SlotKind.failed.rawValue)
                }
            case .failed(let g):
                w.u32(g); w.u8(MigrationFormat.SlotKind.failed.rawValue)
            }
        }
        return unidentified
    }

    /// A node or handle that cannot be found: the whole load fails (abort), or that one
    /// answers EIO (guest-error).
    private func unfound(_ what: String, _ report: inout MigrationLoadReport, _ options: MigrationOptions) throws(MigrationError) {
        if options.onError == .abort { throw MigrationError(what) }
        logger.warning("migrated state names something this host cannot find; the guest gets EIO for it",
                       metadata: ["what": "\(what)"])
        report.failed += 1
    }

    /// One handle table's slots: `identity` reads a present slot's identity from the
    /// stream (always, so the stream stays in step), `open` makes its value here.
    private func loadHandles<Value: Sendable, Identity>(
        _ r: inout MigrationReader, _ what: String, _ report: inout MigrationLoadReport, _ options: MigrationOptions,
        identity: (inout MigrationReader) throws(MigrationError) -> Identity, open: (Identity) throws(Errno) -> Value
    ) throws(MigrationError) -> [HandleTable<Value>.MigratedSlot] {
        let count = try r.count(limit: policy.maxOpenHandles, "\(what)s")
        var slots: [HandleTable<Value>.MigratedSlot] = []
        for i in 0..<count {
            let generation = try r.u32()
            guard let kind = MigrationFormat.SlotKind(rawValue: try r.u8()) else { throw MigrationError("bad slot kind at \(what) \(i)") }
            switch kind {
            case .empty:
                slots.append(.empty(generation: generation))
            case .failed:
                try unfound("\(what) \(i): the source could not identify it", &report, options)
                slots.append(.failed(generation: generation))
            case .present:
                let id = try identity(&r)
                do {
                    slots.append(.open(try open(id), generation: generation))
                } catch {
                    try unfound("\(what) \(i): \(error)", &report, options)
                    slots.append(.failed(generation: generation))
                }
            }
        }
        return slots
    }
}
