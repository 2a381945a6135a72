import CRados
import FerryCore
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// How a RADOS export is served.
public struct RADOSOptions: Sendable {
    /// Serve without the lease: no writes, and attributes re-read from RADOS on every GETATTR.
    public var readOnly = false
    /// The lease's duration; renewed every third of it.
    public var leaseSeconds = 30
    /// Removes unlinked files in the background (tests turn it off to stop a server between
    /// an unlink and its purge, as a crash would).
    public var purgeInBackground = true
    /// Whether the server may start as a migration standby (docs/migration.md, "The RADOS
    /// lease at switch-over"): without the lease, refusing writes, until a migrated state
    /// arrives and it takes the lease over.
    public enum Standby: Sendable { case never, always, whenLeased }
    public var standby = Standby.never
    public init(readOnly: Bool = false, leaseSeconds: Int = 30, purgeInBackground: Bool = true, standby: Standby = .never) {
        self.readOnly = readOnly; self.leaseSeconds = leaseSeconds; self.purgeInBackground = purgeInBackground
        self.standby = standby
    }
}


/// A POSIX namespace kept in a RADOS pool (docs/backends/rados.md). One metadata lock
/// orders every namespace change, so the multi-object sequences of the format happen one at
/// a time and each step's guard sees the state the previous step left. Data I/O runs
/// outside it, spread over the file's objects with asynchronous ops.
/// @unchecked Sendable: the mutable state (inode cache, dirty set, number ranges, intents,
/// lease, hand-over and purge flags) is touched only with `meta` held; the rest is immutable
/// or a lock.
public final class RADOSDriver: FileSystemDriver, @unchecked Sendable {
    public typealias InodeKey = UInt64
    public typealias Inode = RADOSInode
    public typealias File = RADOSFile
    public typealias Directory = RADOSDirectory

    public let pool: RADOSPool
    let superblock: Superblock
    /// The lease while this server is the writer; nil when read-only, a migration standby,
    /// or after it handed the export over. Guarded by `meta`.
    var lease: Lease?
    /// This server gave the lease to a migration's destination (guarded by `meta`): only
    /// `migrationResumedAtSource` takes it back, never a request.
    var handedOver = false
    /// When a standby last tried to take the lease for a request (guarded by `meta`).
    var lastStandbyAttempt = -Double.infinity
    /// The namespace's generation (its root's, random at format): part of every migration
    /// identity, so an inode number from another file system is refused.
    let namespaceGeneration: UInt64
    private var purgeStarted = false
    let options: RADOSOptions
    let logger: Logger
    let meta = Lock()
    /// Every inode the server holds state for, so two names of one file share one record.
    var inodes: [UInt64: WeakInode] = [:]
    var dirtyInodes: [UInt64: RADOSInode] = [:]
    /// The allocator's current range: `nextIno ..< rangeEnd`.
    var nextIno: UInt64 = 0, rangeEnd: UInt64 = 0
    var intentSequence: UInt64 = 0
    let purgeWorker = PurgeWorker()
    /// One purge pass at a time (the worker's, or a caller's of `drainPurges`).
    let purgeLock = Lock()
    var blockSize: UInt64 { UInt64(superblock.blockSize) }

    /// Connects, checks the superblock, takes the lease (unless read-only) and finishes any
    /// rename a previous holder left half done.
    public init(target: RADOSTarget, options: RADOSOptions = RADOSOptions(),
                logger: Logger = Logger(label: "ferry.rados")) throws(RADOSError) {
        pool = try RADOSPool(target)
        superblock = try RADOSFormat.superblock(pool)
        self.options = options
        self.logger = logger
        guard case .success(let rootBytes?) = pool.xattr(Layout.inodeObject(Layout.rootIno), Layout.inodeXattr),
              let rootRecord = InodeRecord(decoding: rootBytes) else {
            throw RADOSError(EIO, explanation: "\(pool.target): the root directory's inode record is missing or damaged; run ferry fsck")
        }
        namespaceGeneration = rootRecord.generation
        intentSequence = UInt64.random(in: 0...(UInt64.max >> 16))
        if options.readOnly {
            if superblock.version < Layout.formatVersion {
                throw RADOSError(EINVAL, explanation: "\(pool.target) holds format \(superblock.version), which a read-only server "
                                 + "cannot upgrade: serve it once read-write, or run ferry fsck --repair")
            }
            return
        }
        if options.standby == .always {
            logger.notice("\(pool.target): waiting as a migration standby, without the lease")
            return
        }
        let lease: Lease
        do throws(RADOSError) {
            lease = try Lease(pool: pool, seconds: options.leaseSeconds, purpose: "ferry server")
        } catch {
            guard error.code == EBUSY, options.standby == .whenLeased else { throw error }
            // Another daemon serves it: this one may be a migration's destination, which
            // takes the lease when the state arrives (and answers writes EIO until then).
            logger.notice("\(pool.target) is served by another ferry: waiting as a migration standby (\(error))")
            return
        }
        try meta.withLock { () throws(RADOSError) in try startWriting(lease) }
    }

    /// Becomes the writer with `lease` (just taken): fences and recovers what a previous
    /// holder left (format upgrade, half-done renames, queued purges), then renews. Called
    /// with `meta` held.
    func startWriting(_ lease: Lease) throws(RADOSError) {
        if let fencing = lease.fencing { logger.notice("\(fencing)") }
        do {
            if superblock.version < Layout.formatVersion {
                let mapped = try RADOSFormat.upgrade(pool)
                logger.notice("upgraded \(pool.target) to format \(Layout.formatVersion): \(mapped) data objects now in object maps")
            }
            try RADOSIntents.finishAll(pool, shards: superblock.shards, logger: logger)
        } catch {
            lease.release()
            throw error
        }
        lease.onTick = { [weak self] in
            guard let self else { return }
            do { try self.writeBackAll() } catch { self.logger.error("write-back at lease renewal failed; retried at the next") }
            self.purgeWorker.wake()
        }
        lease.startRenewing()
        self.lease = lease
        handedOver = false
        if options.purgeInBackground {
            if !purgeStarted {
                purgeStarted = true
                purgeWorker.start { [weak self] in
                    guard let self else { return }
                    do { try self.drainPurges() } catch { self.logger.error("purging unlinked files: \(error); retried later") }
                }
            }
            // What a previous holder left queued.
            purgeWorker.wake()
        }
    }

    /// Writes back everything and gives the lease up. A write-back that fails is logged:
    /// the next holder sees the last state that reached RADOS (as after a crash).
    public func close() {
        purgeWorker.stop()
        if meta.locked({ lease }) != nil {
            do { try writeBackAll() } catch { logger.error("closing \(pool.target): some attributes were not written back") }
        }
        meta.locked { lease }?.release()
    }

    deinit {
        purgeWorker.stop()
        lease?.release()
    }

    // MARK: - Helpers (called with `meta` held)

    func checkWritable() throws(Errno) {
        if options.readOnly { throw .readOnly }
        if lease == nil && !handedOver { takeLeaseForRequests() }
        guard let lease else {
            // A standby, or a source that handed the export over: another daemon writes.
            logger.error("\(pool.target): this server does not hold the lease (a migration standby, or handed over); refusing writes")
            throw .io
        }
        if !lease.isValid {
            logger.error("the lease on \(pool.target) was lost; refusing writes")
            throw .io
        }
    }

    /// A standby that gets requests serves a guest of its own, not a migration (QEMU starts
    /// no ring on the incoming side before the state is loaded): it becomes the writer as
    /// soon as the lease is free (its holder stopped, or its lease expired and is fenced
    /// here), as a server started then would have. At most one attempt a second. Called
    /// with `meta` held.
    private func takeLeaseForRequests() {
        let now = monotonicSeconds()
        guard now - lastStandbyAttempt >= 1 else { return }
        lastStandbyAttempt = now
        guard let taken = try? Lease(pool: pool, seconds: options.leaseSeconds, purpose: "ferry server") else { return }
        forgetCachedState()
        do { try startWriting(taken) } catch { logger.error("\(pool.target): took the lease, but recovering failed: \(error)") }
        if lease != nil { logger.notice("\(pool.target): the lease was free; this standby serves its own guest as the writer") }
    }

    /// The inode `ino`, from memory or from its object; ENOENT when it has none.
    func loadInode(_ ino: UInt64) throws(Errno) -> RADOSInode {
        if let known = inodes[ino]?.inode, !known.removed {
            // Without the lease another server may have changed it.
            if lease == nil, !known.dirty { try refresh(known) }
            return known
        }
        switch pool.xattr(Layout.inodeObject(ino), Layout.inodeXattr) {
        case .failure(let e):
            logger.error("\(e)")
            throw .io
        case .success(nil):
            throw .noEntry
        case .success(let bytes?):
            guard let record = InodeRecord(decoding: bytes) else {
                logger.error("inode \(ino): damaged record (\(bytes.count) bytes)")
                throw .io
            }
            let inode = RADOSInode(ino: ino, record: record)
            if inodes.count > 4 * 65536 { inodes = inodes.filter { $0.value.inode != nil } }
            inodes[ino] = WeakInode(inode: inode)
            return inode
        }
    }

    func loadInodeIfPresent(_ ino: UInt64) throws(Errno) -> RADOSInode? {
        do throws(Errno) { return try loadInode(ino) } catch { if error == .noEntry { return nil }; throw error }
    }

    func refresh(_ inode: RADOSInode) throws(Errno) {
        guard case .success(let bytes?) = pool.xattr(Layout.inodeObject(inode.ino), Layout.inodeXattr),
              let record = InodeRecord(decoding: bytes) else { throw .stale }
        inode.record = record
        inode.names.removeAll()
    }

    /// Writes the record now (assert_exists: a removed inode is never brought back).
    func persist(_ inode: RADOSInode) throws(Errno) {
        // Never unfenced: a server without the lease writes nothing.
        try checkWritable()
        let record = inode.record.encoded()
        let rc = pool.write(Layout.inodeObject(inode.ino)) { op in
            op.assertExists()
            op.setxattr(Layout.inodeXattr, record)
        }
        if rc < 0 {
            logger.error("writing inode \(inode.ino): \(RADOSError(-rc, "setxattr"))")
            throw radosErrno(rc)
        }
        inode.dirty = false
        dirtyInodes[inode.ino] = nil
    }

    func markDirty(_ inode: RADOSInode) {
        inode.dirty = true
        dirtyInodes[inode.ino] = inode
    }

    /// Writes back every dirty record (lease renewal, shutdown, DESTROY, SYNCFS). A record
    /// that cannot be written stays dirty (retried by the next write-back) and the first
    /// error is thrown: success means every record is in RADOS.
    func writeBackAll() throws(Errno) {
        try meta.withLock { () throws(Errno) in
            var failure: Errno?
            for inode in Array(dirtyInodes.values) {
                if inode.removed { dirtyInodes[inode.ino] = nil; continue }
                do throws(Errno) { try persist(inode) } catch { failure = failure ?? error }
            }
            if let failure { throw failure }
        }
    }

    func attributes(_ inode: RADOSInode) -> Attributes {
        let r = inode.record
        let used = r.isRegular ? min(r.allocated, r.size) : r.size
        return Attributes(inode: inode.ino, size: r.size, blocks: (used + 511) / 512,
                          accessTime: r.atime, modificationTime: r.mtime, changeTime: r.ctime,
                          mode: r.mode, linkCount: r.nlink, uid: r.uid, gid: r.gid, rdev: r.rdev,
                          blockSize: 4096)
    }

    func entry(_ inode: RADOSInode) -> Entry {
        Entry(key: inode.ino, inode: inode, attributes: attributes(inode))
    }

    func requireDirectory(_ inode: RADOSInode) throws(Errno) {
        guard inode.record.isDirectory, !inode.removed else { throw inode.removed ? .noEntry : .notDirectory }
    }

    func shardObject(_ dir: UInt64, _ name: [UInt8]) -> String {
        Layout.shardObject(dir, Layout.shard(of: name, shards: superblock.shards))
    }

    /// The entry `name` of `dir`, from the cache or its shard.
    func dentry(_ dir: RADOSInode, _ name: [UInt8]) throws(Errno) -> Dentry? {
        if let cached = dir.names[name] { return cached }
        switch pool.omapValues(shardObject(dir.ino, name), keys: [name]) {
        case .failure(let e):
            logger.error("\(e)")
            throw .io
        case .success(let values):
            let found = values[name].flatMap(Dentry.init(decoding:))
            if dir.names.count > 65536 { dir.names.removeAll(keepingCapacity: true) }
            dir.names[name] = .some(found)
            return found
        }
    }

    func setDentry(_ dir: RADOSInode, _ name: [UInt8], _ value: Dentry) throws(Errno) {
        let rc = pool.write(shardObject(dir.ino, name)) { op in op.omapSet([(name, value.encoded())]) }
        if rc < 0 { throw radosErrno(rc) }
        dir.names[name] = .some(value)
    }

    func removeDentry(_ dir: RADOSInode, _ name: [UInt8]) throws(Errno) {
        let rc = pool.write(shardObject(dir.ino, name)) { op in op.omapRemove([name]) }
        if rc < 0 && rc != -ENOENT { throw radosErrno(rc) }
        dir.names[name] = .some(nil)
    }

    func allocateIno() throws(Errno) -> UInt64 {
        if nextIno >= rangeEnd {
            nextIno = try RADOSFormat.reserveInodes(pool)
            rangeEnd = nextIno + Layout.allocationRange
        }
        defer { nextIno += 1 }
        return nextIno
    }

    func touch(_ dir: RADOSInode) {
        let now = Timestamp.now()
        dir.record.mtime = now
        dir.record.ctime = now
        markDirty(dir)
    }

    /// Makes a new inode and its dentry, in that order (a crash in between leaves an orphan
    /// inode, never a dentry naming nothing).
    func makeNode(_ parent: RADOSInode, _ name: FileName, mode: UInt32, rdev: UInt32 = 0,
                  target: UnsafeRawBufferPointer? = nil, _ caller: Credentials) throws(Errno) -> RADOSInode {
        try checkWritable()
        try requireDirectory(parent)
        let key = Array(name.bytes)
        if try dentry(parent, key) != nil { throw .exists }
        let ino = try allocateIno()
        let now = Timestamp.now()
        let isDirectory = mode & FileMode.typeMask == FileMode.directory
        var permissions = mode & 0o7777 & ~caller.umask
        var gid = caller.gid
        if parent.record.mode & FileMode.setGID != 0 {
            gid = parent.record.gid
            if isDirectory { permissions |= FileMode.setGID }
        }
        var record = InodeRecord(mode: (mode & FileMode.typeMask) | permissions, uid: caller.uid, gid: gid,
                                 nlink: isDirectory ? 2 : 1, time: now)
        record.rdev = rdev
        if isDirectory { record.parent = parent.ino }
        let targetBytes = target.map { Array($0) }
        if let targetBytes { record.size = UInt64(targetBytes.count) }
        let encoded = record.encoded()
        let rc = pool.write(Layout.inodeObject(ino)) { op in
            op.create(exclusive: true)
            op.setxattr(Layout.inodeXattr, encoded)
            if let targetBytes { op.setxattr(Layout.targetXattr, targetBytes) }
        }
        if rc < 0 { throw radosErrno(rc) }
        let inode = RADOSInode(ino: ino, record: record)
        inode.target = targetBytes
        inodes[ino] = WeakInode(inode: inode)
        try setDentry(parent, key, Dentry(ino: ino, type: Dentry.type(ofMode: record.mode)))
        if isDirectory {
            parent.record.nlink += 1
            touch(parent)
            try persist(parent)
        } else {
            touch(parent)
        }
        return inode
    }

    /// Drops one link of a non-directory. The last one queues the inode for purging instead
    /// of writing its record: the queue entry is what says no name is left (a crash after it
    /// leaves the inode queued, never orphaned), so an unlink costs two ops, the dentry and
    /// the entry, whatever the file holds. The worker removes it once no one has it open.
    func dropLink(_ inode: RADOSInode) throws(Errno) {
        if inode.record.nlink > 0 { inode.record.nlink -= 1 }
        inode.record.ctime = Timestamp.now()
        guard inode.record.nlink == 0 else { return try persist(inode) }
        try enqueuePurge(inode)
        if inode.openCount == 0 {
            // Nothing of it is written again: the record goes with the purge.
            inode.dirty = false
            dirtyInodes[inode.ino] = nil
            purgeWorker.wake()
        }
        // Still open: its size and times stay due for write-back, so a migration's
        // destination, which reads the record, sees the bytes written before the unlink.
    }

    /// Removes a directory with no names left: its shards first, its object last.
    func removeInode(_ inode: RADOSInode) throws(Errno) {
        precondition(inode.record.isDirectory, "files are removed through the purge queue")
        let batch = pool.batch()
        var failure: Int32 = 0
        do {
            for s in 0..<superblock.shards {
                batch.remove(Layout.shardObject(inode.ino, s)) { rc in if rc < 0 && rc != -ENOENT { failure = rc } }
            }
        }
        batch.wait()
        if failure < 0 { throw radosErrno(failure) }
        let rc = pool.remove(Layout.inodeObject(inode.ino))
        if rc < 0 && rc != -ENOENT { throw radosErrno(rc) }
        inode.removed = true
        dirtyInodes[inode.ino] = nil
        inodes[inode.ino] = nil
    }

    /// Whether a directory has no entries (every shard empty).
    func isEmpty(_ dir: RADOSInode) throws(Errno) -> Bool {
        let batch = pool.batch()
        var empty = true, failed = false
        for s in 0..<superblock.shards {
            batch.omapList(Layout.shardObject(dir.ino, s), max: 1) { result in
                switch result {
                case .success(let page): if !page.0.isEmpty { empty = false }
                case .failure: failed = true
                }
            }
        }
        batch.wait()
        if failed { throw .io }
        return empty
    }

    // MARK: - FileSystemDriver: names

    public func root() throws(Errno) -> Entry {
        try meta.withLock { () throws(Errno) -> Entry in entry(try loadInode(Layout.rootIno)) }
    }

    public func lookup(_ parent: RADOSInode, _ name: FileName, _ caller: Credentials) throws(Errno) -> Entry {
        try meta.withLock { () throws(Errno) -> Entry in
            try requireDirectory(parent)
            guard let d = try dentry(parent, Array(name.bytes)) else { throw .noEntry }
            guard let inode = try loadInodeIfPresent(d.ino) else {
                // Never written by Ferry (inodes are made before their names); fsck removes it.
                logger.error("\(name.string) in directory \(parent.ino) names missing inode \(d.ino); run ferry fsck")
                throw .noEntry
            }
            return entry(inode)
        }
    }

    public func getattr(_ inode: RADOSInode, _ file: RADOSFile?, _ caller: Credentials) throws(Errno) -> Attributes {
        try meta.withLock { () throws(Errno) -> Attributes in
            if lease == nil, !inode.removed { try refresh(inode) }
            return attributes(inode)
        }
    }

    public func setattr(_ inode: RADOSInode, _ file: RADOSFile?, _ changes: AttributeChanges, _ caller: Credentials) throws(Errno) -> Attributes {
        // A truncate excludes writes: none may create an object the truncate is unmapping.
        if changes.size != nil {
            return try inode.dataLock.exclusive { () throws(Errno) -> Attributes in try applyAttributes(inode, changes, caller) }
        }
        return try applyAttributes(inode, changes, caller)
    }

    private func applyAttributes(_ inode: RADOSInode, _ changes: AttributeChanges, _ caller: Credentials) throws(Errno) -> Attributes {
        try meta.withLock { () throws(Errno) -> Attributes in
            try checkWritable()
            let now = Timestamp.now()
            var r = inode.record
            if let size = changes.size {
                if r.isDirectory { throw .isDirectory }
                guard r.isRegular else { throw .invalid }
                try truncateData(inode, to: size)
                r.size = size
                r.allocated = min(r.allocated, size)
                r.mtime = now
            }
            // Linux drops the set-id bits of a non-directory on every chown (by root too, even
            // to the same ids, even chown(f, -1, -1)) and on a truncate or write by a caller
            // without CAP_FSETID. With HANDLE_KILLPRIV_V2 the kernel leaves that to the server:
            // a chown carries FATTR_KILL_SUIDGID (or, without it, its own new mode), a truncate
            // FATTR_KILL_SUIDGID, and chown(f, -1, -1) and the privilege removal before a write
            // arrive as a SETATTR that changes nothing at all, which the core passes on as
            // `killSuidGid`.
            let chown = (changes.uid != nil || changes.gid != nil) && changes.mode == nil
            if !r.isDirectory && (changes.killSuidGid || chown) {
                r.mode = modeAfterKillingSetID(r, caller)
            }
            if let mode = changes.mode { r.mode = (r.mode & FileMode.typeMask) | (mode & 0o7777) }
            if let uid = changes.uid { r.uid = uid }
            if let gid = changes.gid { r.gid = gid }
            switch changes.accessTime { case .now?: r.atime = now; case .set(let t)?: r.atime = t; case nil: break }
            switch changes.modificationTime { case .now?: r.mtime = now; case .set(let t)?: r.mtime = t; case nil: break }
            r.ctime = now
            inode.record = r
            try persist(inode)
            return attributes(inode)
        }
    }

    public func readlink(_ inode: RADOSInode, into buffer: UnsafeMutableRawBufferPointer, _ caller: Credentials) throws(Errno) -> Int {
        try meta.withLock { () throws(Errno) -> Int in
            guard inode.record.fileType == FileMode.symlink else { throw .invalid }
            if inode.target == nil {
                switch pool.xattr(Layout.inodeObject(inode.ino), Layout.targetXattr, capacity: 4097) {
                case .success(let t?): inode.target = t
                case .success(nil): throw .io
                case .failure: throw .io
                }
            }
            let target = inode.target!
            let n = min(target.count, buffer.count)
            target.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: n) }
            return n
        }
    }

    public func symlink(_ parent: RADOSInode, _ name: FileName, target: UnsafeRawBufferPointer, _ caller: Credentials) throws(Errno) -> Entry {
        try meta.withLock { () throws(Errno) -> Entry in
            if target.count > 4095 { throw .nameTooLong }
            return entry(try makeNode(parent, name, mode: FileMode.symlink | 0o777, target: target,
                                      Credentials(uid: caller.uid, gid: caller.gid, pid: caller.pid)))
        }
    }

    public func mknod(_ parent: RADOSInode, _ name: FileName, mode: UInt32, rdev: UInt32, _ caller: Credentials) throws(Errno) -> Entry {
        try meta.withLock { () throws(Errno) -> Entry in entry(try makeNode(parent, name, mode: mode, rdev: rdev, caller)) }
    }

    public func mkdir(_ parent: RADOSInode, _ name: FileName, mode: UInt32, _ caller: Credentials) throws(Errno) -> Entry {
        try meta.withLock { () throws(Errno) -> Entry in
            entry(try makeNode(parent, name, mode: FileMode.directory | (mode & 0o7777), caller))
        }
    }

    public func unlink(_ parent: RADOSInode, _ name: FileName, _ caller: Credentials) throws(Errno) {
        try meta.withLock { () throws(Errno) in
            try checkWritable()
            try requireDirectory(parent)
            let key = Array(name.bytes)
            guard let d = try dentry(parent, key) else { throw .noEntry }
            let inode = try loadInodeIfPresent(d.ino)
            if let inode, inode.record.isDirectory { throw .isDirectory }
            try removeDentry(parent, key)
            touch(parent)
            if let inode { try dropLink(inode) }
        }
    }

    public func rmdir(_ parent: RADOSInode, _ name: FileName, _ caller: Credentials) throws(Errno) {
        try meta.withLock { () throws(Errno) in
            try checkWritable()
            try requireDirectory(parent)
            let key = Array(name.bytes)
            guard let d = try dentry(parent, key) else { throw .noEntry }
            let dir = try loadInode(d.ino)
            guard dir.record.isDirectory else { throw .notDirectory }
            guard try isEmpty(dir) else { throw .notEmpty }
            try removeDentry(parent, key)
            dir.record.nlink = 0
            try removeInode(dir)
            if parent.record.nlink > 2 { parent.record.nlink -= 1 }
            touch(parent)
            try persist(parent)
        }
    }

    public func link(_ inode: RADOSInode, to newParent: RADOSInode, _ newName: FileName, _ caller: Credentials) throws(Errno) -> Entry {
        try meta.withLock { () throws(Errno) -> Entry in
            try checkWritable()
            try requireDirectory(newParent)
            if inode.record.isDirectory { throw .notPermitted }
            if inode.removed || (inode.record.nlink == 0) { throw .noEntry }
            let key = Array(newName.bytes)
            if try dentry(newParent, key) != nil { throw .exists }
            // The count first: a crash before the name leaves it one too high (fsck lowers it).
            inode.record.nlink += 1
            inode.record.ctime = Timestamp.now()
            try persist(inode)
            try setDentry(newParent, key, Dentry(ino: inode.ino, type: Dentry.type(ofMode: inode.record.mode)))
            touch(newParent)
            return entry(inode)
        }
    }

    // MARK: - Directories

    public func opendir(_ inode: RADOSInode, flags: Int32, _ caller: Credentials) throws(Errno) -> RADOSDirectory {
        try meta.withLock { () throws(Errno) in try requireDirectory(inode) }
        return RADOSDirectory(inode)
    }

    public func readdir(_ directory: RADOSDirectory, at offset: UInt64, _ caller: Credentials,
                        _ emit: (DirectoryEntry) -> Bool) throws(Errno) {
        try directory.lock.withLock { () throws(Errno) in
            if offset == 0 || directory.snapshot == nil {
                directory.snapshot = try listDirectory(directory.inode)
            }
            let entries = directory.snapshot!
            var index = Int(min(offset, UInt64(entries.count)))
            while index < entries.count {
                let e = entries[index]
                let more = e.name.withUnsafeBytes { raw in
                    emit(DirectoryEntry(name: UnsafeRawBufferPointer(rebasing: raw[0..<(raw.count - 1)]),
                                        inode: e.ino, type: UInt32(e.type), nextOffset: UInt64(index + 1)))
                }
                if !more { return }
                index += 1
            }
        }
    }

    /// `.`, `..` and every name, all shards read at once.
    func listDirectory(_ dir: RADOSInode) throws(Errno) -> [(name: [UInt8], ino: UInt64, type: UInt8)] {
        let parentIno = meta.locked { dir.ino == Layout.rootIno ? Layout.rootIno : dir.record.parent }
        var entries: [(name: [UInt8], ino: UInt64, type: UInt8)] = [
            (Array(".".utf8) + [0], dir.ino, 4), (Array("..".utf8) + [0], parentIno, 4),
        ]
        var shards = [[([UInt8], [UInt8])]](repeating: [], count: superblock.shards)
        var incomplete: [Int] = []
        var failed = false
        let batch = pool.batch()
        for s in 0..<superblock.shards {
            batch.omapList(Layout.shardObject(dir.ino, s), max: 8192) { result in
                switch result {
                case .success(let page):
                    shards[s] = page.0
                    if page.1 { incomplete.append(s) }
                case .failure: failed = true
                }
            }
        }
        batch.wait()
        if failed { throw .io }
        for s in incomplete {
            guard case .success(let all) = pool.omapAll(Layout.shardObject(dir.ino, s)) else { throw .io }
            shards[s] = all
        }
        for shard in shards {
            for (name, value) in shard {
                guard let d = Dentry(decoding: value) else { continue }
                entries.append((name + [0], d.ino, d.type))
            }
        }
        return entries
    }

    public func releasedir(_ directory: RADOSDirectory) {}

    public func fsyncdir(_ directory: RADOSDirectory, dataOnly: Bool, _ caller: Credentials) throws(Errno) {
        try meta.withLock { () throws(Errno) in if directory.inode.dirty { try persist(directory.inode) } }
    }

    public func statfs(_ inode: RADOSInode, _ caller: Credentials) throws(Errno) -> FileSystemStatistics {
        guard let s = pool.clusterStatistics() else { throw .io }
        var total = s.kb / 4, free = s.available / 4
        if total == 0 {
            // The cluster reports no capacity without a ceph-mgr: claim a nominal 16 TiB.
            total = 1 << 32
            free = total - min(total / 2, pool.usedBytes() / 4096)
        }
        return FileSystemStatistics(blocks: total, freeBlocks: free, availableBlocks: free,
                                    files: s.objects + 1 << 32, freeFiles: 1 << 32,
                                    blockSize: 4096, fragmentSize: 4096, maximumNameLength: 255)
    }

    public func syncfs(_ inode: RADOSInode, _ caller: Credentials) throws(Errno) { try writeBackAll() }

    public func destroy() {
        do { try writeBackAll() } catch { logger.error("DESTROY: some attributes were not written back; retried at the next lease renewal") }
    }
}
