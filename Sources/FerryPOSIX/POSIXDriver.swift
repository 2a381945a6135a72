#if canImport(Glibc)
import Glibc
#endif
import CFerry
import FerryCore

/// Whether inodes are remembered by kernel file handle (no fd per inode) or by an O_PATH fd.
public enum FileHandleMode: Sendable {
    /// Always hold an O_PATH fd per known inode.
    case never
    /// Use file handles when the export's file system supports them, else fds.
    case prefer
    /// Refuse to start (or to look up a node) when file handles cannot be used.
    case mandatory
}

public struct POSIXOptions: Sendable {
    public var fileHandles: FileHandleMode
    /// Leave permission checks to the client kernel (FUSE default_permissions; virtio-fs
    /// guests always check), as virtiofsd does. FUSE tells a server only the caller's uid,
    /// gid and, on create, the one group the new entry needs; a host re-check with that
    /// partial identity refuses access the caller has through another supplementary group.
    /// With `false` the host re-checks every request as the caller: stricter, and wrong
    /// for such callers. Either way, requests act as the caller for ownership and setuid.
    public var trustClientPermissions: Bool = true
    /// How many O_PATH descriptors may be cached on handle-backed inodes, overall.
    public var maxCachedDescriptors: Int
    public var readOnly: Bool
    /// Most (file, lock owner) pairs holding POSIX locks at once, each an open file
    /// description of the daemon; a lock for one more is ENOLCK.
    public var maxLockOwners = 4096
    public init(fileHandles: FileHandleMode = .prefer, maxCachedDescriptors: Int = 1024, readOnly: Bool = false,
                trustClientPermissions: Bool = true) {
        self.fileHandles = fileHandles; self.maxCachedDescriptors = maxCachedDescriptors; self.readOnly = readOnly
        self.trustClientPermissions = trustClientPermissions
    }
}

/// Serves a host directory. Every name is resolved one component at a time relative to
/// its parent's O_PATH descriptor with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
/// RESOLVE_NO_MAGICLINKS)`; files are reopened for I/O through `/proc/self/fd/N` only after
/// checking their type; every operation acts as the caller (fsuid/fsgid, and the groups the
/// kernel sends). Permission checks are the client kernel's unless
/// `POSIXOptions.trustClientPermissions` is off (see there).
public final class POSIXDriver: FileSystemDriver {
    public typealias Inode = FerryPOSIX.Inode
    public typealias InodeKey = FerryPOSIX.InodeKey
    public typealias File = FerryPOSIX.File
    public typealias Directory = FerryPOSIX.Directory

    public let options: POSIXOptions
    let rootInode: Inode
    /// O_PATH on `/proc/self/fd`: reopening inodes goes through `openat(procFD, "N")`.
    let procFD: Int32
    /// The export root opened O_RDONLY: `open_by_handle_at`'s mount fd and `syncfs`'s fd.
    let mountFD: Int32
    let rootMountID: Int32
    /// The handle mode actually in force (`.prefer` degrades to `.never` when unsupported).
    public let effectiveHandleMode: FileHandleMode
    let budget: DescriptorBudget
    /// The open file descriptions holding POSIX locks, one per (file, lock owner).
    let lockOwners: LockOwnerTable

    public init(root: String, options: POSIXOptions = .init()) throws(Errno) {
        // Owned until stored below: a throw on the way closes whatever is open so far.
        let ownedRoot = try OwnedFD(opening: { ferry_open(root, oPath | O_DIRECTORY | O_CLOEXEC, 0) })
        let ownedProc = try OwnedFD(opening: { ferry_open("/proc/self/fd", oPath | O_DIRECTORY | O_CLOEXEC, 0) })
        let rootFD = ownedRoot.raw, procFD = ownedProc.raw
        // Reopen the very directory we hold (not the path again) for the mount fd.
        let ownedMount = try OwnedFD(opening: {
            (try? withDescriptorName(rootFD) { name throws(Errno) in
                ferry_openat(procFD, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
            }) ?? -1
        })
        let mountFD = ownedMount.raw

        var stx = statx()
        if !statxFD(rootFD, &stx) { throw Errno.current }
        var mode = options.fileHandles
        var mountID = stx.mountID
        if mode != .never {
            var rc: Int32 = -1
            if let handle = KernelFileHandle(rootFD, emptyPath, flags: Int32(FERRY_AT_EMPTY_PATH)) {
                // Probe open_by_handle_at: it needs CAP_DAC_READ_SEARCH.
                rc = withUnsafeBytes(of: handle.storage) {
                    ferry_open_by_handle(mountFD, $0.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                         handle.length, handle.type, oPath | O_CLOEXEC)
                }
                if rc >= 0 { close(rc); rc = 0; mountID = handle.mountID }
            }
            if rc != 0 {
                if mode == .mandatory { throw Errno.current }
                mode = .never
            }
        }
        // The process umask is left alone (a library must not change process state): the
        // creating calls make their nodes' modes exact afterwards (`settleCreationMode`).

        self.options = options
        self.procFD = ownedProc.take()
        self.mountFD = ownedMount.take()
        self.rootMountID = mountID
        self.effectiveHandleMode = mode
        self.budget = DescriptorBudget(limit: options.maxCachedDescriptors)
        self.lockOwners = LockOwnerTable(limit: options.maxLockOwners)
        self.rootInode = Inode(key: InodeKey(device: stx.device, inode: stx.stx_ino, mountID: mountID),
                               fileType: stx.fileType, pinnedFD: ownedRoot.take())
        if rootInode.fileType != FileMode.directory { throw .notDirectory }  // O_DIRECTORY makes this unreachable
    }

    deinit {
        close(procFD)
        close(mountFD)
    }

    /// Resets the calling thread to the daemon's own fs credentials (fsuid 0, fsgid 0, no
    /// supplementary groups). For threads that do host work after serving a caller (tests).
    public static func resetThreadCredentials() {
        ThreadCredentialState.current.become(uid: 0, gid: 0, groups: .init(start: nil, count: 0), trustClient: false)
    }

    /// Number of O_PATH descriptors currently cached on handle-backed inodes.
    public var cachedDescriptorCount: Int { budget.used.load(ordering: .relaxed) }

    // MARK: - Plumbing

    @inline(__always)
    func become(_ caller: Credentials) {
        ThreadCredentialState.current.become(uid: caller.uid, gid: caller.gid, groups: caller.groups,
                                             trustClient: options.trustClientPermissions)
    }

    @inline(__always)
    func checkWritable() throws(Errno) {
        if options.readOnly { throw .readOnly }
    }

    /// Runs `body` with an O_PATH fd on `inode`: its pinned fd, its cached fd, or one opened
    /// from its file handle (cached if the budget allows, else closed afterwards).
    @inline(__always)
    func withPathFD<R>(_ inode: Inode, _ body: (Int32) throws(Errno) -> R) throws(Errno) -> R {
        if inode.pinnedFD >= 0 { return try body(inode.pinnedFD) }
        let cached = inode.cachedFD.load(ordering: .acquiring)
        if cached >= 0 { return try body(cached) }
        return try withHandleFD(inode, body)
    }

    private func withHandleFD<R>(_ inode: Inode, _ body: (Int32) throws(Errno) -> R) throws(Errno) -> R {
        let fd = try ThreadCredentialState.current.asDaemon { () throws(Errno) -> Int32 in
            let handle = inode.handle
            let fd = withUnsafeBytes(of: handle.storage) {
                ferry_open_by_handle(mountFD, $0.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                     handle.length, handle.type, oPath | O_CLOEXEC)
            }
            if fd < 0 { throw ownFailure("open_by_handle_at") }
            return fd
        }
        if budget.tryAcquire() {
            let (exchanged, original) = inode.cachedFD.compareExchange(expected: -1, desired: fd, ordering: .acquiringAndReleasing)
            if exchanged { return try body(fd) }
            // Another request cached one first: use theirs.
            close(fd)
            budget.release()
            return try body(original)
        }
        defer { close(fd) }
        return try body(fd)
    }

    /// Opens `name` in the directory `parentFD` as an O_PATH fd without following any symlink.
    @inline(__always)
    func openChild(_ parentFD: Int32, _ name: FileName) throws(Errno) -> Int32 {
        var attempts = 0
        while true {
            let fd = ferry_openat2(parentFD, name.cString, UInt64(oPath | O_NOFOLLOW | O_CLOEXEC), 0, openat2Resolve)
            if fd >= 0 { return fd }
            // openat2 answers EAGAIN when a concurrent rename might have raced RESOLVE_BENEATH.
            if errno == EAGAIN && attempts < 8 { attempts += 1; continue }
            throw ownFailure("openat2")
        }
    }

    /// Reopens an O_PATH fd through /proc/self/fd with `flags`, with the current thread's
    /// credentials (so the host checks the caller's permissions). The caller checks the type.
    @inline(__always)
    func reopen(_ pathFD: Int32, flags: Int32, mode: UInt32 = 0) throws(Errno) -> Int32 {
        try withDescriptorName(pathFD) { name throws(Errno) -> Int32 in
            let fd = ferry_openat(procFD, name, flags, mode)
            if fd < 0 { throw ownFailure("openat(/proc/self/fd)") }
            return fd
        }
    }

    /// An entry for the node `fd` (an O_PATH fd, consumed: it becomes the inode's pinned or
    /// cached fd, or is closed). A node the core already holds under the same key is reused
    /// (`existing`), so a name looked up again allocates nothing.
    ///
    /// The key's incarnation comes from the file handle whenever the file system gives one,
    /// pinned node or not, so every path to a file (this one, LOOKUP's statx path) computes
    /// the same key; a key without one is only ever a pinned node's.
    func makeEntry(pathFD fd: Int32, pin: Bool = false,
                   existing: (InodeKey) -> Inode? = { _ in nil }) throws(Errno) -> Entry {
        // Closed on every path that does not hand it to the inode.
        let owned = OwnedFD(fd)
        var stx = statx()
        if !statxFD(fd, &stx) { throw ownFailure("statx") }
        let attributes = Attributes(stx)
        var handle: KernelFileHandle?
        if effectiveHandleMode != .never {
            handle = KernelFileHandle(fd, emptyPath, flags: Int32(FERRY_AT_EMPTY_PATH))
            if effectiveHandleMode == .mandatory && !pin && handle?.mountID != rootMountID {
                throw handle == nil ? ownFailure("name_to_handle_at") : Errno(EXDEV)
            }
        }
        let key = InodeKey(device: stx.device, inode: stx.stx_ino, mountID: stx.mountID, incarnation: handle?.digest ?? 0)
        if let known = existing(key) {
            return Entry(key: key, inode: known, attributes: attributes)
        }
        if let handle, !pin, handle.mountID == rootMountID {
            let cached = budget.tryAcquire() ? owned.take() : -1
            let inode = Inode(key: key, fileType: stx.fileType, handle: handle, cachedFD: cached, budget: budget)
            return Entry(key: key, inode: inode, attributes: attributes)
        }
        return Entry(key: key, inode: Inode(key: key, fileType: stx.fileType, pinnedFD: owned.take()), attributes: attributes)
    }

    /// An entry for the node an I/O fd refers to.
    func makeEntry(ioFD: Int32, pin: Bool = false) throws(Errno) -> Entry {
        let pathFD = try reopen(ioFD, flags: oPath | O_CLOEXEC)
        return try makeEntry(pathFD: pathFD, pin: pin)
    }

    @inline(__always)
    func attributes(ofFD fd: Int32) throws(Errno) -> Attributes {
        var stx = statx()
        if !statxFD(fd, &stx) { throw ownFailure("statx") }
        return Attributes(stx)
    }

    /// Refuses to reopen anything but a regular file (CVE-2020-35517: never open a host
    /// fifo, socket or device on a guest's behalf).
    @inline(__always)
    func checkRegularFile(_ inode: Inode) throws(Errno) {
        switch inode.fileType {
        case FileMode.regular: return
        case FileMode.directory: throw .isDirectory
        case FileMode.symlink: throw .loop
        default: throw .noDevice
        }
    }

    /// open(2) flags a guest may pass on: no creation, no following, no controlling tty,
    /// no O_PATH/O_TMPFILE; always close-on-exec.
    @inline(__always)
    func sanitizedOpenFlags(_ flags: Int32) -> Int32 {
        (flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_NOFOLLOW | oPath | oTmpfileBit)) | O_CLOEXEC
    }

    @inline(__always)
    func wantsWrite(_ flags: Int32) -> Bool {
        (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC) != 0
    }

    /// The mode a node is created with. `requested` are the bits the client sent; `wanted`
    /// what the node must end up with where no default ACL applies: without the caller's
    /// umask, which comes with the request only under FUSE_DONT_MASK (otherwise the client
    /// kernel has applied it already). In a directory with a default ACL the host applies the
    /// ACL to `requested` and no umask at all, which is what POSIX ACLs ask for.
    struct CreationMode {
        let requested: UInt32
        let wanted: UInt32
        /// nil until looked at: only done when a umask must be applied or a result differs.
        var parentHasDefaultACL: Bool?
        /// The mode for the creating system call.
        var syscallMode: mode_t { mode_t(parentHasDefaultACL == false ? wanted : requested) }
    }

    func creationMode(_ mode: UInt32, _ caller: Credentials, parentFD: Int32) -> CreationMode {
        let requested = mode & 0o7777
        var creation = CreationMode(requested: requested, wanted: requested & ~(caller.umask & 0o777))
        if creation.wanted != requested { creation.parentHasDefaultACL = hasDefaultACL(parentFD) }
        return creation
    }

    /// Whether the directory has a default ACL (read as the daemon: reading it needs no
    /// permission, and reopening the directory might). Unknown counts as none.
    func hasDefaultACL(_ directoryFD: Int32) -> Bool {
        (try? ThreadCredentialState.current.asDaemon { () throws(Errno) -> Bool in
            let fd = try reopen(directoryFD, flags: O_RDONLY | O_DIRECTORY | O_NONBLOCK | O_CLOEXEC)
            defer { close(fd) }
            return ferry_fgetxattr(fd, defaultACLName, nil, 0) > 0
        }) ?? false
    }

    /// Gives a node this request just created exactly the permission bits the client asked
    /// for. The process umask (whatever the program embedding the driver set; never changed
    /// here) may have taken bits away, which a chmod as the daemon puts back; a default ACL's
    /// result is left as the host made it. No system call when the mode is already right
    /// (a process umask of 0, as the `ferry` commands set, or one that took nothing away).
    /// Best effort: if the chmod fails the node keeps a stricter mode, which is reported.
    func settleCreationMode(_ entry: inout Entry, _ creation: inout CreationMode, parentFD: Int32, ioFD: Int32?) {
        let mode = entry.attributes.mode
        if mode & FileMode.typeMask == FileMode.symlink || mode & 0o777 == creation.wanted & 0o777 { return }
        if creation.parentHasDefaultACL == nil { creation.parentHasDefaultACL = hasDefaultACL(parentFD) }
        if creation.parentHasDefaultACL == true { return }
        // The host decided the set-id bits (setgid inherited, or stripped): keep its choice.
        let settled = (mode & 0o7000) | (creation.wanted & 0o777)
        // The descriptor is taken before acting as the daemon: opening one by handle switches
        // credentials itself, and would end the daemon's turn early.
        let chmod = { (fd: Int32, byPath: Bool) throws(Errno) -> Bool in
            try ThreadCredentialState.current.asDaemon { () throws(Errno) -> Bool in
                if !byPath { return fchmod(fd, mode_t(settled)) == 0 }
                return try withDescriptorName(fd) { name throws(Errno) -> Bool in fchmodat(self.procFD, name, mode_t(settled), 0) == 0 }
            }
        }
        let done: Bool?
        if let ioFD {
            done = try? chmod(ioFD, false)
        } else {
            done = try? withPathFD(entry.inode) { fd throws(Errno) -> Bool in try chmod(fd, true) }
        }
        if done == true { entry.attributes.mode = (mode & ~0o7777) | settled }
    }

    /// Clears setuid, and setgid when group-executable, on an open file (as a write by an
    /// unprivileged caller would). Best effort: the write itself already succeeded.
    func killSetIDBits(ioFD fd: Int32) {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return }
        let mode = UInt32(st.st_mode)
        var newMode = mode & 0o7777
        if mode & FileMode.setUID != 0 { newMode &= ~FileMode.setUID }
        if mode & FileMode.setGID != 0 && mode & FileMode.groupExecute != 0 { newMode &= ~FileMode.setGID }
        if newMode != mode & 0o7777 {
            _ = try? ThreadCredentialState.current.asDaemon { () throws(Errno) in _ = fchmod(fd, mode_t(newMode)) }
        }
    }

    // MARK: - Nodes

    public func root() throws(Errno) -> Entry {
        Entry(key: rootInode.key, inode: rootInode, attributes: try attributes(ofFD: rootInode.pinnedFD))
    }

    public func lookup(_ parent: Inode, _ name: FileName, _ caller: Credentials) throws(Errno) -> Entry {
        try lookup(parent, name, caller, existing: { _ in nil })
    }

    /// A name the kernel looks up again (it revalidates all the time) finds its node
    /// already held by the core: reuse that inode instead of making a new one, so the
    /// steady state allocates nothing.
    public func lookup(_ parent: Inode, _ name: FileName, _ caller: Credentials,
                       existing: (InodeKey) -> Inode?) throws(Errno) -> Entry {
        become(caller)
        guard parent.isDirectory else { throw .notDirectory }
        // A name the kernel looks up again: statx and name_to_handle_at on the name, no open
        // or close. `name` is a single validated component and the last one is not followed,
        // so nothing is traversed; an identity we do not hold falls through to the confined
        // open below. The handle is what tells a file on a reused inode number from the
        // deleted file whose node the kernel may still hold (InodeKey).
        var known = statx()
        let key = try withPathFD(parent) { parentFD throws(Errno) -> InodeKey? in
            if ferry_statx(parentFD, name.cString, Int32(FERRY_AT_SYMLINK_NOFOLLOW), statxMask, &known) != 0 {
                if errno == ENOENT { throw .noEntry }
                return nil
            }
            var incarnation: UInt64 = 0
            if effectiveHandleMode != .never {
                if let handle = KernelFileHandle(parentFD, name.cString, flags: 0) {
                    incarnation = handle.digest
                } else if errno == ENOENT {
                    return nil
                }
                // No handle to be had: 0, which only a node holding its inode open has.
            }
            return InodeKey(device: known.device, inode: known.stx_ino, mountID: known.mountID, incarnation: incarnation)
        }
        // A name replaced between the two calls gives a key no node has, or the new file's
        // key (the new file on the old one's inode number) with the old file's attributes:
        // so the reply carries the attributes of the node itself, from its own descriptor.
        // (The kernel keeps what a LOOKUP says: a link count of 0 from the deleted file
        // made it refuse link(2) with ENOENT.)
        if let key, let inode = existing(key), inode.fileType == known.fileType,
           let attributes = try? withPathFD(inode, { fd throws(Errno) in try attributes(ofFD: fd) }) {
            return Entry(key: key, inode: inode, attributes: attributes)
        }
        let fd = try withPathFD(parent) { parentFD throws(Errno) in try openChild(parentFD, name) }
        return try makeEntry(pathFD: fd, existing: existing)
    }

    public func getattr(_ inode: Inode, _ file: File?, _ caller: Credentials) throws(Errno) -> Attributes {
        become(caller)
        if let file { return try attributes(ofFD: file.fd) }
        return try withPathFD(inode) { fd throws(Errno) in try attributes(ofFD: fd) }
    }

    public func setattr(_ inode: Inode, _ file: File?, _ changes: AttributeChanges, _ caller: Credentials) throws(Errno) -> Attributes {
        become(caller)
        try checkWritable()
        return try withPathFD(inode) { pathFD throws(Errno) -> Attributes in
            if changes.mode != nil || changes.uid != nil || changes.gid != nil {
                try changeModeAndOwner(inode, file, pathFD, changes, caller)
            }
            if let size = changes.size {
                guard size <= UInt64(Int64.max) else { throw .invalid }
                if let file {
                    // EBADF/EINVAL here are the guest's (handle not open for writing).
                    if ftruncate(file.fd, off_t(size)) != 0 { throw Errno.current }
                } else {
                    if inode.isDirectory { throw .isDirectory }
                    guard inode.isRegularFile else { throw .invalid }
                    let fd = try reopen(pathFD, flags: O_WRONLY | O_CLOEXEC)
                    defer { close(fd) }
                    if ftruncate(fd, off_t(size)) != 0 { throw ownFailure("ftruncate") }
                }
            }
            if changes.accessTime != nil || changes.modificationTime != nil {
                try withUnsafeTemporaryAllocation(of: timespec.self, capacity: 2) { times throws(Errno) in
                    times[0] = Self.timespecFor(changes.accessTime)
                    times[1] = Self.timespecFor(changes.modificationTime)
                    if let file {
                        if futimens(file.fd, times.baseAddress) != 0 { throw ownFailure("futimens") }
                    } else {
                        try withDescriptorName(pathFD) { name throws(Errno) in
                            if utimensat(procFD, name, times.baseAddress, 0) != 0 { throw ownFailure("utimensat") }
                        }
                    }
                }
            }
            if changes.killSuidGid && changes.mode == nil && inode.isRegularFile {
                var stx = statx()
                if statxFD(pathFD, &stx) {
                    let mode = UInt32(stx.stx_mode)
                    var newMode = mode & 0o7777
                    if mode & FileMode.setUID != 0 { newMode &= ~FileMode.setUID }
                    if mode & FileMode.setGID != 0 && mode & FileMode.groupExecute != 0 { newMode &= ~FileMode.setGID }
                    if newMode != mode & 0o7777 {
                        try ThreadCredentialState.current.asDaemon { () throws(Errno) in
                            try withDescriptorName(pathFD) { name throws(Errno) in
                                if fchmodat(procFD, name, mode_t(newMode), 0) != 0 { throw ownFailure("fchmodat") }
                            }
                        }
                    }
                }
            }
            if let file { return try attributes(ofFD: file.fd) }
            return try attributes(ofFD: pathFD)
        }
    }

    static func timespecFor(_ change: AttributeChanges.TimeChange?) -> timespec {
        switch change {
        case nil: return timespec(tv_sec: 0, tv_nsec: utimeOmit)
        case .now: return timespec(tv_sec: 0, tv_nsec: utimeNow)
        case .set(let t): return timespec(tv_sec: Int(t.seconds), tv_nsec: Int(min(t.nanoseconds, 999_999_999)))
        }
    }

    /// chmod and chown. The client kernel has checked them with the caller's full group
    /// list, which FUSE never sends: acting with only the caller's uid and gid, the host would
    /// refuse an owner's chgrp to one of its supplementary groups (EPERM) and strip S_ISGID
    /// from an owner's chmod of a file in such a group. So when the client's checks are
    /// trusted, both run as the daemon, after the checks the host can make by itself: a
    /// caller other than root must own the node and cannot give it away. A chmod that only
    /// clears set-id bits runs as the daemon for anyone, in either mode. The daemon's chown
    /// clears what Linux's chown(2) clears on a non-directory: S_ISUID, S_ISGID when group
    /// executable, and security.capability (FATTR_KILL_SUIDGID's semantics too).
    func changeModeAndOwner(_ inode: Inode, _ file: File?, _ pathFD: Int32, _ changes: AttributeChanges,
                            _ caller: Credentials) throws(Errno) {
        if caller.uid == 0 { return try applyModeAndOwner(inode, file, pathFD, changes) }
        var stx = statx()
        if !statxFD(pathFD, &stx) { throw ownFailure("statx") }
        // Giving up set-id bits is safe whoever asks, even when the host re-checks the rest.
        let clearing = inode.isRegularFile && Self.onlyClearsSetIDBits(changes, from: UInt32(stx.stx_mode))
        if !options.trustClientPermissions && !clearing { return try applyModeAndOwner(inode, file, pathFD, changes) }
        guard stx.stx_uid == caller.uid || clearing else { throw .notPermitted }
        if let uid = changes.uid, uid != stx.stx_uid { throw .notPermitted }
        try ThreadCredentialState.current.asDaemon { () throws(Errno) in
            try applyModeAndOwner(inode, file, pathFD, changes)
        }
    }

    /// A chmod that only clears S_ISUID or S_ISGID: what a kernel without KILLPRIV_V2 sends for
    /// a write or truncation by any user (not only the owner) of a set-id regular file.
    static func onlyClearsSetIDBits(_ changes: AttributeChanges, from current: UInt32) -> Bool {
        guard changes.uid == nil, changes.gid == nil, let mode = changes.mode else { return false }
        let setID = FileMode.setUID | FileMode.setGID
        let now = current & 0o7777, wanted = mode & 0o7777
        return wanted & ~now == 0 && now & ~setID == wanted & ~setID
    }

    private func applyModeAndOwner(_ inode: Inode, _ file: File?, _ pathFD: Int32, _ changes: AttributeChanges) throws(Errno) {
        if let mode = changes.mode {
            let bits = mode_t(mode & 0o7777)
            if let file {
                if fchmod(file.fd, bits) != 0 { throw ownFailure("fchmod") }
            } else {
                // chmod on an O_PATH fd is refused; go through the magic link (which
                // lands on the inode itself). Linux cannot chmod a symlink.
                if inode.isSymlink { throw .notSupported }
                try withDescriptorName(pathFD) { name throws(Errno) in
                    if fchmodat(procFD, name, bits, 0) != 0 { throw ownFailure("fchmodat") }
                }
            }
        }
        if changes.uid != nil || changes.gid != nil {
            let uid = changes.uid ?? UInt32.max, gid = changes.gid ?? UInt32.max
            if fchownat(pathFD, emptyPath, uid, gid, emptyPathNoFollow) != 0 { throw ownFailure("fchownat") }
        }
    }

    public func readlink(_ inode: Inode, into buffer: UnsafeMutableRawBufferPointer, _ caller: Credentials) throws(Errno) -> Int {
        become(caller)
        guard inode.isSymlink else { throw .invalid }
        guard let base = buffer.baseAddress, buffer.count > 0 else { throw .range }
        return try withPathFD(inode) { fd throws(Errno) -> Int in
            let n = readlinkat(fd, emptyPath, base.assumingMemoryBound(to: CChar.self), buffer.count)
            if n < 0 { throw ownFailure("readlinkat") }
            return n
        }
    }

    /// Creates a node with `make(parentFD, mode)` and looks it up. `mode`: the permission
    /// bits asked for (nil for a symlink).
    @inline(__always)
    func createNode(_ parent: Inode, _ name: FileName, _ caller: Credentials, mode: UInt32?,
                    _ make: (Int32, mode_t) -> Int32) throws(Errno) -> Entry {
        become(caller)
        try checkWritable()
        guard parent.isDirectory else { throw .notDirectory }
        return try withPathFD(parent) { parentFD throws(Errno) -> Entry in
            var creation = mode.map { creationMode($0, caller, parentFD: parentFD) }
            if make(parentFD, creation?.syscallMode ?? 0) != 0 { throw ownFailure("create node") }
            var entry = try makeEntry(pathFD: try openChild(parentFD, name))
            if creation != nil { settleCreationMode(&entry, &creation!, parentFD: parentFD, ioFD: nil) }
            return entry
        }
    }

    public func symlink(_ parent: Inode, _ name: FileName, target: UnsafeRawBufferPointer, _ caller: Credentials) throws(Errno) -> Entry {
        guard let base = target.baseAddress, !target.isEmpty else { throw .noEntry }
        return try createNode(parent, name, caller, mode: nil) { parentFD, _ in
            symlinkat(base.assumingMemoryBound(to: CChar.self), parentFD, name.cString)
        }
    }

    public func mknod(_ parent: Inode, _ name: FileName, mode: UInt32, rdev: UInt32, _ caller: Credentials) throws(Errno) -> Entry {
        let type = mode & FileMode.typeMask
        return try createNode(parent, name, caller, mode: mode) { parentFD, bits in
            mknodat(parentFD, name.cString, mode_t(type) | bits, dev_t(rdev))
        }
    }

    public func mkdir(_ parent: Inode, _ name: FileName, mode: UInt32, _ caller: Credentials) throws(Errno) -> Entry {
        try createNode(parent, name, caller, mode: mode) { parentFD, bits in
            mkdirat(parentFD, name.cString, bits)
        }
    }

    public func unlink(_ parent: Inode, _ name: FileName, _ caller: Credentials) throws(Errno) {
        become(caller)
        try checkWritable()
        guard parent.isDirectory else { throw .notDirectory }
        try withPathFD(parent) { fd throws(Errno) in
            if unlinkat(fd, name.cString, 0) != 0 { throw ownFailure("unlinkat") }
        }
    }

    public func rmdir(_ parent: Inode, _ name: FileName, _ caller: Credentials) throws(Errno) {
        become(caller)
        try checkWritable()
        guard parent.isDirectory else { throw .notDirectory }
        try withPathFD(parent) { fd throws(Errno) in
            if unlinkat(fd, name.cString, Int32(FERRY_AT_REMOVEDIR)) != 0 { throw ownFailure("unlinkat") }
        }
    }

    public func rename(_ parent: Inode, _ name: FileName, to newParent: Inode, _ newName: FileName,
                       flags: UInt32, _ caller: Credentials) throws(Errno) {
        become(caller)
        try checkWritable()
        guard parent.isDirectory, newParent.isDirectory else { throw .notDirectory }
        let known = UInt32(FERRY_RENAME_NOREPLACE | FERRY_RENAME_EXCHANGE | FERRY_RENAME_WHITEOUT)
        guard flags & ~known == 0 else { throw .invalid }
        try withPathFD(parent) { oldFD throws(Errno) in
            try withPathFD(newParent) { newFD throws(Errno) in
                if ferry_renameat2(oldFD, name.cString, newFD, newName.cString, flags) != 0 {
                    throw ownFailure("renameat2")
                }
            }
        }
    }

    public func link(_ inode: Inode, to newParent: Inode, _ newName: FileName, _ caller: Credentials) throws(Errno) -> Entry {
        become(caller)
        try checkWritable()
        guard newParent.isDirectory else { throw .notDirectory }
        if inode.isDirectory { throw .notPermitted }
        return try withPathFD(inode) { fd throws(Errno) -> Entry in
            try withPathFD(newParent) { parentFD throws(Errno) in
                // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH, which only a root caller keeps;
                // otherwise link through the magic link, which needs no capability.
                if caller.uid == 0 && linkat(fd, emptyPath, parentFD, newName.cString, Int32(FERRY_AT_EMPTY_PATH)) == 0 { return }
                try withDescriptorName(fd) { name throws(Errno) in
                    if linkat(procFD, name, parentFD, newName.cString, Int32(FERRY_AT_SYMLINK_FOLLOW)) != 0 {
                        throw ownFailure("linkat")
                    }
                }
            }
            // Same node: hand back the inode itself, with fresh attributes (link count).
            return Entry(key: inode.key, inode: inode, attributes: try attributes(ofFD: fd))
        }
    }

    // MARK: - Files

    public func open(_ inode: Inode, flags: Int32, killSuidGid: Bool, _ caller: Credentials) throws(Errno) -> OpenedFile<File> {
        become(caller)
        try checkRegularFile(inode)
        if wantsWrite(flags) { try checkWritable() }
        let openFlags = sanitizedOpenFlags(flags)
        let fd = try withPathFD(inode) { pathFD throws(Errno) in try reopen(pathFD, flags: openFlags) }
        if killSuidGid && flags & O_TRUNC != 0 { killSetIDBits(ioFD: fd) }
        return OpenedFile(file: File(fd: fd))
    }

    public func create(_ parent: Inode, _ name: FileName, mode: UInt32, flags: Int32,
                       _ caller: Credentials) throws(Errno) -> (Entry, OpenedFile<File>) {
        try create(parent, name, mode: mode, flags: flags, killSuidGid: false, caller)
    }

    /// `killSuidGid` (FUSE_OPEN_KILL_SUIDGID) matters when the name exists and is truncated:
    /// the client kernel asks for what a truncation by a caller without CAP_FSETID does.
    public func create(_ parent: Inode, _ name: FileName, mode: UInt32, flags: Int32, killSuidGid: Bool,
                       _ caller: Credentials) throws(Errno) -> (Entry, OpenedFile<File>) {
        become(caller)
        try checkWritable()
        guard parent.isDirectory else { throw .notDirectory }
        let openFlags = sanitizedOpenFlags(flags)
        return try withPathFD(parent) { parentFD throws(Errno) -> (Entry, OpenedFile<File>) in
            var creation = creationMode(mode, caller, parentFD: parentFD)
            // Always O_EXCL: O_CREAT on an existing name would open whatever is there (a fifo
            // would block us, a device would be opened). O_NOFOLLOW + RESOLVE_NO_SYMLINKS:
            // never create through a symlink.
            let fd = ferry_openat2(parentFD, name.cString,
                                   UInt64(bitPattern: Int64(openFlags | O_CREAT | O_EXCL | O_NOFOLLOW)),
                                   UInt64(creation.syscallMode), openat2Resolve)
            if fd >= 0 {
                let file = File(fd: fd)
                var entry = try makeEntry(ioFD: fd)
                settleCreationMode(&entry, &creation, parentFD: parentFD, ioFD: fd)
                return (entry, OpenedFile(file: file))
            }
            if errno != EEXIST || flags & O_EXCL != 0 { throw ownFailure("openat2(O_CREAT)") }
            // It exists and the caller did not ask for exclusivity: open it like OPEN does,
            // after checking what it is.
            let pathFD = try openChild(parentFD, name)
            let entry = try makeEntry(pathFD: pathFD, pin: false)
            try checkRegularFile(entry.inode)
            let ioFD = try withPathFD(entry.inode) { fd throws(Errno) in try reopen(fd, flags: openFlags) }
            if killSuidGid && flags & O_TRUNC != 0 { killSetIDBits(ioFD: ioFD) }
            return (entry, OpenedFile(file: File(fd: ioFD)))
        }
    }

    public func read(_ file: File, offset: UInt64, into buffers: IOVectors, _ caller: Credentials) throws(Errno) -> Int {
        guard offset <= UInt64(Int64.max) else { throw .invalid }
        // EBADF: the guest read a handle not opened for reading.
        let n = try systemCall { preadv(file.fd, buffers.base, Int32(buffers.count), off_t(offset)) }
        if n == 0 { return 0 }
        let wanted = buffers.totalLength
        if n == wanted { return n }
        // Short read: keep reading into the rest until EOF (rare: racing writers, some fs).
        var done = n
        var skip = n
        for i in 0..<buffers.count {
            let length = buffers.base[i].iov_len
            if skip >= length { skip -= length; continue }
            var pointer = buffers.base[i].iov_base! + skip
            var remaining = length - skip
            skip = 0
            while remaining > 0 {
                guard let r = try? systemCall({ pread(file.fd, pointer, remaining, off_t(offset) + off_t(done)) }),
                      r > 0 else { return done }
                done += r; pointer += r; remaining -= r
            }
        }
        return done
    }

    public func write(_ file: File, offset: UInt64, from buffers: IOVectors, killSuidGid: Bool, _ caller: Credentials) throws(Errno) -> Int {
        guard offset <= UInt64(Int64.max) else { throw .invalid }
        become(caller)
        let n = try systemCall { pwritev(file.fd, buffers.base, Int32(buffers.count), off_t(offset)) }
        if killSuidGid && n > 0 { killSetIDBits(ioFD: file.fd) }
        return n
    }

    public func flush(_ file: File, lockOwner: UInt64, _ caller: Credentials) throws(Errno) {
        // The process closed a descriptor of the file: POSIX drops its locks on it.
        dropLocks(file, owner: lockOwner)
        // close() of a duplicate gives the close-time semantics (errors, lock release) the
        // guest's close expects, while the handle itself stays open until RELEASE.
        let duplicate = dup(file.fd)
        if duplicate < 0 { throw ownFailure("dup") }
        if close(duplicate) != 0 && errno != EINTR { throw Errno.current }
    }

    public func release(_ file: File, flags: Int32, _ caller: Credentials) {}

    public func fsync(_ file: File, dataOnly: Bool, _ caller: Credentials) throws(Errno) {
        if (dataOnly ? fdatasync(file.fd) : Glibc.fsync(file.fd)) != 0 { throw ownFailure("fsync") }
    }

    // MARK: - Directories

    public func opendir(_ inode: Inode, flags: Int32, _ caller: Credentials) throws(Errno) -> Directory {
        become(caller)
        guard inode.isDirectory else { throw .notDirectory }
        let fd = try withPathFD(inode) { pathFD throws(Errno) in
            try reopen(pathFD, flags: O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        }
        return Directory(fd: fd, bufferSize: Self.direntBufferSize)
    }

    static let direntBufferSize = 8192

    public func readdir(_ directory: Directory, at offset: UInt64, _ caller: Credentials,
                        _ emit: (DirectoryEntry) -> Bool) throws(Errno) {
        let start = off_t(Int64(bitPattern: offset))
        try directory.lock.withLock { _ throws(Errno) in
            // Offsets are the file system's own d_off cookies: seek to the one after the last
            // entry the guest consumed (0 = rewind).
            if Glibc.lseek(directory.fd, start, SEEK_SET) < 0 { throw ownFailure("lseek(dir)") }
            do {
                let buffer = directory.buffer
                let base = buffer.baseAddress!
                while true {
                    let n = ferry_getdents64(directory.fd, base, buffer.count)
                    if n < 0 { throw ownFailure("getdents64") }
                    if n == 0 { return }
                    var position = 0
                    while position < n {
                        let record = base + position
                        let ino = record.loadUnaligned(as: UInt64.self)
                        let next = record.loadUnaligned(fromByteOffset: 8, as: Int64.self)
                        let length = Int(record.loadUnaligned(fromByteOffset: 16, as: UInt16.self))
                        let type = record.load(fromByteOffset: 18, as: UInt8.self)
                        let namePointer = (record + 19).assumingMemoryBound(to: CChar.self)
                        let nameLength = strnlen(namePointer, length - 19)
                        let entry = DirectoryEntry(name: UnsafeRawBufferPointer(start: record + 19, count: nameLength),
                                                   inode: ino, type: UInt32(type), nextOffset: UInt64(bitPattern: next))
                        if !emit(entry) { return }
                        position += length
                    }
                }
            }
        }
    }

    public func releasedir(_ directory: Directory) {}

    public func fsyncdir(_ directory: Directory, dataOnly: Bool, _ caller: Credentials) throws(Errno) {
        if (dataOnly ? fdatasync(directory.fd) : Glibc.fsync(directory.fd)) != 0 { throw ownFailure("fsync(dir)") }
    }

    // MARK: - File system

    public func statfs(_ inode: Inode, _ caller: Credentials) throws(Errno) -> FileSystemStatistics {
        become(caller)
        return try withPathFD(inode) { fd throws(Errno) -> FileSystemStatistics in
            var st = statvfs()
            if fstatvfs(fd, &st) != 0 { throw ownFailure("fstatvfs") }
            return FileSystemStatistics(blocks: UInt64(st.f_blocks), freeBlocks: UInt64(st.f_bfree),
                                        availableBlocks: UInt64(st.f_bavail), files: UInt64(st.f_files),
                                        freeFiles: UInt64(st.f_ffree), blockSize: UInt32(truncatingIfNeeded: st.f_bsize),
                                        fragmentSize: UInt32(truncatingIfNeeded: st.f_frsize),
                                        maximumNameLength: UInt32(truncatingIfNeeded: st.f_namemax))
        }
    }

    public func syncfs(_ inode: Inode, _ caller: Credentials) throws(Errno) {
        become(caller)
        if inode.key.mountID == rootMountID || !(inode.isDirectory || inode.isRegularFile) {
            if ferry_syncfs(mountFD) != 0 { throw ownFailure("syncfs") }
            return
        }
        // syncfs refuses O_PATH fds: open the (type-checked) node read-only as the daemon.
        try withPathFD(inode) { pathFD throws(Errno) in
            let fd = try ThreadCredentialState.current.asDaemon { () throws(Errno) in
                try reopen(pathFD, flags: O_RDONLY | O_NONBLOCK | O_CLOEXEC)
            }
            defer { close(fd) }
            if ferry_syncfs(fd) != 0 { throw ownFailure("syncfs") }
        }
    }

    public func destroy() {}

    // MARK: - Extended attributes

    /// xattrs only on regular files and directories (like virtiofsd): reaching a special
    /// file's or symlink's xattrs would need a path or an open we refuse to make. The node
    /// is reopened read-only through /proc/self/fd (opened before any sandbox), so no path
    /// is ever resolved: this works the same after pivot_root into the export.
    @inline(__always)
    func withXattrFD<R>(_ inode: Inode, _ body: (Int32) throws(Errno) -> R) throws(Errno) -> R {
        guard inode.isRegularFile || inode.isDirectory else { throw .notSupported }
        let flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | (inode.isDirectory ? O_DIRECTORY : 0)
        let fd = try withPathFD(inode) { pathFD throws(Errno) -> Int32 in try reopen(pathFD, flags: flags) }
        defer { close(fd) }
        return try body(fd)
    }

    /// trusted.* and security.* are guarded by CAP_SYS_ADMIN / CAP_SETFCAP, which the daemon
    /// keeps whatever its fsuid: only a root caller may change them.
    @inline(__always)
    func checkPrivilegedXattr(_ name: AttributeName, _ caller: Credentials) throws(Errno) {
        if caller.uid != 0 && (hasPrefix(name.bytes, "trusted.") || hasPrefix(name.bytes, "security.")) {
            throw .notPermitted
        }
    }

    public func setxattr(_ inode: Inode, name: AttributeName, value: UnsafeRawBufferPointer, flags: Int32,
                         _ caller: Credentials) throws(Errno) {
        try setxattr(inode, name: name, value: value, flags: flags, clearingSetGID: false, caller)
    }

    /// Setting an access ACL sets the mode's group bits, and the host clears S_ISGID when the
    /// caller is not in the file's group, which it judges from the groups FUSE gives us (the
    /// primary one alone). The client kernel judged with all of them and says what to do
    /// (`clearingSetGID`, FUSE_SETXATTR_ACL_KILL_SGID); so when its checks are trusted, the
    /// owner's access ACL is set as the daemon, which never clears, and S_ISGID is cleared
    /// exactly when asked.
    public func setxattr(_ inode: Inode, name: AttributeName, value: UnsafeRawBufferPointer, flags: Int32,
                         clearingSetGID: Bool, _ caller: Credentials) throws(Errno) {
        become(caller)
        try checkWritable()
        try checkPrivilegedXattr(name, caller)
        let accessACL = name.bytes.count == 23 && strcmp(name.cString, accessACLName) == 0
        try withXattrFD(inode) { fd throws(Errno) in
            if accessACL && options.trustClientPermissions && caller.uid != 0 {
                var st = stat()
                if fstat(fd, &st) != 0 { throw ownFailure("fstat") }
                guard st.st_uid == caller.uid else { throw .notPermitted }  // only the owner sets ACLs
                try ThreadCredentialState.current.asDaemon { () throws(Errno) in
                    if ferry_fsetxattr(fd, name.cString, value.baseAddress, value.count, flags) != 0 { throw ownFailure("setxattr") }
                }
            } else if ferry_fsetxattr(fd, name.cString, value.baseAddress, value.count, flags) != 0 {
                throw ownFailure("setxattr")
            }
            if clearingSetGID && accessACL { try clearSetGID(ioFD: fd) }
        }
    }

    /// Clears S_ISGID on an open node, as the daemon (its group bits stay, so an ACL's mask does).
    func clearSetGID(ioFD fd: Int32) throws(Errno) {
        var st = stat()
        if fstat(fd, &st) != 0 { throw ownFailure("fstat") }
        let mode = UInt32(st.st_mode)
        guard mode & FileMode.setGID != 0 else { return }
        try ThreadCredentialState.current.asDaemon { () throws(Errno) in
            if fchmod(fd, mode_t(mode & 0o7777 & ~FileMode.setGID)) != 0 { throw ownFailure("fchmod") }
        }
    }

    public func getxattr(_ inode: Inode, name: AttributeName, into buffer: UnsafeMutableRawBufferPointer,
                         _ caller: Credentials) throws(Errno) -> Int {
        become(caller)
        return try withXattrFD(inode) { fd throws(Errno) -> Int in
            let n = ferry_fgetxattr(fd, name.cString, buffer.baseAddress, buffer.count)
            if n < 0 { throw ownFailure("getxattr") }
            return n
        }
    }

    public func listxattr(_ inode: Inode, into buffer: UnsafeMutableRawBufferPointer, _ caller: Credentials) throws(Errno) -> Int {
        become(caller)
        return try withXattrFD(inode) { fd throws(Errno) -> Int in
            let n = ferry_flistxattr(fd, buffer.baseAddress?.assumingMemoryBound(to: CChar.self), buffer.count)
            if n < 0 { throw ownFailure("listxattr") }
            return n
        }
    }

    public func removexattr(_ inode: Inode, name: AttributeName, _ caller: Credentials) throws(Errno) {
        become(caller)
        try checkWritable()
        try checkPrivilegedXattr(name, caller)
        try withXattrFD(inode) { fd throws(Errno) in
            if ferry_fremovexattr(fd, name.cString) != 0 { throw ownFailure("removexattr") }
        }
    }

    // MARK: - Access, locks, ranges

    public func access(_ inode: Inode, mask: Int32, _ caller: Credentials) throws(Errno) {
        become(caller)
        if options.readOnly && mask & W_OK != 0 && !inode.isSymlink { throw .readOnly }
        try withPathFD(inode) { fd throws(Errno) in
            try withDescriptorName(fd) { name throws(Errno) in
                // AT_EACCESS: check with the thread's fs credentials (the caller's), not the
                // real uid.
                if faccessat(procFD, name, mask, AT_EACCESS) != 0 { throw ownFailure("faccessat") }
            }
        }
    }

    public func fallocate(_ file: File, mode: Int32, offset: UInt64, length: UInt64, _ caller: Credentials) throws(Errno) {
        guard offset <= UInt64(Int64.max), length <= UInt64(Int64.max) else { throw .invalid }
        become(caller)
        if ferry_fallocate(file.fd, mode, Int64(offset), Int64(length)) != 0 { throw Errno.current }
    }

    public func lseek(_ file: File, offset: UInt64, whence: Int32, _ caller: Credentials) throws(Errno) -> UInt64 {
        guard whence == Int32(FERRY_SEEK_DATA) || whence == Int32(FERRY_SEEK_HOLE) else { throw .invalid }
        guard offset <= UInt64(Int64.max) else { throw .noDevice }
        let result = Glibc.lseek(file.fd, off_t(offset), whence)
        if result < 0 { throw ownFailure("lseek") }  // ENXIO: beyond EOF / no more data
        return UInt64(result)
    }

    public func copyFileRange(from source: File, at sourceOffset: UInt64, to destination: File, at destinationOffset: UInt64,
                              length: UInt64, flags: UInt64, _ caller: Credentials) throws(Errno) -> Int {
        guard sourceOffset <= UInt64(Int64.max), destinationOffset <= UInt64(Int64.max),
              flags <= UInt64(UInt32.max) else { throw .invalid }
        become(caller)
        var inOffset = Int64(sourceOffset), outOffset = Int64(destinationOffset)
        let n = ferry_copy_file_range(source.fd, &inOffset, destination.fd, &outOffset,
                                      Int(min(length, UInt64(Int.max))), UInt32(flags))
        if n < 0 { throw Errno.current }
        return n
    }

    public func tmpfile(_ parent: Inode, mode: UInt32, flags: Int32, _ caller: Credentials) throws(Errno) -> (Entry, OpenedFile<File>) {
        become(caller)
        try checkWritable()
        guard parent.isDirectory else { throw .notDirectory }
        var openFlags = sanitizedOpenFlags(flags) & ~O_DIRECTORY
        if flags & O_EXCL != 0 { openFlags |= O_EXCL }  // O_TMPFILE|O_EXCL: never linkable
        if openFlags & O_ACCMODE == O_RDONLY { openFlags = (openFlags & ~O_ACCMODE) | O_RDWR }
        return try withPathFD(parent) { pathFD throws(Errno) -> (Entry, OpenedFile<File>) in
            var creation = creationMode(mode, caller, parentFD: pathFD)
            let fd = try reopen(pathFD, flags: oTmpfile | openFlags, mode: UInt32(creation.syscallMode))
            let file = File(fd: fd)
            // Pinned: an unlinked inode may not be reachable by file handle.
            var entry = try makeEntry(ioFD: fd, pin: true)
            settleCreationMode(&entry, &creation, parentFD: pathFD, ioFD: fd)
            return (entry, OpenedFile(file: file))
        }
    }
}
