#if canImport(Glibc)
import Glibc
#endif
import CNFS
import FerryCore
import Logging
import Synchronization

/// Serves an NFS export: NFSv3 through libnfs's RPC layer, NFSv4.0 to 4.2 through Ferry's own
/// client (RPCSocket, NFS4Wire, NFS4Session). A node is an NFS file handle; every call goes
/// to the server with the caller's AUTH_SYS identity (uid, gid and the groups the request
/// carries), so the server enforces permissions and ownership. What the version cannot
/// express (extended attributes and fallocate before v4.2, locks, O_TMPFILE, rename flags)
/// answers ENOSYS, EOPNOTSUPP or EINVAL, never a pretended success.
/// See docs/backends/nfs.md.
public final class NFSDriver: FileSystemDriver, Sendable {
    /// What the NFS client counted: connections made, calls sent again after a broken
    /// connection, requests that gave up with EIO at the export's timeout.
    public var counters: [BackendCounter] {
        [
            BackendCounter(name: "nfs_connects", help: "Connections made to the NFS server (first ones and reconnects).",
                           value: client.connectsMade.load(ordering: .relaxed)),
            BackendCounter(name: "nfs_retries", help: "NFS calls sent again after their connection broke.",
                           value: client.callsRetried.load(ordering: .relaxed)),
            BackendCounter(name: "nfs_timeouts", help: "Requests answered EIO because the NFS server did not answer in time.",
                           value: client.timeouts.load(ordering: .relaxed)),
            BackendCounter(name: "nfs_writes_behind", help: "WRITEs answered before the NFS server answered them (write-behind).",
                           value: UInt64(writesBehind.load(ordering: .relaxed))),
            BackendCounter(name: "nfs4_client_states", help: "NFSv4 client ids (v4.0) or sessions (v4.1+) made: more than one means the server restarted or a lease was lost.",
                           value: nfs4StatesMade),
            BackendCounter(name: "nfs_commits_behind", help: "COMMITs sent along with a WRITE to release retained uncommitted data.",
                           value: UInt64(commitsBehind.load(ordering: .relaxed))),
        ]
    }

    public typealias Inode = NFSInode
    public typealias InodeKey = FileHandle
    public typealias File = NFSFile
    public typealias Directory = NFSDirectory

    let client: NFSClient
    let logger: Logger
    let rootHandle: FileHandle
    /// NFSv4 state; nil for an NFSv3 export.
    var v4: NFS4Session? { client.v4 }
    /// Largest READ and WRITE the server takes in one call (FSINFO).
    let readMax: Int, writeMax: Int
    let openFiles = Mutex<OpenFiles>(OpenFiles())
    /// Uncommitted bytes per open file from which a WRITE takes a COMMIT of them along
    /// ("COMMIT-behind"): what is kept for sending again stays this small, in recycled memory.
    let commitBehind = 8 << 20
    /// Uncommitted bytes per open file beyond which a WRITE waits for a COMMIT (when
    /// COMMIT-behind cannot keep up): the bound on what is kept.
    let uncommittedLimit = 64 << 20
    /// Unanswered write-behind bytes per file beyond which a WRITE waits for the oldest
    /// replies (WriteBehind.swift); 0 makes every WRITE wait for its reply.
    let writeBehindLimit: Int
    /// Recycled memory for the copies of uncommitted writes (RetainedWrites.swift).
    let retainPool = RetainPool(maxIdle: 16)
    /// Prefix of hidden names of files unlinked while open: `.ferry-unlinked-HOST-PID-N`.
    public let hiddenPrefix: String
    let hiddenCounter = Atomic<UInt64>(0)
    /// NFSv4 client ids (v4.0) or sessions (v4.1+) made so far; 0 on NFSv3.
    public var nfs4StatesMade: UInt64 { v4?.established.load(ordering: .relaxed) ?? 0 }
    /// Statistics for tests and metrics.
    public let resentAfterVerifierChange = Atomic<Int>(0)
    public let commitsBehind = Atomic<Int>(0)
    public let writesBehind = Atomic<Int>(0)
    /// Ticks once per write behind taken in (`NFSInode.lastTakenIn`): a LOOKUP or READDIR
    /// notes it before asking the server, so attributes it brought back are known to be
    /// possibly older than a write the guest was already answered for.
    let takeInClock = Atomic<UInt64>(0)
    /// `takeInClock` when a released file's hidden names last began or finished going: a
    /// link count asked of the server before then may or may not count one of them.
    let lastHiddenChange = Atomic<UInt64>(0)
    /// NFSv4.2 operations the server lacks (NFSDriver+V42.swift).
    let missing42 = Mutex<NFS42Support>([])
    /// A live migration under way (NFSDriver+Migration.swift).
    let migration = Mutex<NFSMigration>(NFSMigration())

    /// Mounts the export (MOUNT protocol) and asks the server for its transfer sizes.
    public init(options: NFSOptions, logger: Logger, writeBehindLimit: Int = 8 << 20) throws(Errno) {
        self.logger = logger
        self.writeBehindLimit = writeBehindLimit
        client = NFSClient(options: options, logger: logger)
        rootHandle = options.version != .v3 ? try client.root4(path: options.path) : try client.mountRoot()
        let hostHash = String(hostName().utf8.reduce(UInt32(2166136261)) { ($0 ^ UInt32($1)) &* 16777619 }, radix: 16)
        hiddenPrefix = ".ferry-unlinked-\(hostHash)-"
        let handle = rootHandle
        let sizes = client.v4 != nil ? try client.transferSizes4(handle) : try client.call(.root, on: handle, rpc_nfs3_fsinfo_async, { fh in FSINFO3args(fsroot: fh) }, reply: { (res: FSINFO3res) -> Result<(Int, Int), Errno> in
            let ok = res.FSINFO3res_u.resok
            return .success((Int(ok.rtmax), Int(ok.wtmax)))
        })
        // Some servers report 0 ("no preference"); keep calls within what libnfs handles well.
        readMax = max(4096, min(sizes.0 == 0 ? 1 << 20 : sizes.0, 1 << 20))
        var writeMax = max(4096, min(sizes.1 == 0 ? 1 << 20 : sizes.1, 1 << 20))
        // A v4.1 session bounds every request: a WRITE and its COMPOUND stay within it.
        let sessionLimit = client.sessionRequestLimit
        if sessionLimit > 0 { writeMax = max(4096, min(writeMax, (sessionLimit - 1024) & ~4095)) }
        self.writeMax = writeMax
        client.startLeaseKeeper()
        logger.info("NFSv\(options.version) export \(options.server):\(options.path) mounted (rsize \(readMax), wsize \(writeMax), \(options.connections) connections)")
    }

    // MARK: - Nodes

    public func root() throws(Errno) -> Entry {
        let attributes = try getattr(rootHandle, .root)
        return Entry(key: rootHandle, inode: NFSInode(handle: rootHandle, fileType: attributes.fileType), attributes: attributes)
    }

    func entry(_ handle: FileHandle, _ attributes: Attributes, existing: (FileHandle) -> NFSInode? = { _ in nil }) -> Entry {
        remembered(Entry(key: handle, inode: existing(handle) ?? NFSInode(handle: handle, fileType: attributes.fileType), attributes: attributes))
    }

    /// `entry`, its attributes kept as its node's last known (`NFSInode.lastKnown`).
    func remembered(_ entry: Entry) -> Entry {
        entry.inode.lastKnown.withLock { $0 = entry.attributes }
        return entry
    }

    /// A node and the attributes the server gave for it when `takeInClock` was at `asked`,
    /// hidden names left out of its link count.
    func entry(_ handle: FileHandle, _ attributes: Attributes, asked: UInt64, _ caller: Credentials) throws(Errno) -> Entry {
        entry(handle, try hiddenAdjusted(attributes, handle, asked: asked, caller))
    }

    public func lookup(_ parent: NFSInode, _ name: FileName, _ caller: Credentials) throws(Errno) -> Entry {
        try lookup(parent, name, caller, existing: { _ in nil })
    }

    public func lookup(_ parent: NFSInode, _ name: FileName, _ caller: Credentials,
                       existing: (FileHandle) -> NFSInode?) throws(Errno) -> Entry {
        if let listed = takeReaddirEntry(parent, name) {
            return try entry(listed.handle, listed.attributes, asked: listed.asked, existing: existing, caller)
        }
        let asked = takeInClock.load(ordering: .sequentiallyConsistent)
        let (handle, attributes) = try inDirectory(parent.handle, caller) { caller throws(Errno) in
            try lookupHandle(parent.handle, name.cString, caller)
        }
        return try entry(handle, attributes, asked: asked, existing: existing, caller)
    }

    /// The entry of `handle`, whose `attributes` the server gave when `takeInClock` was at
    /// `asked` or later. If it is a node with writes behind, they are taken in first and the
    /// attributes asked again, so its size is never older than what WRITE answered; so too
    /// if one was taken in since `asked`: the server may have answered before it applied
    /// that write (the guest, answered for the write, already expects its size), and the
    /// drain that took it in may have ended before this check.
    func entry(_ handle: FileHandle, _ attributes: Attributes, asked: UInt64, existing: (FileHandle) -> NFSInode?,
               _ caller: Credentials) throws(Errno) -> Entry {
        guard let inode = existing(handle) else { return try entry(handle, attributes, asked: asked, caller) }
        let behind = inode.writesBehind.withLock({ $0.bytes > 0 })
        guard behind || inode.lastTakenIn.load(ordering: .sequentiallyConsistent) > asked else {
            return remembered(Entry(key: handle, inode: inode, attributes: try hiddenAdjusted(attributes, handle, asked: asked, caller)))
        }
        drainWritesBehind(inode)
        return remembered(Entry(key: handle, inode: inode, attributes: try visibleAttributes(handle, caller)))
    }

    /// What READDIRPLUS said about `name` a moment ago, if the core is looking up the
    /// entries of a READDIRPLUS reply right now.
    private func takeReaddirEntry(_ parent: NFSInode, _ name: FileName) -> (handle: FileHandle, attributes: Attributes, asked: UInt64)? {
        parent.readdirEntries.withLock { entries in
            entries.isEmpty ? nil : entries[Array(name.bytes)]
        }
    }

    func lookupHandle(_ directory: FileHandle, _ name: UnsafePointer<CChar>, _ caller: Credentials) throws(Errno) -> (FileHandle, Attributes) {
        if v4 != nil { return try lookup4(directory, name, caller) }
        let found = try client.call(caller, on: directory, rpc_nfs3_lookup_async, { fh in LOOKUP3args(what: diropargs3(dir: fh, name: UnsafeMutablePointer(mutating: name))) }, reply: { (res: LOOKUP3res) -> Result<(FileHandle, Attributes?), Errno> in
            let ok = res.LOOKUP3res_u.resok
            return .success((FileHandle(ok.object), attributes(ok.obj_attributes)))
        })
        return (found.0, try attributesOrFetch(found.1, found.0, caller))
    }

    func getattr(_ handle: FileHandle, _ caller: Credentials) throws(Errno) -> Attributes {
        if v4 != nil { return try getattr4(handle, caller) }
        return try client.call(caller, on: handle, rpc_nfs3_getattr_async, { fh in GETATTR3args(object: fh) }, reply: { (res: GETATTR3res) in
            .success(Attributes(res.GETATTR3res_u.resok.obj_attributes))
        })
    }

    /// The attributes a reply carried, or a GETATTR when it did not.
    func attributesOrFetch(_ attributes: Attributes?, _ handle: FileHandle, _ caller: Credentials) throws(Errno) -> Attributes {
        if let attributes { return attributes }
        return try getattr(handle, caller)
    }

    public func getattr(_ inode: NFSInode, _ file: NFSFile?, _ caller: Credentials) throws(Errno) -> Attributes {
        drainWritesBehind(inode)
        do throws(Errno) {
            let attributes = try visibleAttributes(inode.handle, caller)
            inode.lastKnown.withLock { $0 = attributes }
            return attributes
        } catch where error == Errno(ESTALE) {
            // Gone from the server while open here (removed by this guest's other process or
            // by another client): what fstat of an open, removed file gives. A node not open
            // keeps ESTALE, so the kernel looks its name up again (and finds ENOENT).
            guard file != nil || inode.opens.load(ordering: .relaxed) > 0,
                  var last = inode.lastKnown.withLock({ $0 }) else { throw error }
            last.linkCount = 0
            return last
        }
    }

    /// GETATTR, hidden names left out of the link count.
    func visibleAttributes(_ handle: FileHandle, _ caller: Credentials) throws(Errno) -> Attributes {
        let asked = takeInClock.load(ordering: .sequentiallyConsistent)
        return try hiddenAdjusted(try getattr(handle, caller), handle, asked: asked, caller)
    }

    /// A file unlinked while open still has its hidden names on the server (one per name
    /// unlinked); the client must see the link count the unlinks left. `attributes` were
    /// asked of the server when `takeInClock` was at `asked`: if a released file's hidden
    /// names began or finished going since, or are going now, the server's count may or
    /// may not have had them, so it is asked again (the kernel keeps the count it is given:
    /// ferry-churn saw a link count one too high right after an unlink).
    func hiddenAdjusted(_ attributes: Attributes, _ handle: FileHandle, asked: UInt64, _ caller: Credentials) throws(Errno) -> Attributes {
        var attributes = attributes, asked = asked
        // Bounded: REMOVEs under way for this file are answered within a round trip or two;
        // a server that stops answering them leaves the count as the last GETATTR had it.
        for attempt in 0..<1000 {
            let (hidden, going) = openFiles.withLock { ($0.hiddenCount(handle), $0.hiddenBeingRemoved[handle] != nil) }
            if !going && lastHiddenChange.load(ordering: .sequentiallyConsistent) <= asked || attempt == 999 {
                guard hidden > 0, attributes.linkCount > 0 else { return attributes }
                var adjusted = attributes
                adjusted.linkCount -= min(attributes.linkCount, UInt32(hidden))
                return adjusted
            }
            if going { usleep(500); continue }
            asked = takeInClock.load(ordering: .sequentiallyConsistent)
            attributes = try getattr(handle, caller)
        }
        return attributes
    }

    /// Ticks `takeInClock` for a released file's hidden names beginning or finishing to go.
    func hiddenRemovalTick() {
        lastHiddenChange.max(takeInClock.add(1, ordering: .sequentiallyConsistent).newValue, ordering: .sequentiallyConsistent)
    }

    public func setattr(_ inode: NFSInode, _ file: NFSFile?, _ changes: AttributeChanges, _ caller: Credentials) throws(Errno) -> Attributes {
        // nfstime3 cannot carry it: refuse before anything changes (sending it would store a
        // wrapped time, and with it any other change in this call).
        if v4 == nil, !nfs3Representable(changes.accessTime) || !nfs3Representable(changes.modificationTime) {
            throw Errno(EOVERFLOW)
        }
        var s = unchangedAttributes()
        if var mode = changes.mode {
            if changes.killSuidGid { mode &= ~UInt32(S_ISUID | S_ISGID) }
            s.mode.set_it = 1; s.mode.set_mode3_u.mode = mode & 0o7777
        }
        if let uid = changes.uid { s.uid.set_it = 1; s.uid.set_uid3_u.uid = uid }
        if let gid = changes.gid { s.gid.set_it = 1; s.gid.set_gid3_u.gid = gid }
        if let size = changes.size { s.size.set_it = 1; s.size.set_size3_u.size = size }
        (s.atime.set_it, s.atime.set_atime_u.atime) = nfsTime(changes.accessTime)
        (s.mtime.set_it, s.mtime.set_mtime_u.mtime) = nfsTime(changes.modificationTime)
        // A WRITE still unanswered could land after this change (a truncate, a time).
        drainWritesBehind(inode)
        if changes.size != nil, let file { try commit(file, caller) }
        let handle = inode.handle
        // A symlink's times set to "now" cannot be told from times left alone by the reply's
        // times; its ctime can (any change moves it): see the check below.
        let setsTimeNow = changes.accessTime == .now || changes.modificationTime == .now
        let ctimeBefore = setsTimeNow && inode.fileType == UInt32(S_IFLNK) ? try getattr(handle, caller).changeTime : nil
        let asked = takeInClock.load(ordering: .sequentiallyConsistent)
        var after = try setattrAsKernelAllowed(handle, s, times: ClientTimes(changes), caller)
        // The kernel asks us to drop set-id bits with this change (a truncate); NFS has no
        // flag for it, and the caller may not own the file: the owner drops them after.
        if changes.mode == nil && changes.killSuidGid { after = try clearSetID(handle, after, caller) }
        // A server may accept a time it cannot store (nfs-ganesha's VFS FSAL and symlinks):
        // say so rather than report a change that did not happen.
        if case .set(let t)? = changes.modificationTime, after.modificationTime.seconds != t.seconds { throw .notSupported }
        if case .set(let t)? = changes.accessTime, after.accessTime.seconds != t.seconds { throw .notSupported }
        if let ctimeBefore, after.changeTime == ctimeBefore { throw .notSupported }
        return try hiddenAdjusted(after, handle, asked: asked, caller)
    }

    func setattr(_ handle: FileHandle, _ s: sattr3, times: ClientTimes = ClientTimes(), _ caller: Credentials) throws(Errno) -> Attributes? {
        if v4 != nil { return try setattr4(handle, s, times: times, caller) }
        return try client.call(caller, on: handle, rpc_nfs3_setattr_async, { fh in
            var args = SETATTR3args()
            args.object = fh
            args.new_attributes = s
            args.guard.check = 0
            return args
        }, reply: { (res: SETATTR3res) in
            return .success(attributes(res.SETATTR3res_u.resok.obj_wcc.after))
        })
    }

    public func readlink(_ inode: NFSInode, into buffer: UnsafeMutableRawBufferPointer, _ caller: Credentials) throws(Errno) -> Int {
        let handle = inode.handle
        if v4 != nil { return try readlink4(handle, into: buffer, caller) }
        return try client.call(caller, on: handle, rpc_nfs3_readlink_async, { fh in READLINK3args(symlink: fh) }, reply: { (res: READLINK3res) in
            guard let target = res.READLINK3res_u.resok.data else { return .success(0) }
            let n = min(strlen(target), buffer.count)
            buffer.baseAddress!.copyMemory(from: target, byteCount: n)
            return .success(n)
        })
    }

    // MARK: - Making and removing names

    /// The reply of CREATE, MKDIR, SYMLINK and MKNOD: the new handle and attributes, either
    /// of which a server may leave out (then LOOKUP / GETATTR fill in).
    private func made(_ parent: NFSInode, _ name: FileName, _ handle: FileHandle?, _ attributes: Attributes?,
                      _ caller: Credentials) throws(Errno) -> Entry {
        guard let handle else {
            let (h, a) = try lookupHandle(parent.handle, name.cString, caller)
            return entry(h, a)
        }
        return entry(handle, try attributesOrFetch(attributes, handle, caller))
    }

    typealias Made = (FileHandle?, Attributes?)

    public func mkdir(_ parent: NFSInode, _ name: FileName, mode: UInt32, _ caller: Credentials) throws(Errno) -> Entry {
        try inDirectory(parent.handle, caller) { caller throws(Errno) -> Entry in
            let directory = parent.handle
            if v4 != nil {
                let (h, a) = try create4(directory, name, type: NF4DIR, mode: mode & ~caller.umask, caller)
                return entry(h, a)
            }
            let (h, a) = try client.call(caller, on: directory, rpc_nfs3_mkdir_async, { fh in
                MKDIR3args(where: diropargs3(dir: fh, name: UnsafeMutablePointer(mutating: name.cString)),
                           attributes: createAttributes(mode: mode & ~caller.umask))
            }, reply: { (res: MKDIR3res) -> Result<Made, Errno> in
                return .success((handle(res.MKDIR3res_u.resok.obj), attributes(res.MKDIR3res_u.resok.obj_attributes)))
            })
            return try made(parent, name, h, a, caller)
        }
    }

    public func symlink(_ parent: NFSInode, _ name: FileName, target: UnsafeRawBufferPointer, _ caller: Credentials) throws(Errno) -> Entry {
        try inDirectory(parent.handle, caller) { caller throws(Errno) -> Entry in
            let directory = parent.handle
            if v4 != nil {
                let (h, a) = try create4(directory, name, type: NF4LNK, mode: 0o777, linkTarget: target, caller)
                return entry(h, a)
            }
            let arguments = { (fh: nfs_fh3) -> SYMLINK3args in
                var args = SYMLINK3args()
                args.where = diropargs3(dir: fh, name: UnsafeMutablePointer(mutating: name.cString))
                args.symlink.symlink_attributes = createAttributes(mode: 0o777)
                // Sound: the core guarantees a NUL right after the target's bytes.
                args.symlink.symlink_data = UnsafeMutablePointer(mutating: target.baseAddress!.assumingMemoryBound(to: CChar.self))
                return args
            }
            let reply = { (res: SYMLINK3res) -> Result<Made, Errno> in
                .success((handle(res.SYMLINK3res_u.resok.obj), attributes(res.SYMLINK3res_u.resok.obj_attributes)))
            }
            let (h, a) = target.count <= NFSDriver.libnfsSymlinkTarget
                ? try client.call(caller, on: directory, rpc_nfs3_symlink_async, arguments, reply: reply)
                : try client.callOnOwnSocket(caller, on: directory, procedure: UInt32(NFS3_SYMLINK), size: NFSDriver.longCallSize,
                                             zdr_SYMLINK3args, zdr_SYMLINK3res, arguments, reply: reply)
            return try made(parent, name, h, a, caller)
        }
    }

    public func mknod(_ parent: NFSInode, _ name: FileName, mode: UInt32, rdev: UInt32, _ caller: Credentials) throws(Errno) -> Entry {
        try inDirectory(parent.handle, caller) { caller throws(Errno) -> Entry in
            if mode & UInt32(S_IFMT) == UInt32(S_IFREG) {
                let (entry, opened) = try create(parent, name, mode: mode, flags: O_EXCL | O_WRONLY, caller)
                release(opened.file, flags: 0, caller)
                return entry
            }
            var what = mknoddata3()
            let attributes = createAttributes(mode: mode & ~caller.umask)
            switch mode & UInt32(S_IFMT) {
            case UInt32(S_IFIFO): what.type = NF3FIFO; what.mknoddata3_u.pipe_attributes = attributes
            case UInt32(S_IFSOCK): what.type = NF3SOCK; what.mknoddata3_u.sock_attributes = attributes
            case UInt32(S_IFCHR), UInt32(S_IFBLK):
                what.type = mode & UInt32(S_IFMT) == UInt32(S_IFCHR) ? NF3CHR : NF3BLK
                what.mknoddata3_u.chr_device = devicedata3(dev_attributes: attributes,
                                                           spec: specdata3(specdata1: deviceMajor(rdev), specdata2: deviceMinor(rdev)))
            default: throw .invalid
            }
            let directory = parent.handle
            if v4 != nil {
                let type: nfs_ftype4 = [NF3FIFO: NF4FIFO, NF3SOCK: NF4SOCK, NF3CHR: NF4CHR, NF3BLK: NF4BLK][what.type] ?? NF4FIFO
                let (h, a) = try create4(directory, name, type: type, mode: mode & ~caller.umask,
                                         device: (deviceMajor(rdev), deviceMinor(rdev)), caller)
                return entry(h, a)
            }
            let (h, a) = try client.call(caller, on: directory, rpc_nfs3_mknod_async, { fh in MKNOD3args(where: diropargs3(dir: fh, name: UnsafeMutablePointer(mutating: name.cString)), what: what) }, reply: { (res: MKNOD3res) -> Result<Made, Errno> in
                return .success((handle(res.MKNOD3res_u.resok.obj), FerryNFS.attributes(res.MKNOD3res_u.resok.obj_attributes)))
            })
            return try made(parent, name, h, a, caller)
        }
    }

    public func create(_ parent: NFSInode, _ name: FileName, mode: UInt32, flags: Int32, _ caller: Credentials) throws(Errno) -> (Entry, OpenedFile<NFSFile>) {
        try inDirectory(parent.handle, caller) { caller throws(Errno) -> (Entry, OpenedFile<NFSFile>) in
            let directory = parent.handle
            // Without O_EXCL the file may be one with hidden names (open, and unlinked elsewhere).
            let asked = takeInClock.load(ordering: .sequentiallyConsistent)
            if v4 != nil {
                let (h, a) = try createFile4(directory, name, mode: mode & ~caller.umask, exclusive: flags & O_EXCL != 0,
                                             truncate: flags & O_TRUNC != 0 && flags & O_EXCL == 0, caller)
                let made = try entry(h, a, asked: asked, caller)
                guard made.inode.isRegularFile else { throw .exists }
                return (made, opened(made.inode, flags: flags, caller))
            }
            let (h, a) = try client.call(caller, on: directory, rpc_nfs3_create_async, { fh in
                var args = CREATE3args()
                args.where = diropargs3(dir: fh, name: UnsafeMutablePointer(mutating: name.cString))
                // GUARDED fails on an existing name (O_EXCL); UNCHECKED opens what is there.
                args.how.mode = flags & O_EXCL != 0 ? GUARDED : UNCHECKED
                args.how.createhow3_u.obj_attributes = createAttributes(mode: mode & ~caller.umask)
                if flags & O_TRUNC != 0 && flags & O_EXCL == 0 {
                    args.how.createhow3_u.obj_attributes.size.set_it = 1
                    args.how.createhow3_u.obj_attributes.size.set_size3_u.size = 0
                }
                return args
            }, reply: { (res: CREATE3res) -> Result<Made, Errno> in
                return .success((handle(res.CREATE3res_u.resok.obj), attributes(res.CREATE3res_u.resok.obj_attributes)))
            })
            var entry = try made(parent, name, h, a, caller)
            guard entry.inode.isRegularFile else { throw .exists }
            entry.attributes = try hiddenAdjusted(entry.attributes, entry.key, asked: asked, caller)
            return (entry, opened(entry.inode, flags: flags, caller))
        }
    }

    public func link(_ inode: NFSInode, to newParent: NFSInode, _ newName: FileName, _ caller: Credentials) throws(Errno) -> Entry {
        try inDirectory(newParent.handle, caller) { caller throws(Errno) -> Entry in
            let file = inode.handle, directory = newParent.handle
            // The reply's link count includes names hidden while the file is open, as GETATTR's does.
            let asked = takeInClock.load(ordering: .sequentiallyConsistent)
            if v4 != nil {
                return Entry(key: file, inode: inode, attributes: try hiddenAdjusted(try link4(file, directory, newName, caller), file, asked: asked, caller))
            }
            let a = try client.call(caller, { rpc, cb, data in
                file.withNFS { fileFH in
                    directory.withNFS { dirFH in
                        var args = LINK3args(file: fileFH, link: diropargs3(dir: dirFH, name: UnsafeMutablePointer(mutating: newName.cString)))
                        return rpc_nfs3_link_async(rpc, cb, &args, data)
                    }
                }
            }, decode: { reply -> Result<Attributes?, Errno> in
                let res = reply.assumingMemoryBound(to: LINK3res.self).pointee
                guard res.status == NFS3_OK else { return .failure(self.client.failure(nfs3: res.status)) }
                return .success(attributes(res.LINK3res_u.resok.file_attributes))
            })
            return Entry(key: file, inode: inode, attributes: try hiddenAdjusted(try attributesOrFetch(a, file, caller), file, asked: asked, caller))
        }
    }

    public func unlink(_ parent: NFSInode, _ name: FileName, _ caller: Credentials) throws(Errno) {
        try inDirectory(parent.handle, caller) { caller throws(Errno) -> Void in
            try removeOrHide(parent.handle, name.cString, caller, evenIfHidden: false) { () throws(Errno) in
                try remove(parent.handle, name.cString, caller)
            }
        }
    }

    func remove(_ directory: FileHandle, _ name: UnsafePointer<CChar>, _ caller: Credentials) throws(Errno) {
        if v4 != nil { return try remove4(directory, name, caller) }
        try client.call(caller, on: directory, rpc_nfs3_remove_async, { fh in REMOVE3args(object: diropargs3(dir: fh, name: UnsafeMutablePointer(mutating: name))) }, reply: { (res: REMOVE3res) in
            return .success(())
        })
    }

    public func rmdir(_ parent: NFSInode, _ name: FileName, _ caller: Credentials) throws(Errno) {
        try inDirectory(parent.handle, caller) { caller throws(Errno) -> Void in
            let asked = takeInClock.load(ordering: .sequentiallyConsistent)
            do throws(Errno) { try removeDirectory(parent.handle, name.cString, caller) } catch {
                // Not empty only because of files unlinked and closed whose release is on its way?
                guard error == .notEmpty, waitForHiddenNames(in: parent.handle, name.cString, asked: asked, caller) else { throw error }
                try removeDirectory(parent.handle, name.cString, caller)
            }
        }
    }

    func removeDirectory(_ directory: FileHandle, _ name: UnsafePointer<CChar>, _ caller: Credentials) throws(Errno) {
        if v4 != nil { return try remove4(directory, name, caller) }
        try client.call(caller, on: directory, rpc_nfs3_rmdir_async, { fh in RMDIR3args(object: diropargs3(dir: fh, name: UnsafeMutablePointer(mutating: name))) }, reply: { (res: RMDIR3res) in
            return .success(())
        })
    }

    /// NFSv3's RENAME replaces an existing target atomically; RENAME_NOREPLACE and
    /// RENAME_EXCHANGE have no NFSv3 equivalent and get ENOSYS (the kernel then answers
    /// EINVAL, as its own NFS client does): a LOOKUP-then-RENAME emulation could replace a
    /// file created in between.
    public func rename(_ parent: NFSInode, _ name: FileName, to newParent: NFSInode, _ newName: FileName,
                       flags: UInt32, _ caller: Credentials) throws(Errno) {
        if flags != 0 { throw .notImplemented }
        try inDirectory(parent.handle, caller) { caller throws(Errno) in
            try inDirectory(newParent.handle, caller) { caller throws(Errno) in
                // A target still open somewhere keeps its data: move it aside first.
                let renameOver = { () throws(Errno) in
                    try self.removeOrHide(newParent.handle, newName.cString, caller, evenIfHidden: true) { () throws(Errno) in
                        try self.rename(parent.handle, name.cString, newParent.handle, newName.cString, caller)
                    }
                }
                let asked = self.takeInClock.load(ordering: .sequentiallyConsistent)
                do throws(Errno) { try renameOver() } catch {
                    // A directory replaced that holds only hidden names on their way out, as in rmdir.
                    guard error == .notEmpty || error == .exists,
                          waitForHiddenNames(in: newParent.handle, newName.cString, asked: asked, caller) else { throw error }
                    try renameOver()
                }
            }
        }
    }

    func rename(_ from: FileHandle, _ name: UnsafePointer<CChar>, _ to: FileHandle, _ newName: UnsafePointer<CChar>,
                _ caller: Credentials) throws(Errno) {
        if v4 != nil { return try rename4(from, name, to, newName, caller) }
        try client.call(caller, { rpc, cb, data in
            from.withNFS { fromFH in
                to.withNFS { toFH in
                    var args = RENAME3args(from: diropargs3(dir: fromFH, name: UnsafeMutablePointer(mutating: name)),
                                           to: diropargs3(dir: toFH, name: UnsafeMutablePointer(mutating: newName)))
                    return rpc_nfs3_rename_async(rpc, cb, &args, data)
                }
            }
        }, decode: { reply in
            let res = reply.assumingMemoryBound(to: RENAME3res.self).pointee
            return res.status == NFS3_OK ? .success(()) : .failure(self.client.failure(nfs3: res.status))
        })
    }

    // MARK: - File system

    public func statfs(_ inode: NFSInode, _ caller: Credentials) throws(Errno) -> FileSystemStatistics {
        let handle = inode.handle
        if v4 != nil { return try statfs4(handle, caller) }
        return try client.call(caller, on: handle, rpc_nfs3_fsstat_async, { fh in FSSTAT3args(fsroot: fh) }, reply: { (res: FSSTAT3res) in
            let ok = res.FSSTAT3res_u.resok
            let block: UInt64 = 4096
            return .success(FileSystemStatistics(blocks: ok.tbytes / block, freeBlocks: ok.fbytes / block,
                                                 availableBlocks: ok.abytes / block, files: ok.tfiles, freeFiles: ok.ffiles,
                                                 blockSize: UInt32(block), fragmentSize: UInt32(block), maximumNameLength: 255))
        })
    }

    public func access(_ inode: NFSInode, mask: Int32, _ caller: Credentials) throws(Errno) {
        var wanted: UInt32 = 0
        if mask & R_OK != 0 { wanted |= UInt32(ACCESS3_READ) }
        if mask & W_OK != 0 { wanted |= UInt32(ACCESS3_MODIFY) }
        if mask & X_OK != 0 { wanted |= UInt32(inode.isDirectory ? ACCESS3_LOOKUP : ACCESS3_EXECUTE) }
        let handle = inode.handle
        if wanted == 0 { _ = try getattr(handle, caller); return }
        let granted = v4 != nil ? try access4(handle, wanted, caller) : try client.call(caller, on: handle, rpc_nfs3_access_async, { fh in ACCESS3args(object: fh, access: wanted) }, reply: { (res: ACCESS3res) -> Result<UInt32, Errno> in
            return .success(res.ACCESS3res_u.resok.access)
        })
        if granted & wanted != wanted { throw .accessDenied }
    }

    /// NFSv3 directory operations are synchronous on the server (the reply comes after the
    /// change is stable), so there is nothing left to flush.
    public func fsyncdir(_ directory: NFSDirectory, dataOnly: Bool, _ caller: Credentials) throws(Errno) {}

    /// Nothing acknowledged stays behind: open files are flushed and released first.
    public func destroy() {
        sessionEnded()
        client.shutdown()
    }
}

/// An NFSv3 reply: each starts with its status.
protocol NFS3Reply { var status: nfsstat3 { get } }
extension FSINFO3res: NFS3Reply {}
extension LOOKUP3res: NFS3Reply {}
extension GETATTR3res: NFS3Reply {}
extension SETATTR3res: NFS3Reply {}
extension READLINK3res: NFS3Reply {}
extension MKDIR3res: NFS3Reply {}
extension SYMLINK3res: NFS3Reply {}
extension MKNOD3res: NFS3Reply {}
extension CREATE3res: NFS3Reply {}
extension REMOVE3res: NFS3Reply {}
extension RMDIR3res: NFS3Reply {}
extension FSSTAT3res: NFS3Reply {}
extension ACCESS3res: NFS3Reply {}
extension COMMIT3res: NFS3Reply {}
extension READDIRPLUS3res: NFS3Reply {}

extension NFSDriver {
    /// Longest NFSv3 symlink target sent on libnfs's own connections: libnfs 4.0 encodes a
    /// call into 4096 bytes, which must also hold the credentials (16 groups), the directory's
    /// handle and name (255) and the rest of the call; longer targets go through
    /// `callOnOwnSocket` (NFSConnection+OwnSocket.swift). NFSv4 has no such limit.
    static let libnfsSymlinkTarget = 2048
    /// The encode buffer of a call sent on its own socket: a PATH_MAX target and all the rest.
    static let longCallSize = 16 << 10
}

extension NFSClient {
    /// `call(_:on:_:_:reply:)` for a call libnfs cannot encode (a long symlink target): the
    /// same arguments and reply, encoded and decoded by `encode` and `decode` (the
    /// procedure's libnfs `zdr_*` functions) and sent on a connection of its own.
    func callOnOwnSocket<Arguments, Reply: NFS3Reply, T>(
        _ caller: Credentials, on handle: FileHandle, procedure: UInt32, size: Int,
        _ encode: @escaping (UnsafeMutablePointer<ZDR>?, UnsafeMutablePointer<Arguments>?) -> UInt32,
        _ decode: @escaping (UnsafeMutablePointer<ZDR>?, UnsafeMutablePointer<Reply>?) -> UInt32,
        _ arguments: (nfs_fh3) -> Arguments,
        reply: @escaping (Reply) -> Result<T, Errno>) throws(Errno) -> T {
        try perform(caller) { connection, deadline throws(ConnectionFailure) -> Result<T, Errno> in
            var result: Result<T, Errno> = .failure(.io)
            try handle.withNFS { fh throws(ConnectionFailure) in
                var args = arguments(fh)
                try connection.callOnOwnSocket(caller, version: 3, procedure: procedure, size: size, deadline: deadline,
                                               encode: { encode($0, &args) != 0 }, decode: { zdr in
                    let res = UnsafeMutablePointer<Reply>.allocate(capacity: 1)
                    defer { res.deallocate() }
                    memset(res, 0, MemoryLayout<Reply>.size)
                    guard decode(zdr, res) != 0 else { return }
                    result = res.pointee.status == NFS3_OK ? reply(res.pointee) : .failure(self.failure(nfs3: res.pointee.status))
                })
            }
            return result
        }.get()
    }

    /// One NFSv3 call on `handle`: `arguments` builds the call's arguments around the handle
    /// (libnfs encodes them before `send` returns); `reply` reads a successful reply during
    /// the callback and copies out what it needs. A failed status is thrown as its errno.
    func call<Arguments, Reply: NFS3Reply, T>(
        _ caller: Credentials, on handle: FileHandle,
        _ send: (OpaquePointer?, rpc_cb?, UnsafeMutablePointer<Arguments>?, UnsafeMutableRawPointer?) -> Int32,
        _ arguments: (nfs_fh3) -> Arguments,
        reply: @escaping (Reply) -> Result<T, Errno>) throws(Errno) -> T {
        try call(caller, { rpc, cb, data in
            handle.withNFS { fh in
                var args = arguments(fh)
                return send(rpc, cb, &args, data)
            }
        }, decode: { raw in
            let res = raw.assumingMemoryBound(to: Reply.self).pointee
            return res.status == NFS3_OK ? reply(res) : .failure(self.failure(nfs3: res.status))
        })
    }

    /// One call: `issue` queues it (building its arguments, which libnfs encodes at once);
    /// `decode` reads the reply during the callback and copies out what it needs.
    func call<T>(_ caller: Credentials,
                 _ issue: (OpaquePointer, rpc_cb, UnsafeMutableRawPointer) -> Int32,
                 decode: @escaping (UnsafeMutableRawPointer) -> Result<T, Errno>) throws(Errno) -> T {
        try perform(caller) { connection, deadline throws(ConnectionFailure) -> Result<T, Errno> in
            var result: Result<T, Errno> = .failure(.io)
            let call = try connection.send(issue, onSuccess: { result = decode($0) })
            try connection.wait(for: [call], deadline: deadline)
            return result
        }.get()
    }
}
