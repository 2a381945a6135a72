/// What a driver hands back for a node it found or made: its identity, its state and
/// its attributes. The core interns it: if `key` is already known, the existing node is
/// used and this `inode` value is dropped.
public struct DriverEntry<Key: Hashable & Sendable, Inode: AnyObject & Sendable> {
    public var key: Key
    public var inode: Inode
    public var attributes: Attributes
    public init(key: Key, inode: Inode, attributes: Attributes) {
        self.key = key; self.inode = inode; self.attributes = attributes
    }
}

/// A file a driver opened, with the FOPEN_* bits the driver itself needs
/// (e.g. non-seekable). The core adds its cache policy bits.
public struct OpenedFile<File: AnyObject & Sendable> {
    public var file: File
    public var replyFlags: UInt32
    public init(file: File, replyFlags: UInt32 = 0) { self.file = file; self.replyFlags = replyFlags }
}

/// An extended attribute's name, checked by the core: 1 to 255 bytes, followed in
/// memory by a NUL. A view into the request buffer.
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

/// A backend: one Swift method per file system operation. Every method has a default
/// that answers ENOSYS, so a driver implements what its backend can express and the
/// rest fails loudly.
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
public protocol FileSystemDriver: AnyObject, Sendable {
    /// The driver's state for a node the kernel knows (an fd, an NFS file handle, ...).
    associatedtype Inode: AnyObject & Sendable
    /// The identity of a node: two lookups of the same file give equal keys.
    associatedtype InodeKey: Hashable & Sendable
    /// State of an open file (OPEN / CREATE / TMPFILE).
    associatedtype File: AnyObject & Sendable
    /// State of an open directory (OPENDIR).
    associatedtype Directory: AnyObject & Sendable

    typealias Entry = DriverEntry<InodeKey, Inode>

    /// The export's root node. Called once when the export starts.
    func root() throws(Errno) -> Entry

    func lookup(_ parent: Inode, _ name: FileName, _ caller: Credentials) throws(Errno) -> Entry
    /// LOOKUP with a way to reuse a node the core already holds: `existing(key)` gives that
    /// node's inode if the kernel knows it, so a driver can skip making a new `Inode` for a
    /// name looked up again (the steady state: the kernel revalidates names all the time).
    /// The default ignores the hint and calls `lookup(_:_:_:)`.
    func lookup(_ parent: Inode, _ name: FileName, _ caller: Credentials, existing: (InodeKey) -> Inode?) throws(Errno) -> Entry
    func getattr(_ inode: Inode, _ file: File?, _ caller: Credentials) throws(Errno) -> Attributes
    func setattr(_ inode: Inode, _ file: File?, _ changes: AttributeChanges, _ caller: Credentials) throws(Errno) -> Attributes
    /// Writes the link target into `buffer` (at most `buffer.count` bytes); returns its length.
    func readlink(_ inode: Inode, into buffer: UnsafeMutableRawBufferPointer, _ caller: Credentials) throws(Errno) -> Int
    /// `target` is stored as given; it is never followed by the server. A NUL follows it in memory.
    func symlink(_ parent: Inode, _ name: FileName, target: UnsafeRawBufferPointer, _ caller: Credentials) throws(Errno) -> Entry
    /// `mode` includes the file type; the core has already refused device nodes unless the export allows them.
    func mknod(_ parent: Inode, _ name: FileName, mode: UInt32, rdev: UInt32, _ caller: Credentials) throws(Errno) -> Entry
    func mkdir(_ parent: Inode, _ name: FileName, mode: UInt32, _ caller: Credentials) throws(Errno) -> Entry
    func unlink(_ parent: Inode, _ name: FileName, _ caller: Credentials) throws(Errno)
    func rmdir(_ parent: Inode, _ name: FileName, _ caller: Credentials) throws(Errno)
    /// `flags` are RENAME_NOREPLACE / RENAME_EXCHANGE / RENAME_WHITEOUT.
    func rename(_ parent: Inode, _ name: FileName, to newParent: Inode, _ newName: FileName, flags: UInt32, _ caller: Credentials) throws(Errno)
    func link(_ inode: Inode, to newParent: Inode, _ newName: FileName, _ caller: Credentials) throws(Errno) -> Entry
    /// `flags` are open(2) flags without O_CREAT/O_EXCL/O_NOCTTY. Only regular files may be
    /// opened this way; anything else must be refused (never open a fifo or device).
    func open(_ inode: Inode, flags: Int32, killSuidGid: Bool, _ caller: Credentials) throws(Errno) -> OpenedFile<File>
    func create(_ parent: Inode, _ name: FileName, mode: UInt32, flags: Int32, _ caller: Credentials) throws(Errno) -> (Entry, OpenedFile<File>)
    /// CREATE with FUSE_OPEN_KILL_SUIDGID: when the name exists and O_TRUNC truncates it, clear
    /// setuid (and setgid if group-executable) as a truncation by a caller without CAP_FSETID
    /// does. The default ignores the flag and calls `create(_:_:mode:flags:_:)`.
    func create(_ parent: Inode, _ name: FileName, mode: UInt32, flags: Int32, killSuidGid: Bool,
                _ caller: Credentials) throws(Errno) -> (Entry, OpenedFile<File>)
    /// Reads up to `buffers.totalLength` bytes at `offset` straight into `buffers`; returns bytes read.
    func read(_ file: File, offset: UInt64, into buffers: IOVectors, _ caller: Credentials) throws(Errno) -> Int
    /// Writes `buffers` at `offset`; returns bytes written. With `killSuidGid` the driver clears
    /// setuid (and setgid if group-executable) as a write by an unprivileged caller would.
    func write(_ file: File, offset: UInt64, from buffers: IOVectors, killSuidGid: Bool, _ caller: Credentials) throws(Errno) -> Int
    func flush(_ file: File, lockOwner: UInt64, _ caller: Credentials) throws(Errno)
    /// The kernel's last use of `file`. The core drops its reference afterwards.
    func release(_ file: File, flags: Int32, _ caller: Credentials)
    func fsync(_ file: File, dataOnly: Bool, _ caller: Credentials) throws(Errno)
    func opendir(_ inode: Inode, flags: Int32, _ caller: Credentials) throws(Errno) -> Directory
    /// Reports entries from `offset` on (0 = the start) until `emit` returns false or the
    /// directory ends. Offsets are the driver's own cookies (`nextOffset`).
    func readdir(_ directory: Directory, at offset: UInt64, _ caller: Credentials, _ emit: (DirectoryEntry) -> Bool) throws(Errno)
    func releasedir(_ directory: Directory)
    func fsyncdir(_ directory: Directory, dataOnly: Bool, _ caller: Credentials) throws(Errno)
    func statfs(_ inode: Inode, _ caller: Credentials) throws(Errno) -> FileSystemStatistics
    /// `flags` are XATTR_CREATE / XATTR_REPLACE.
    func setxattr(_ inode: Inode, name: AttributeName, value: UnsafeRawBufferPointer, flags: Int32, _ caller: Credentials) throws(Errno)
    /// SETXATTR with FUSE_SETXATTR_ACL_KILL_SGID: `clearingSetGID` when the client kernel, which
    /// knows the caller's groups, says that the caller setting an access ACL is neither in the
    /// file's group nor holds CAP_FSETID, so S_ISGID must be cleared as setting it locally
    /// would. The default calls `setxattr(_:name:value:flags:_:)`, then clears the bit with
    /// `getattr` and `setattr`.
    func setxattr(_ inode: Inode, name: AttributeName, value: UnsafeRawBufferPointer, flags: Int32, clearingSetGID: Bool,
                  _ caller: Credentials) throws(Errno)
    /// With an empty `buffer`, returns the value's size; otherwise fills it (ERANGE if too small).
    func getxattr(_ inode: Inode, name: AttributeName, into buffer: UnsafeMutableRawBufferPointer, _ caller: Credentials) throws(Errno) -> Int
    /// NUL-separated names; empty `buffer` asks for the size.
    func listxattr(_ inode: Inode, into buffer: UnsafeMutableRawBufferPointer, _ caller: Credentials) throws(Errno) -> Int
    func removexattr(_ inode: Inode, name: AttributeName, _ caller: Credentials) throws(Errno)
    func access(_ inode: Inode, mask: Int32, _ caller: Credentials) throws(Errno)
    func getlk(_ file: File, owner: UInt64, _ lock: RecordLock, _ caller: Credentials) throws(Errno) -> RecordLock
    func setlk(_ file: File, owner: UInt64, _ lock: RecordLock, wait: Bool, _ caller: Credentials) throws(Errno)
    /// `mode` is fallocate(2)'s: 0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, ...
    func fallocate(_ file: File, mode: Int32, offset: UInt64, length: UInt64, _ caller: Credentials) throws(Errno)
    /// SEEK_DATA / SEEK_HOLE (SEEK_SET/CUR/END are the kernel's business).
    func lseek(_ file: File, offset: UInt64, whence: Int32, _ caller: Credentials) throws(Errno) -> UInt64
    func copyFileRange(from source: File, at sourceOffset: UInt64, to destination: File, at destinationOffset: UInt64,
                       length: UInt64, flags: UInt64, _ caller: Credentials) throws(Errno) -> Int
    func syncfs(_ inode: Inode, _ caller: Credentials) throws(Errno)
    /// O_TMPFILE: an unnamed file in `parent`, open.
    func tmpfile(_ parent: Inode, mode: UInt32, flags: Int32, _ caller: Credentials) throws(Errno) -> (Entry, OpenedFile<File>)
    /// The kernel unmounted or the device went away.
    func destroy()
    /// The session ended (DESTROY, or the front-end went away) with these handles still
    /// open: the core drops them without RELEASE, so a driver that holds data for open
    /// files (written behind, uncommitted) flushes them now. A new INIT may follow.
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
    public func setlk(_ file: File, owner: UInt64, _ lock: RecordLock, wait: Bool, _ caller: Credentials) throws(Errno) { throw .notImplemented }
    public func fallocate(_ file: File, mode: Int32, offset: UInt64, length: UInt64, _ caller: Credentials) throws(Errno) { throw .notImplemented }
    public func lseek(_ file: File, offset: UInt64, whence: Int32, _ caller: Credentials) throws(Errno) -> UInt64 { throw .notImplemented }
    public func copyFileRange(from source: File, at sourceOffset: UInt64, to destination: File, at destinationOffset: UInt64,
                              length: UInt64, flags: UInt64, _ caller: Credentials) throws(Errno) -> Int { throw .notImplemented }
    public func syncfs(_ inode: Inode, _ caller: Credentials) throws(Errno) { throw .notImplemented }
    public func tmpfile(_ parent: Inode, mode: UInt32, flags: Int32, _ caller: Credentials) throws(Errno) -> (Entry, OpenedFile<File>) { throw .notImplemented }
    public func destroy() {}
    public func sessionEnded() {}
}
