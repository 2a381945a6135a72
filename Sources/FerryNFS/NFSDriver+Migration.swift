#if canImport(Glibc)
import Glibc
#endif
import FerryCore

/// Live migration of an NFS export (docs/migration.md, "NFS identities"). A node is its
/// NFS file handle, which names the same file from any client of the server: the
/// destination needs no path search, only a GETATTR to see the file is still there. An
/// open file carries its open flags, who opened it, and the hidden names its file has on
/// the server (unlinked while open), which the destination takes over and removes at its
/// own last release.
///
/// NFSv4 needs no open state moved: this driver's READ and WRITE use the anonymous stateid
/// and the OPEN a create makes is closed at once, so no stateid outlives a request. Record
/// locks (v4.1+) are the exception and are not carried: the destination is another NFS
/// client, and the source's locks go with its release of the files.
extension NFSDriver {
    public var supportsMigration: Bool { true }

    static let identityVersion: UInt8 = 1
    /// Hidden names one open file may carry: each is an unlink of one of its names while it
    /// was open, so a real file has a handful.
    static let maximumHiddenNames = 1024
    static let hiddenNameStem = ".ferry-unlinked-"

    var protocolVersion: UInt8 { v4 != nil ? 4 : 3 }

    // MARK: Source

    public func migrationIdentity(ofNode inode: NFSInode, _ options: MigrationOptions) throws(Errno) -> [UInt8] {
        var w = MigrationWriter()
        w.u8(Self.identityVersion)
        w.u8(protocolVersion)
        w.u32(inode.fileType)
        // The file id the handle had here (0: never seen): the destination checks it.
        w.u64(inode.lastKnown.withLock { $0?.inode } ?? 0)
        w.blob(inode.handle.bytes)
        return w.bytes
    }

    public func migrationIdentity(ofFile file: NFSFile, _ options: MigrationOptions) throws(Errno) -> [UInt8] {
        let hidden = openFiles.withLock { $0.byHandle[file.inode.handle]?.hidden ?? [] }
        guard hidden.count <= Self.maximumHiddenNames else { throw Errno(EOVERFLOW) }
        var w = MigrationWriter()
        w.u8(Self.identityVersion)
        w.u32(UInt32(bitPattern: file.flags))
        w.u32(file.opener.uid)
        w.u32(file.opener.gid)
        w.blob(try migrationIdentity(ofNode: file.inode, options))
        w.u32(UInt32(hidden.count))
        for name in hidden {
            w.blob(name.directory.bytes)
            w.blob(Array(name.name.utf8))
            w.u32(name.uid)
            w.u32(name.gid)
        }
        return w.bytes
    }

    public func migrationIdentity(ofDirectory directory: NFSDirectory, _ options: MigrationOptions) throws(Errno) -> [UInt8] {
        var w = MigrationWriter()
        w.u8(Self.identityVersion)
        w.blob(try migrationIdentity(ofNode: directory.inode, options))
        return w.bytes
    }

    /// The state is written: every write this daemon answered goes to stable storage on
    /// the server now (writes behind taken in, COMMIT), so the source host may die once the
    /// guest runs at the destination. A write that failed, or a COMMIT the server refuses,
    /// fails the save; the error stays for the guest's next FSYNC here.
    public func migrationSaved() throws(Errno) {
        let files = openFiles.withLock { Array($0.files.values) }
        for file in files {
            drainWritesBehind(file.inode)
            if let failed = file.writeError.withLock({ $0 }) { throw failed }
            // As its opener, without the groups of the request that opened it (long gone).
            try commit(file, Credentials(uid: file.opener.uid, gid: file.opener.gid, pid: 0))
        }
        migration.withLock { $0.saved = true }
    }

    /// Bytes of answered writes that only this daemon holds (written behind and not yet
    /// answered, or written UNSTABLE and not yet committed), over every open file.
    public var bytesNotYetStable: Int {
        openFiles.withLock { Array($0.files.values) }.reduce(0) { $0 + $1.uncommittedBytes + $1.writeBehindBytes }
    }

    public func migrationResumedAtSource() {
        migration.withLock { $0.saved = false }
    }

    /// At a session's end: whether it is the guest leaving for the destination (which now
    /// owns the hidden names of its open files); and what a refused load found is dropped.
    func sessionEndsMigration() -> Bool {
        migration.withLock { m in
            defer { m = NFSMigration() }
            return m.saved
        }
    }

    // MARK: Destination

    /// Everything in the state was found: registers the files the load reopened, with the
    /// hidden names they brought; from now on this daemon's last release of each file
    /// removes them. (A refused load never gets here: what it found is dropped at its
    /// session's end.)
    public func migrationWillLoad() throws(Errno) {
        let load = migration.withLock { m in defer { m.loading = NFSMigration.Load() }; return m.loading }
        for (file, hidden) in load.files {
            register(file)
            guard !hidden.isEmpty else { continue }
            skipHiddenNames(hidden)
            openFiles.withLock { open in
                for name in hidden where !(open.byHandle[file.inode.handle]?.hidden.contains { $0.directory == name.directory && $0.name == name.name } ?? true) {
                    open.byHandle[file.inode.handle]!.hidden.append(name)
                    open.hiddenIn[name.directory, default: 0] += 1
                }
            }
        }
    }

    /// The source may have made its hidden names as this daemon would (same host, and the
    /// same PID number: every sandboxed daemon is PID 1 of its namespace): this daemon's
    /// own hide from now on counts past them, or its RENAME would replace a file taken over.
    private func skipHiddenNames(_ names: [HiddenName]) {
        let ours = hiddenPrefix + "\(getpid())-"
        for name in names where name.name.hasPrefix(ours) {
            guard let n = UInt64(name.name.dropFirst(ours.count)), n < UInt64.max else { continue }
            hiddenCounter.max(n + 1, ordering: .relaxed)
        }
    }

    struct NodeIdentity {
        var fileType: UInt32
        var fileID: UInt64
        var handle: FileHandle
    }

    func decodeNode(_ bytes: [UInt8]) throws(Errno) -> NodeIdentity {
        try decoding(bytes) { r throws(MigrationError) -> NodeIdentity? in
            guard try r.u8() == Self.identityVersion, try r.u8() == protocolVersion else { return nil }
            let fileType = try r.u32(), fileID = try r.u64()
            let handle = try r.blob()
            // An NFSv4 handle is at most 128 bytes (NFSv3: 64); none is empty.
            guard !handle.isEmpty, handle.count <= 128, fileType & ~UInt32(S_IFMT) == 0 else { return nil }
            return NodeIdentity(fileType: fileType, fileID: fileID, handle: FileHandle(bytes: handle))
        }
    }

    public func migratedNode(_ identity: [UInt8], _ options: MigrationOptions) throws(Errno) -> Entry {
        let id = try decodeNode(identity)
        if id.handle == rootHandle { return try root() }
        // Never another kind of file, nor another file, under the guest's node id.
        func check(_ attributes: Attributes) throws(Errno) {
            guard attributes.fileType == id.fileType, id.fileID == 0 || attributes.inode == id.fileID else { throw .stale }
        }
        // One node object per file within a load: an open file and its node share writes behind.
        if let inode = migration.withLock({ $0.loading.inodes[id.handle] }),
           let attributes = inode.lastKnown.withLock({ $0 }) {
            try check(attributes)
            return Entry(key: id.handle, inode: inode, attributes: attributes)
        }
        // ESTALE when the file is gone from the server: the core's --migration-on-error decides.
        let attributes = try getattr(id.handle, .root)
        try check(attributes)
        let made = entry(id.handle, attributes)
        migration.withLock { $0.loading.inodes[id.handle] = made.inode }
        return made
    }

    public func migratedFile(_ identity: [UInt8], _ options: MigrationOptions) throws(Errno) -> NFSFile {
        var flags: Int32 = 0, uid: UInt32 = 0, gid: UInt32 = 0
        var node: [UInt8] = [], hidden: [HiddenName] = []
        _ = try decoding(identity) { r throws(MigrationError) -> Bool? in
            guard try r.u8() == Self.identityVersion else { return nil }
            flags = Int32(bitPattern: try r.u32())
            uid = try r.u32(); gid = try r.u32()
            node = try r.blob()
            let count = try r.count(limit: Self.maximumHiddenNames, "hidden names")
            for _ in 0..<count {
                let directory = try r.blob(), name = try r.blob()
                let unlinker = (uid: try r.u32(), gid: try r.u32())
                // Only a hidden name of Ferry's own, one component in a directory: the last
                // release REMOVEs it, so a state must not name any other file.
                guard !directory.isEmpty, directory.count <= 128, Self.isHiddenName(name) else { return nil }
                hidden.append((FileHandle(bytes: directory), String(decoding: name, as: UTF8.self), unlinker.uid, unlinker.gid))
            }
            return true
        }
        let entry = try migratedNode(node, options)
        guard entry.inode.isRegularFile else { throw .stale }
        let file = NFSFile(inode: entry.inode, flags: flags, opener: Credentials(uid: uid, gid: gid, pid: 0))
        migration.withLock { $0.loading.files.append((file, hidden)) }
        return file
    }

    public func migratedDirectory(_ identity: [UInt8], _ options: MigrationOptions) throws(Errno) -> NFSDirectory {
        var node: [UInt8] = []
        _ = try decoding(identity) { r throws(MigrationError) -> Bool? in
            guard try r.u8() == Self.identityVersion else { return nil }
            node = try r.blob()
            return true
        }
        let entry = try migratedNode(node, options)
        guard entry.inode.isDirectory else { throw .stale }
        return try opendir(entry.inode, flags: 0, .root)
    }

    static func isHiddenName(_ name: [UInt8]) -> Bool {
        name.count <= 255 && name.starts(with: Array(hiddenNameStem.utf8)) && !name.contains(0) && !name.contains(UInt8(ascii: "/"))
    }

    /// Reads an identity with `body` (nil: not one this daemon can use); every field is
    /// bounds-checked and nothing may follow it.
    private func decoding<T>(_ bytes: [UInt8], _ body: (inout MigrationReader) throws(MigrationError) -> T?) throws(Errno) -> T {
        var r = MigrationReader(bytes)
        do {
            guard let value = try body(&r), r.atEnd else { throw Errno.protocolError }
            return value
        } catch {
            throw .protocolError
        }
    }
}

/// What a driver knows of a migration under way.
struct NFSMigration {
    /// What a load found so far: installed by `migrationWillLoad`, dropped at the session's
    /// end when the load was refused.
    struct Load {
        var inodes: [FileHandle: NFSInode] = [:]
        var files: [(NFSFile, [HiddenName])] = []
    }
    /// Source: a state was saved and the guest has not run here since.
    var saved = false
    var loading = Load()
}
