import FerryCore
#if canImport(Glibc)
import Glibc
#endif

/// Live migration of a RADOS export (docs/migration.md, "RADOS identities" and "The RADOS
/// lease at switch-over").
///
/// A node is its inode number, which means the same file to every daemon on the namespace
/// (numbers are never reused: the allocator only moves forward), plus the namespace's
/// generation, so a number from another or a reformatted namespace is refused instead of
/// naming whatever file has it there, and the file type, so a node never becomes another
/// kind of file. No path is searched for; the migration mode does not matter.
extension RADOSDriver {
    public var supportsMigration: Bool { true }

    static let identityVersion: UInt8 = 1
    /// version u8, file type u32, inode number u64, namespace generation u64.
    static let nodeIdentitySize = 21

    // MARK: Source

    public func migrationIdentity(ofNode inode: RADOSInode, _ options: MigrationOptions) throws(Errno) -> [UInt8] {
        try meta.withLock { () throws(Errno) -> [UInt8] in try nodeIdentity(inode) }
    }

    public func migrationIdentity(ofFile file: RADOSFile, _ options: MigrationOptions) throws(Errno) -> [UInt8] {
        var w = MigrationWriter()
        w.u8(Self.identityVersion)
        w.u32(UInt32(bitPattern: file.flags))
        w.blob(try meta.withLock { () throws(Errno) -> [UInt8] in try nodeIdentity(file.inode) })
        return w.bytes
    }

    public func migrationIdentity(ofDirectory directory: RADOSDirectory, _ options: MigrationOptions) throws(Errno) -> [UInt8] {
        var w = MigrationWriter()
        w.u8(Self.identityVersion)
        w.blob(try meta.withLock { () throws(Errno) -> [UInt8] in try nodeIdentity(directory.inode) })
        return w.bytes
    }

    /// Called with `meta` held.
    private func nodeIdentity(_ inode: RADOSInode) throws(Errno) -> [UInt8] {
        // A removed inode (purged, or an rmdir'ed directory) names nothing any more.
        if inode.removed { throw .stale }
        var w = MigrationWriter()
        w.u8(Self.identityVersion)
        w.u32(inode.record.fileType)
        w.u64(inode.ino)
        w.u64(namespaceGeneration)
        return w.bytes
    }

    // MARK: Destination

    public func migratedNode(_ identity: [UInt8], _ options: MigrationOptions) throws(Errno) -> Entry {
        try meta.withLock { () throws(Errno) -> Entry in entry(try findNode(identity)) }
    }

    public func migratedFile(_ identity: [UInt8], _ options: MigrationOptions) throws(Errno) -> RADOSFile {
        var r = MigrationReader(identity)
        guard let version = try? r.u8(), version == Self.identityVersion,
              let flags = try? r.u32(), let node = try? r.blob(), r.atEnd else { throw .invalid }
        return try meta.withLock { () throws(Errno) -> RADOSFile in
            let inode = try findNode(node)
            guard inode.record.isRegular else { throw .stale }
            // Writes check the lease when they come, as on the source.
            inode.openCount += 1
            return RADOSFile(inode, flags: Int32(bitPattern: flags) & ~(O_CREAT | O_EXCL | O_TRUNC))
        }
    }

    public func migratedDirectory(_ identity: [UInt8], _ options: MigrationOptions) throws(Errno) -> RADOSDirectory {
        var r = MigrationReader(identity)
        guard let version = try? r.u8(), version == Self.identityVersion, let node = try? r.blob(), r.atEnd else { throw .invalid }
        let inode = try meta.withLock { () throws(Errno) -> RADOSInode in
            let inode = try findNode(node)
            guard inode.record.isDirectory else { throw .stale }
            return inode
        }
        // READDIR offsets are indices into the listing, which is in shard and key order:
        // the same on every daemon, so a guest part-way through goes on where it was.
        return RADOSDirectory(inode)
    }

    /// The inode a node identity names, checked to be the same file. Called with `meta` held.
    private func findNode(_ identity: [UInt8]) throws(Errno) -> RADOSInode {
        guard identity.count == Self.nodeIdentitySize else { throw .invalid }
        var r = MigrationReader(identity)
        guard let version = try? r.u8(), version == Self.identityVersion,
              let fileType = try? r.u32(), let ino = try? r.u64(), let generation = try? r.u64() else { throw .invalid }
        guard generation == namespaceGeneration else {
            logger.error("a migrated node names inode \(ino) of another namespace (generation \(generation), this one \(namespaceGeneration))")
            throw .stale
        }
        let inode = try loadInode(ino)
        guard inode.record.fileType == fileType else {
            logger.error("a migrated node names inode \(ino) as file type \(fileType); it is \(inode.record.fileType) here")
            throw .stale
        }
        return inode
    }

    // MARK: The lease at switch-over

    /// Source: everything written behind goes to RADOS, then the lease is given back, so
    /// the destination's first read sees every acknowledged write. A write-back that fails
    /// refuses the save (this server stays the writer and the guest runs on here).
    public func migrationSaved() throws(Errno) {
        guard let held = meta.locked({ lease }) else { return }
        try writeBackAll()
        // No purge pass is between its check of the lease and its removals when it goes.
        purgeLock.locked { meta.locked { lease = nil; handedOver = true } }
        held.release()
        logger.notice("\(pool.target): migration state saved, everything written back, lease released")
    }

    /// Destination: takes the lease the source released, waiting for it a bounded time (a
    /// source that died before releasing leaves it to expire; taking it then fences that
    /// source).
    public func migrationWillLoad() throws(Errno) {
        try takeLeaseBack("migrated state arrived")
    }

    /// Source, the migration failed after the save: the lease back before any request is
    /// served, or, if another server holds it, every write answers EIO (never unfenced).
    public func migrationResumedAtSource() {
        do throws(Errno) { try takeLeaseBack("migration failed; resuming") } catch {
            logger.error("\(pool.target): could not take the lease back after a failed migration; writes answer EIO")
        }
    }

    /// Whether this server writes the namespace, as `ferry exports` and the metrics report
    /// it: read from the driver's own lease state, nothing remembered beside it.
    public enum LeaseRole: String, Sendable, CaseIterable {
        /// Holds the lease and renews it.
        case writer
        /// Opened without it (`RADOSOptions.standby`): another daemon held it. It waits for
        /// a migrated state, or takes it for a guest of its own once it is free.
        case standby
        /// Gave it to a migration's destination at save: takes it back only if that
        /// migration fails and the guest resumes here.
        case handedOver = "handed-over"
        /// Held it, but a renewal failed: writes answer EIO.
        case lost
        /// A read-only export: no lease at all.
        case readOnly = "read-only"
    }

    public var leaseRole: LeaseRole {
        if options.readOnly { return .readOnly }
        return meta.locked {
            if let lease { return lease.isValid ? .writer : .lost }
            return handedOver ? .handedOver : .standby
        }
    }

    /// Who holds the namespace's lease now ("client.4123 at 127.0.0.1:0/2785"), asked of the
    /// cluster (one lock listing on the superblock); nil when nobody does.
    public func currentLeaseHolder() -> String? {
        pool.lockOwner(Layout.superObject, name: Layout.leaseName).map { "\($0.client) at \($0.address)" }
    }

    /// The guest's connection ended. After a handover that guest now runs at the
    /// destination (or is gone): this server is a plain standby again, so a new guest of its
    /// own (`ferry serve` keeps the export listening) becomes the writer once the lease is
    /// free, instead of answering writes EIO for ever. A migration that fails after the save
    /// resumes the guest on the same connection (`migrationResumedAtSource`), never here.
    public func sessionEnded() {
        meta.locked { if lease == nil { handedOver = false } }
    }

    /// How long a server waits for the lease at switch-over: a holder that died without
    /// releasing it loses it this long after its last renewal.
    var leaseWaitSeconds: Double { Double(max(3, options.leaseSeconds)) + 5 }

    private func takeLeaseBack(_ why: String) throws(Errno) {
        if options.readOnly || meta.locked({ lease != nil }) { return }
        let deadline = monotonicSeconds() + leaseWaitSeconds
        var taken: Lease?
        while taken == nil {
            do throws(RADOSError) {
                taken = try Lease(pool: pool, seconds: options.leaseSeconds, purpose: "ferry server")
            } catch {
                guard error.code == EBUSY, monotonicSeconds() < deadline else {
                    logger.error("\(pool.target): \(why), but the lease could not be taken: \(error)")
                    throw error.code == EBUSY ? Errno(EBUSY) : .io
                }
                usleep(200_000)
            }
        }
        // Another server wrote meanwhile: nothing cached here is known to be current.
        do {
            try meta.withLock { () throws(RADOSError) in
                forgetCachedState()
                try startWriting(taken!)
            }
        } catch {
            logger.error("\(pool.target): \(why), but recovering after the previous holder failed: \(error)")
            throw .io
        }
        logger.notice("\(pool.target): \(why); this server holds the lease")
    }

    /// Re-reads every record held in memory and drops cached names and block maps. Called
    /// with `meta` held, before this server writes anything.
    func forgetCachedState() {
        for (ino, weak) in inodes {
            guard let inode = weak.inode else { inodes[ino] = nil; continue }
            inode.mappedBlocks.removeAll()
            inode.target = nil
            do { try refresh(inode) } catch {
                // Gone (purged by the other server): it answers ESTALE, never another file.
                inode.removed = true
                inodes[ino] = nil
            }
        }
        dirtyInodes.removeAll()
    }
}
