/// What a driver hands back for a node it found or made: its identity, its state and
/// its attributes. The core interns it: if `key` is already known, the existing node is
/// used and this `inode` value is dropped.
public struct DriverEntry<Key: Hashable & Sendable, Inode: AnyObject & Sendable>: Sendable {
    public var key: Key
    public var inode: Inode
    public var attributes: Attributes
    public init(key: Key, inode: Inode, attributes: Attributes) {
        self.key = key; self.inode = inode; self.attributes = attributes
    }
}

/// A file a driver opened, with the FOPEN_* bits the driver itself needs
/// (e.g. non-seekable). The core adds its cache policy bits.
public struct OpenedFile<File: AnyObject & Sendable>: Sendable {
    public var file: File
    public var replyFlags: UInt32
    public init(file: File, replyFlags: UInt32 = 0) { self.file = file; self.replyFlags = replyFlags }
}

/// An extended attribute's name, checked by the core: 1 to 255 bytes, followed in
/// memory by a NUL. A view into the request buffer.
/// @unchecked Sendable: a read-only view into the request buffer, which one request owns while it runs.
public struct AttributeName: @unchecked Sendable {
    public let bytes: UnsafeRawBufferPointer
    init(unchecked bytes: UnsafeRawBufferPointer) { self.bytes = bytes }
    /// Sound: the FUSE decoder checked that a NUL follows the name in the request buffer.
    public var cString: UnsafePointer<CChar> { bytes.baseAddress!.assumingMemoryBound(to: CChar.self) }
    public static func validated(_ bytes: UnsafeRawBufferPointer) -> Result<AttributeName, Errno> {
        if bytes.isEmpty { return .failure(.invalid) }
        if bytes.count > 255 { return .failure(.range) }
        return .success(AttributeName(unchecked: bytes))
    }
    public var string: String { String(decoding: bytes, as: UTF8.self) }
}

/// A backend: one Swift method per file system operation. Most methods have a default
/// that answers ENOSYS, so a driver implements what its backend can express and the
/// rest fails loudly; `flush`, `release`, `releasedir`, `destroy` and `sessionEnded`
/// default to doing nothing, and the `existing:`, `killSuidGid:` and `clearingSetGID:`
/// variants to the plain method. `root()` has no default.
///
/// The core owns node ids, lookup counts, open-file handles, credentials and cache
/// policy; a driver only ever sees its own `Inode`, `File` and `Directory` values and
/// names the core has validated. Drivers must be safe to call from several request
/// threads at once.
///
/// State objects are classes: the core keeps one reference per known node or open
/// handle and another for the duration of each request using it, so a driver frees a
/// resource (closes an fd, drops a handle) in `deinit` and can never have it pulled out
/// from under a request running on another thread.
///
/// What holds for every operation (`FUSEServer.dispatch`, Server+Dispatch.swift):
/// - Before the call, node ids and `fh`s are resolved (an unknown one is EBADF, one a
///   migration could not restore EIO), names checked by `FileName.validated`, and every
///   change refused with EROFS on a read-only export; MKNOD, MKDIR, SYMLINK, CREATE and
///   TMPFILE have an inode reserved under the export's quota. The core checks no
///   permissions and switches no thread credentials: `Credentials` carry the caller's uid
///   and gid after the export's id map, a non-zero `umask` only on creating requests
///   under FUSE_DONT_MASK, and `groups` only when the kernel sent them (FUSE_EXT_GROUPS,
///   with creating requests). Linux clients check permissions themselves (virtio-fs
///   always, `ferry mount` with `default_permissions`); a driver acts as the caller or
///   lets its backend check (NFS).
/// - Every `Entry` a request returns goes through `NodeTable.intern` and gives the
///   kernel one more lookup reference: LOOKUP, READDIRPLUS, MKNOD, MKDIR, SYMLINK, LINK,
///   CREATE and TMPFILE alike. FORGET pays them back without calling the driver; a driver
///   learns that a node is gone only when its `Inode` is deinitialised. At the node
///   limit interning fails with ENFILE after the driver's change is done (the name stays).
/// - A thrown `Errno` becomes the reply's error as is (no body, no translation, no
///   retry); throw only positive errno values. The core remembers no ENOSYS, but the
///   kernel does for some operations, named below. INTERRUPT is ignored: a driver retries
///   EINTR itself and never answers it. ESTALE means the node itself is gone from the
///   backend (the client retries a path walk once with fresh LOOKUPs), ENOENT that a
///   name is.
/// - Each call runs on a transport's queue thread, and DESTROY and stopping an export
///   wait for the calls in flight: a driver bounds every wait (the backend's timeout)
///   and never blocks for ever.
public protocol FileSystemDriver: AnyObject, Sendable {
    /// The driver's state for a node the kernel knows (an fd, an NFS file handle, ...).
    associatedtype Inode: AnyObject & Sendable
    /// The identity of a node: two lookups of the same file give equal keys, and a new
    /// file never gets the key of a deleted one the kernel may still hold (NodeTable).
    associatedtype InodeKey: Hashable & Sendable
    /// State of an open file (OPEN / CREATE / TMPFILE).
    associatedtype File: AnyObject & Sendable
    /// State of an open directory (OPENDIR).
    associatedtype Directory: AnyObject & Sendable

    typealias Entry = DriverEntry<InodeKey, Inode>

    /// The export's root, node id 1, which the kernel never forgets. Called when the
    /// server core is made (a failure there fails the export's start) and, on an export
    /// with a quota, once more by the start-up usage scan (QuotaScan).
    func root() throws(Errno) -> Entry

    /// LOOKUP of `name` in `parent`. Implement this or the `existing:` variant, which is
    /// what the core calls and which defaults to this one.
    func lookup(_ parent: Inode, _ name: FileName, _ caller: Credentials) throws(Errno) -> Entry
    /// LOOKUP with a way to reuse a node the core already holds: `existing(key)` gives that
    /// node's inode if the kernel knows it, so a driver can skip making a new `Inode` for a
    /// name looked up again (the steady state: the kernel revalidates names all the time).
    /// Also called for each READDIRPLUS name but `.` and `..` (an error skips that name,
    /// ENFILE ends the reply), by quota accounting before UNLINK, RMDIR and RENAME, and by
    /// the start-up quota scan: those Entries are never interned, so a lookup must have
    /// no effect a FORGET has to undo. `parent` may be any node (ENOTDIR is the driver's).
    /// ENOENT goes back as an error, so the kernel keeps no negative entry with a timeout.
    func lookup(_ parent: Inode, _ name: FileName, _ caller: Credentials, existing: (InodeKey) -> Inode?) throws(Errno) -> Entry
    /// GETATTR: `file` is the open file when the kernel asks through one (FUSE_GETATTR_FH)
    /// and the core knows its `fh` (nil otherwise, never an error). Also called by the core
    /// under a quota, for the size before WRITE, FALLOCATE, COPY_FILE_RANGE and a resizing
    /// SETATTR, and by the default `setxattr(clearingSetGID:)`. The core maps the reply's
    /// uid and gid back to guest ids. A node unlinked while still open answers as fstat(2)
    /// does (link count 0), not ESTALE.
    func getattr(_ inode: Inode, _ file: File?, _ caller: Credentials) throws(Errno) -> Attributes
    /// SETATTR: only the non-nil fields change. The core has mapped uid and gid to host
    /// ids, masked `mode` to 0o7777 and set `killSuidGid` for FATTR_KILL_SUIDGID or a
    /// SETATTR naming no change; it checks no ownership and does not bound `size` (a
    /// hostile client may send more than Int64.max). `file` as in `getattr`. Returns the
    /// attributes after the change, which the kernel caches.
    func setattr(_ inode: Inode, _ file: File?, _ changes: AttributeChanges, _ caller: Credentials) throws(Errno) -> Attributes
    /// READLINK: writes the link target into `buffer` (at most `buffer.count` bytes:
    /// PATH_MAX, or less if the transport's reply area is smaller) and returns its length,
    /// no NUL. A longer target is cut to the buffer. The core does not check the node's
    /// type: EINVAL for anything but a symlink is the driver's.
    func readlink(_ inode: Inode, into buffer: UnsafeMutableRawBufferPointer, _ caller: Credentials) throws(Errno) -> Int
    /// SYMLINK. `target` is stored as given; it is never followed by the server. A NUL
    /// follows it in memory; the core has refused an empty target (ENOENT) and one of
    /// PATH_MAX bytes or more (ENAMETOOLONG).
    func symlink(_ parent: Inode, _ name: FileName, target: UnsafeRawBufferPointer, _ caller: Credentials) throws(Errno) -> Entry
    /// MKNOD. `mode` includes the file type: the core lets through regular files, fifos
    /// and sockets, device nodes only when the export allows them (EPERM otherwise), and
    /// refuses any other type (EINVAL). `rdev` is the kernel's encoding, unchecked.
    func mknod(_ parent: Inode, _ name: FileName, mode: UInt32, rdev: UInt32, _ caller: Credentials) throws(Errno) -> Entry
    /// MKDIR. `mode` is the permission bits with S_IFDIR added by the core.
    func mkdir(_ parent: Inode, _ name: FileName, mode: UInt32, _ caller: Credentials) throws(Errno) -> Entry
    /// UNLINK. Lookup counts do not change: the node stays known until the kernel's
    /// FORGET, so its `Inode` must keep serving open files and GETATTR.
    func unlink(_ parent: Inode, _ name: FileName, _ caller: Credentials) throws(Errno)
    /// RMDIR; as `unlink`. The core does not check that the name is a directory.
    func rmdir(_ parent: Inode, _ name: FileName, _ caller: Credentials) throws(Errno)
    /// RENAME and RENAME2. `flags` are RENAME_NOREPLACE / RENAME_EXCHANGE / RENAME_WHITEOUT:
    /// the core refused unknown bits and NOREPLACE with EXCHANGE (EINVAL). Moved nodes keep
    /// their node ids, so keys must not depend on names. ENOSYS with flags makes the kernel
    /// answer EINVAL to every later flagged rename without asking.
    func rename(_ parent: Inode, _ name: FileName, to newParent: Inode, _ newName: FileName, flags: UInt32, _ caller: Credentials) throws(Errno)
    /// LINK: returns the entry of the same node (same key), with its new link count. The
    /// core interns it, adding one lookup reference as the kernel expects. No type check in
    /// the core: a directory is the driver's to refuse (EPERM).
    func link(_ inode: Inode, to newParent: Inode, _ newName: FileName, _ caller: Credentials) throws(Errno) -> Entry
    /// OPEN. `flags` are open(2) flags without O_CREAT/O_EXCL/O_NOCTTY, without O_DIRECT
    /// unless the export allows it, and with the writeback cache O_WRONLY widened to O_RDWR
    /// and O_APPEND removed. A read-only export has already refused write access and O_TRUNC.
    /// Only regular files may be opened this way; anything else must be refused (never
    /// open a fifo or device). Never ENOSYS: the kernel would stop sending OPEN and use
    /// `fh` 0, which the core does not know. At the handle limit the core answers ENFILE
    /// and calls `release` on the `File` (the kernel never gets its `fh`).
    func open(_ inode: Inode, flags: Int32, killSuidGid: Bool, _ caller: Credentials) throws(Errno) -> OpenedFile<File>
    /// CREATE, sent after a negative LOOKUP, so the name may exist by now (another client
    /// made it). `mode` is the permission bits with S_IFREG added; `flags` as for `open`,
    /// plus O_EXCL when the caller asked for it: an existing name then fails with EEXIST and
    /// is left alone; without O_EXCL the existing regular file is opened as OPEN would (O_TRUNC
    /// truncating it). The core inserts the handle, then interns the entry (one lookup
    /// reference); if either fails, the core calls `release` on the `File` and the file stays
    /// created. ENOSYS makes the kernel use MKNOD and OPEN instead for good.
    func create(_ parent: Inode, _ name: FileName, mode: UInt32, flags: Int32, _ caller: Credentials) throws(Errno) -> (Entry, OpenedFile<File>)
    /// CREATE with FUSE_OPEN_KILL_SUIDGID: when the name exists and O_TRUNC truncates it, clear
    /// setuid (and setgid if group-executable) as a truncation by a caller without CAP_FSETID
    /// does. The default ignores the flag and calls `create(_:_:mode:flags:_:)`.
    func create(_ parent: Inode, _ name: FileName, mode: UInt32, flags: Int32, killSuidGid: Bool,
                _ caller: Credentials) throws(Errno) -> (Entry, OpenedFile<File>)
    /// READ: reads up to `buffers.totalLength` bytes at `offset` straight into `buffers`
    /// (the guest's own memory, or the transport's buffer, cut by the core to the size
    /// asked) and returns bytes read, never more. Fewer means end of file at `offset + n`:
    /// the kernel zero-fills the rest and may shrink its cached size, so a driver reads on
    /// until EOF, and returns what it has when an error follows some bytes. `offset` is
    /// unchecked (a driver refuses past Int64.max).
    func read(_ file: File, offset: UInt64, into buffers: IOVectors, _ caller: Credentials) throws(Errno) -> Int
    /// WRITE: writes `buffers` at `offset`; returns bytes written, at most their length
    /// (fewer is a short write the writer sees). `buffers` may be guest memory the guest can
    /// change meanwhile: read it once. The core has checked that `offset` plus the length
    /// stays within Int64.max (EFBIG) and reserved the growth under a quota. With
    /// `killSuidGid` the driver clears setuid (and setgid if group-executable) as a write by
    /// an unprivileged caller would. An error found after answering (a write behind) goes
    /// to the next FLUSH or FSYNC.
    func write(_ file: File, offset: UInt64, from buffers: IOVectors, killSuidGid: Bool, _ caller: Credentials) throws(Errno) -> Int
    /// FLUSH: each close(2) of a descriptor of this open file (none, or several), with the
    /// closer's lock owner; the place to report errors of writes not yet stable. The
    /// default succeeds: ENOSYS would make the kernel stop sending FLUSH.
    func flush(_ file: File, lockOwner: UInt64, _ caller: Credentials) throws(Errno)
    /// RELEASE: the kernel's last use of `file`. The core has already taken the handle out
    /// of its table (the reply is always success) and drops its reference afterwards; a
    /// request still running on another thread may hold `file` a little longer. Not called
    /// for handles dropped when the session ends (`sessionEnded`).
    func release(_ file: File, flags: Int32, _ caller: Credentials)
    /// FSYNC (`dataOnly`: fdatasync). ENOSYS makes the kernel treat every later fsync(2)
    /// as done without asking.
    func fsync(_ file: File, dataOnly: Bool, _ caller: Credentials) throws(Errno)
    /// OPENDIR. The core checks neither the type nor the export's read-only flag; `flags`
    /// are the client's open(2) flags. The start-up quota scan also opens directories, as
    /// root with flags 0. Never ENOSYS (as for `open`). At the handle limit the core
    /// answers ENFILE and calls `releasedir` on the `Directory`.
    func opendir(_ inode: Inode, flags: Int32, _ caller: Credentials) throws(Errno) -> Directory
    /// READDIR and READDIRPLUS (and the quota scan): reports entries from `offset` on
    /// (0 = the start) until `emit` returns false (the reply is full: that entry goes again
    /// next time) or the directory ends. Offsets are the driver's own cookies
    /// (`nextOffset`, never 0). Names must be 1 to 255 bytes without `/` or NUL (or `.` and
    /// `..`): the core leaves others out of READDIR and READDIRPLUS alike (a client kernel
    /// fails the whole listing with EIO on an empty name or one with `/`). For READDIRPLUS, `emit` calls `lookup` on this driver: hold nothing
    /// lookup needs while calling it. An error after some entries is dropped, they are sent.
    func readdir(_ directory: Directory, at offset: UInt64, _ caller: Credentials, _ emit: (DirectoryEntry) -> Bool) throws(Errno)
    /// RELEASEDIR; as `release`, for directories.
    func releasedir(_ directory: Directory)
    /// FSYNCDIR. ENOSYS makes the kernel stop asking, as for `fsync`.
    func fsyncdir(_ directory: Directory, dataOnly: Bool, _ caller: Credentials) throws(Errno)
    /// STATFS of the file system holding `inode`. Under a quota the core lowers the block
    /// and file counts to what the quota leaves.
    func statfs(_ inode: Inode, _ caller: Credentials) throws(Errno) -> FileSystemStatistics
    /// SETXATTR. `flags` are XATTR_CREATE / XATTR_REPLACE. Extended attribute calls reach a
    /// driver only on exports with xattrs on (the core answers ENOSYS otherwise); ENOSYS,
    /// from either, makes the kernel answer EOPNOTSUPP to every later xattr call without
    /// asking. `value` is the request's bytes (no NUL after them); the core checks no
    /// namespace (trusted., security.): the client kernel checked its caller's privileges.
    func setxattr(_ inode: Inode, name: AttributeName, value: UnsafeRawBufferPointer, flags: Int32, _ caller: Credentials) throws(Errno)
    /// SETXATTR with FUSE_SETXATTR_ACL_KILL_SGID: `clearingSetGID` when the client kernel, which
    /// knows the caller's groups, says that the caller setting an access ACL is neither in the
    /// file's group nor holds CAP_FSETID, so S_ISGID must be cleared as setting it locally
    /// would. The default calls `setxattr(_:name:value:flags:_:)`, then clears the bit with
    /// `getattr` and `setattr`. The core always calls this variant.
    func setxattr(_ inode: Inode, name: AttributeName, value: UnsafeRawBufferPointer, flags: Int32, clearingSetGID: Bool,
                  _ caller: Credentials) throws(Errno)
    /// GETXATTR. With an empty `buffer` (size 0 asked), returns the value's size; otherwise
    /// fills it and returns the length (ERANGE if too small, ENODATA if there is none). The
    /// buffer is the size asked, or less if the transport's reply area is smaller.
    func getxattr(_ inode: Inode, name: AttributeName, into buffer: UnsafeMutableRawBufferPointer, _ caller: Credentials) throws(Errno) -> Int
    /// LISTXATTR: NUL-separated names, sized as in `getxattr` (an empty `buffer` asks for the size).
    func listxattr(_ inode: Inode, into buffer: UnsafeMutableRawBufferPointer, _ caller: Credentials) throws(Errno) -> Int
    /// REMOVEXATTR (ENODATA if there is none).
    func removexattr(_ inode: Inode, name: AttributeName, _ caller: Credentials) throws(Errno)
    /// ACCESS, which a Linux client sends only when mounted without `default_permissions`
    /// (virtio-fs always has it, `ferry mount` sets it). The core has refused W_OK on a read-only
    /// export (EROFS). ENOSYS makes the kernel grant every later check without asking.
    func access(_ inode: Inode, mask: Int32, _ caller: Credentials) throws(Errno)
    /// Whether this driver keeps record locks where every client of the same storage sees
    /// them (the host's kernel for a directory, the NFS server): the core agrees
    /// FUSE_POSIX_LOCKS and FUSE_FLOCK_LOCKS only then (and only where the export allows
    /// it). A client that did not agree them keeps its locks in its own kernel.
    var supportsRecordLocks: Bool { get }
    /// GETLK: the first lock that conflicts with `lock` for `owner` (range, F_RDLCK or
    /// F_WRLCK, the holder's pid when it is known, else 0), or `lock` with type F_UNLCK when
    /// none does. "To end of file" is `RecordLock.toEndOfFile` in both directions. Reaches
    /// the driver only on a session that agreed FUSE_POSIX_LOCKS (ENOSYS otherwise).
    func getlk(_ file: File, owner: UInt64, _ lock: RecordLock, _ caller: Credentials) throws(Errno) -> RecordLock
    /// SETLK and SETLKW: takes (or, with F_UNLCK, drops) `lock` for `owner`; `flock` for a
    /// BSD flock(2) lock on the open file itself (the range is then the whole file). Never
    /// waits: a conflict is EAGAIN, and the core retries a waiting request (SETLKW) on its
    /// lock-wait thread, so a lock held elsewhere never holds a queue thread, DESTROY or
    /// the export's stop. A lock owner is one process (or open file, for flock) of one
    /// client; FLUSH with that owner drops its POSIX locks on the file.
    func setlk(_ file: File, owner: UInt64, _ lock: RecordLock, flock: Bool, _ caller: Credentials) throws(Errno)
    /// FALLOCATE. `mode` is fallocate(2)'s: 0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, ...,
    /// passed as sent. The core has checked the range against Int64.max (EFBIG), reserved
    /// growth under a byte quota and refused KEEP_SIZE beyond the end there (EOPNOTSUPP).
    /// ENOSYS makes the kernel answer EOPNOTSUPP from then on without asking.
    func fallocate(_ file: File, mode: Int32, offset: UInt64, length: UInt64, _ caller: Credentials) throws(Errno)
    /// LSEEK: SEEK_DATA / SEEK_HOLE (SEEK_SET/CUR/END are the kernel's business; `whence`
    /// is passed unchecked). ENXIO past the end or after the last data. ENOSYS makes the
    /// kernel treat the whole file as data from then on.
    func lseek(_ file: File, offset: UInt64, whence: Int32, _ caller: Credentials) throws(Errno) -> UInt64
    /// COPY_FILE_RANGE between two open files of this export: returns bytes copied (fewer
    /// is a short copy). The reply carries 32 bits, so a driver copies at most UInt32.max
    /// bytes per call. The core has checked both ranges (EFBIG) and reserved the
    /// destination's growth under a quota. ENOSYS makes the kernel copy through READ and
    /// WRITE from then on.
    func copyFileRange(from source: File, at sourceOffset: UInt64, to destination: File, at destinationOffset: UInt64,
                       length: UInt64, flags: UInt64, _ caller: Credentials) throws(Errno) -> Int
    /// SYNCFS (virtio-fs guests, on sync(2) and syncfs(2)): `inode` is the node the kernel
    /// names, its root. ENOSYS makes the kernel stop asking.
    func syncfs(_ inode: Inode, _ caller: Credentials) throws(Errno)
    /// TMPFILE (O_TMPFILE): an unnamed file in `parent`, open. `mode` and `flags` as for
    /// `create` (O_EXCL: never linkable), and the reply likewise: the entry is interned
    /// (one lookup reference).
    func tmpfile(_ parent: Inode, mode: UInt32, flags: Int32, _ caller: Credentials) throws(Errno) -> (Entry, OpenedFile<File>)
    /// Whether this driver's open files are host files the kernel could read and write
    /// itself (FUSE passthrough, `withBackingDescriptor`). Default false: the server then never
    /// offers passthrough, and every byte goes through the driver.
    var supportsPassthrough: Bool { get }
    /// Passthrough: runs `register` with a descriptor of `file`, a regular file the driver
    /// opened beneath the export's root, under the credentials the kernel should later open
    /// that file with (the daemon's own: the kernel keeps them with the backing file). nil
    /// when this file has none (its bytes stay with the driver). The default answers nil.
    func withBackingDescriptor<R>(of file: File, _ register: (Int32) throws(Errno) -> R) throws(Errno) -> R?
    /// The export stops serving for good (`FUSEServer.shutdown`: the daemon removes or
    /// restarts it, `ferry mount` or `ferry virtiofsd` ends), after `sessionEnded`. Not
    /// called for the guest's DESTROY or a lost connection, after which a new INIT may come.
    func destroy()
    /// The session ended (DESTROY, the front-end went away, or `shutdown`) with these
    /// handles still open: the core drops them without RELEASE, so a driver that holds data
    /// for open files (written behind, uncommitted) flushes them now. A new INIT may follow.
    func sessionEnded()

    // Live migration (docs/migration.md). A driver that cannot identify its nodes to
    // another daemon keeps the defaults: `supportsMigration` false, the rest ENOSYS.

    /// Whether this export can hand its nodes and open handles to another daemon.
    var supportsMigration: Bool { get }
    /// What another daemon serving the same backend needs to find `inode` again.
    func migrationIdentity(ofNode inode: Inode, _ options: MigrationOptions) throws(Errno) -> [UInt8]
    /// The node an identity from `migrationIdentity(ofNode:_:)` names, found on this daemon.
    func migratedNode(_ identity: [UInt8], _ options: MigrationOptions) throws(Errno) -> Entry
    /// An open file's identity: its node and how it was opened.
    func migrationIdentity(ofFile file: File, _ options: MigrationOptions) throws(Errno) -> [UInt8]
    /// The file reopened here as it was open on the source.
    func migratedFile(_ identity: [UInt8], _ options: MigrationOptions) throws(Errno) -> File
    func migrationIdentity(ofDirectory directory: Directory, _ options: MigrationOptions) throws(Errno) -> [UInt8]
    func migratedDirectory(_ identity: [UInt8], _ options: MigrationOptions) throws(Errno) -> Directory
    /// Source, right after its state was saved (every ring stopped): whatever the backend
    /// holds for another writer to see (written-behind data, pending metadata) is made
    /// durable and any exclusive claim on the backend given up. Throwing refuses the save:
    /// the migration fails and the guest runs on here.
    func migrationSaved() throws(Errno)
    /// Destination, once every node of a migrated state was found and before it is
    /// installed: the backend's exclusive claim is taken. Throwing refuses the state.
    func migrationWillLoad() throws(Errno)
    /// Source, when the front-end restarts the rings after the state was saved (the
    /// migration failed and the guest resumes here): take back what `migrationSaved` gave
    /// up, or refuse writes, before any request is served.
    func migrationResumedAtSource()
}

extension FileSystemDriver {
    public func lookup(_ parent: Inode, _ name: FileName, _ caller: Credentials) throws(Errno) -> Entry { throw .notImplemented }
    public func lookup(_ parent: Inode, _ name: FileName, _ caller: Credentials, existing: (InodeKey) -> Inode?) throws(Errno) -> Entry {
        try lookup(parent, name, caller)
    }
    public func getattr(_ inode: Inode, _ file: File?, _ caller: Credentials) throws(Errno) -> Attributes { throw .notImplemented }
    public func setattr(_ inode: Inode, _ file: File?, _ changes: AttributeChanges, _ caller: Credentials) throws(Errno) -> Attributes { throw .notImplemented }
    public func readlink(_ inode: Inode, into buffer: UnsafeMutableRawBufferPointer, _ caller: Credentials) throws(Errno) -> Int { throw .notImplemented }
    public func symlink(_ parent: Inode, _ name: FileName, target: UnsafeRawBufferPointer, _ caller: Credentials) throws(Errno) -> Entry { throw .notImplemented }
    public func mknod(_ parent: Inode, _ name: FileName, mode: UInt32, rdev: UInt32, _ caller: Credentials) throws(Errno) -> Entry { throw .notImplemented }
    public func mkdir(_ parent: Inode, _ name: FileName, mode: UInt32, _ caller: Credentials) throws(Errno) -> Entry { throw .notImplemented }
    public func unlink(_ parent: Inode, _ name: FileName, _ caller: Credentials) throws(Errno) { throw .notImplemented }
    public func rmdir(_ parent: Inode, _ name: FileName, _ caller: Credentials) throws(Errno) { throw .notImplemented }
    public func rename(_ parent: Inode, _ name: FileName, to newParent: Inode, _ newName: FileName, flags: UInt32, _ caller: Credentials) throws(Errno) { throw .notImplemented }
    public func link(_ inode: Inode, to newParent: Inode, _ newName: FileName, _ caller: Credentials) throws(Errno) -> Entry { throw .notImplemented }
    public func open(_ inode: Inode, flags: Int32, killSuidGid: Bool, _ caller: Credentials) throws(Errno) -> OpenedFile<File> { throw .notImplemented }
    public func create(_ parent: Inode, _ name: FileName, mode: UInt32, flags: Int32, _ caller: Credentials) throws(Errno) -> (Entry, OpenedFile<File>) { throw .notImplemented }
    public func create(_ parent: Inode, _ name: FileName, mode: UInt32, flags: Int32, killSuidGid: Bool,
                       _ caller: Credentials) throws(Errno) -> (Entry, OpenedFile<File>) {
        try create(parent, name, mode: mode, flags: flags, caller)
    }
    public func read(_ file: File, offset: UInt64, into buffers: IOVectors, _ caller: Credentials) throws(Errno) -> Int { throw .notImplemented }
    public func write(_ file: File, offset: UInt64, from buffers: IOVectors, killSuidGid: Bool, _ caller: Credentials) throws(Errno) -> Int { throw .notImplemented }
    public func flush(_ file: File, lockOwner: UInt64, _ caller: Credentials) throws(Errno) {}
    public func release(_ file: File, flags: Int32, _ caller: Credentials) {}
    public func fsync(_ file: File, dataOnly: Bool, _ caller: Credentials) throws(Errno) { throw .notImplemented }
    public func opendir(_ inode: Inode, flags: Int32, _ caller: Credentials) throws(Errno) -> Directory { throw .notImplemented }
    public func readdir(_ directory: Directory, at offset: UInt64, _ caller: Credentials, _ emit: (DirectoryEntry) -> Bool) throws(Errno) { throw .notImplemented }
    public func releasedir(_ directory: Directory) {}
    public func fsyncdir(_ directory: Directory, dataOnly: Bool, _ caller: Credentials) throws(Errno) { throw .notImplemented }
    public func statfs(_ inode: Inode, _ caller: Credentials) throws(Errno) -> FileSystemStatistics { throw .notImplemented }
    public func setxattr(_ inode: Inode, name: AttributeName, value: UnsafeRawBufferPointer, flags: Int32, _ caller: Credentials) throws(Errno) { throw .notImplemented }
    public func setxattr(_ inode: Inode, name: AttributeName, value: UnsafeRawBufferPointer, flags: Int32, clearingSetGID: Bool,
                         _ caller: Credentials) throws(Errno) {
        try setxattr(inode, name: name, value: value, flags: flags, caller)
        guard clearingSetGID else { return }
        let mode = try getattr(inode, nil, caller).mode
        if mode & FileMode.setGID != 0 {
            _ = try setattr(inode, nil, AttributeChanges(mode: mode & 0o7777 & ~FileMode.setGID), caller)
        }
    }
    public func getxattr(_ inode: Inode, name: AttributeName, into buffer: UnsafeMutableRawBufferPointer, _ caller: Credentials) throws(Errno) -> Int { throw .notImplemented }
    public func listxattr(_ inode: Inode, into buffer: UnsafeMutableRawBufferPointer, _ caller: Credentials) throws(Errno) -> Int { throw .notImplemented }
    public func removexattr(_ inode: Inode, name: AttributeName, _ caller: Credentials) throws(Errno) { throw .notImplemented }
    public func access(_ inode: Inode, mask: Int32, _ caller: Credentials) throws(Errno) { throw .notImplemented }
    public func getlk(_ file: File, owner: UInt64, _ lock: RecordLock, _ caller: Credentials) throws(Errno) -> RecordLock { throw .notImplemented }
    public func setlk(_ file: File, owner: UInt64, _ lock: RecordLock, flock: Bool, _ caller: Credentials) throws(Errno) { throw .notImplemented }
    public var supportsRecordLocks: Bool { false }
    public func fallocate(_ file: File, mode: Int32, offset: UInt64, length: UInt64, _ caller: Credentials) throws(Errno) { throw .notImplemented }
    public func lseek(_ file: File, offset: UInt64, whence: Int32, _ caller: Credentials) throws(Errno) -> UInt64 { throw .notImplemented }
    public func copyFileRange(from source: File, at sourceOffset: UInt64, to destination: File, at destinationOffset: UInt64,
                              length: UInt64, flags: UInt64, _ caller: Credentials) throws(Errno) -> Int { throw .notImplemented }
    public func syncfs(_ inode: Inode, _ caller: Credentials) throws(Errno) { throw .notImplemented }
    public func tmpfile(_ parent: Inode, mode: UInt32, flags: Int32, _ caller: Credentials) throws(Errno) -> (Entry, OpenedFile<File>) { throw .notImplemented }
    public func destroy() {}
    public func sessionEnded() {}
    public var supportsPassthrough: Bool { false }
    public func withBackingDescriptor<R>(of file: File, _ register: (Int32) throws(Errno) -> R) throws(Errno) -> R? { nil }
}
