#if canImport(Glibc)
import Glibc
#endif
import FerryCore
import Synchronization

/// A node: its NFS file handle, never a path. Paths are never resolved from the root, so
/// a rename elsewhere on the server never makes a node name another file.
public final class NFSInode: Sendable {
    public let handle: FileHandle
    /// `S_IFMT` bits; a file's type never changes.
    let fileType: UInt32
    /// Entries READDIRPLUS just brought in, by name, so the LOOKUPs the core makes for
    /// them are answered without a round trip. Filled and emptied within one READDIR.
    /// `asked` is `NFSDriver.takeInClock` when the READDIR was sent.
    let readdirEntries = Mutex<[[UInt8]: (handle: FileHandle, attributes: Attributes, asked: UInt64)]>([:])
    /// WRITEs of this file answered before the server answered them (WriteBehind.swift),
    /// oldest first, kept here rather than per open file so that every READ, GETATTR and
    /// LOOKUP of the file, through any handle, waits for them.
    let writesBehind = Mutex<WritesBehind>(WritesBehind())
    /// Held while the writes behind are drained: one drain at a time, in order, so a
    /// drain that returns has seen every write queued before it began.
    let drainingBehind = Mutex<Void>(())
    /// `NFSDriver.takeInClock` after the last of this file's writes behind was taken in:
    /// attributes asked of the server before then may predate those writes.
    let lastTakenIn = Atomic<UInt64>(0)
    /// Opens of this node not yet released, files and directories.
    let opens = Atomic<Int>(0)
    /// The attributes last given for this node: what a GETATTR of an open node whose file is
    /// gone from the server answers, with no links, as fstat(2) of an open, removed file or
    /// directory does on a local file system (glibc's opendir is open then fstat: a
    /// directory removed in between gave ESTALE).
    let lastKnown = Mutex<Attributes?>(nil)

    init(handle: FileHandle, fileType: UInt32) {
        self.handle = handle
        self.fileType = fileType
    }

    var isDirectory: Bool { fileType == UInt32(S_IFDIR) }
    var isRegularFile: Bool { fileType == UInt32(S_IFREG) }
}

/// An open file: NFSv3 is stateless, so this is the node plus the data written UNSTABLE
/// and not yet committed (kept to send again should the server restart before COMMIT).
/// @unchecked Sendable: `openerGroups` is a private copy made in init, only read after, freed in deinit;
/// every other field is immutable, a Mutex or an Atomic.
public final class NFSFile: @unchecked Sendable {
    let inode: NFSInode
    /// The open(2) flags, which a migration carries to the destination.
    let flags: Int32
    /// O_SYNC/O_DSYNC: every WRITE is FILE_SYNC.
    let synchronous: Bool
    let uncommitted = Mutex<UncommittedWrites>(UncommittedWrites())
    /// Held while a COMMIT of this file is settled: pieces are read (to send again) and
    /// their memory recycled by one COMMIT at a time.
    let committing = Mutex<Void>(())
    /// A write-behind WRITE's failure (the server's error, or no answer within the
    /// export's timeout), kept until FSYNC or FLUSH returns it; WRITEs fail with it meanwhile.
    let writeError = Mutex<Errno?>(nil)
    /// Who opened it: the session's end flushes it as them (`NFSDriver.sessionEnded`). Its
    /// groups are this file's own copy (`openerGroups`), not the opening request's view.
    let opener: Credentials
    /// The opener's supplementary groups, copied at open: the request's `groups` point into
    /// its buffer, which the transport reuses as soon as the request is answered.
    private let openerGroups: UnsafeMutableBufferPointer<UInt32>?

    /// Bytes written UNSTABLE and kept until a COMMIT.
    public var uncommittedBytes: Int { uncommitted.withLock { $0.bytes } }
    /// Bytes of this file's node written behind whose replies are not taken in yet.
    public var writeBehindBytes: Int { inode.writesBehind.withLock { $0.bytes } }

    init(inode: NFSInode, flags: Int32, opener: Credentials) {
        self.inode = inode
        var owned = opener
        let count = min(opener.groups.count, Credentials.maximumGroups)
        if count > 0 {
            let copy = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: count)
            _ = copy.initialize(from: opener.groups.prefix(count))
            openerGroups = copy
            owned.groups = UnsafeBufferPointer(copy)
        } else {
            openerGroups = nil
            owned.groups = UnsafeBufferPointer(start: nil, count: 0)
        }
        self.opener = owned
        self.flags = flags
        synchronous = flags & (O_SYNC | O_DSYNC) != 0
    }

    deinit { openerGroups?.deallocate() }
}

/// An open directory: READDIRPLUS's cookie verifier, which the server expects back with
/// every cookie it gave out.
public final class NFSDirectory: Sendable {
    let inode: NFSInode
    let cookieVerifier = Mutex<UInt64>(0)
    init(inode: NFSInode) { self.inode = inode }
}

/// A name of an open file renamed away by an unlink, removed at the file's last release.
typealias HiddenName = (directory: FileHandle, name: String, uid: UInt32, gid: UInt32)

/// Open files by handle, for unlinking files that are still open: the name is renamed to
/// a hidden one and removed on the last release, as NFS clients have always done.
struct OpenFiles {
    struct Record {
        var count = 0
        /// Where the file's names went when they were unlinked while it was open, and who
        /// unlinked them: one entry per name (a file with hard links can lose several).
        var hidden: [HiddenName] = []
    }
    var byHandle: [FileHandle: Record] = [:]
    /// Hidden names taken from a released file and not yet removed on the server: they still
    /// count in the server's link count until their REMOVE lands.
    var hiddenBeingRemoved: [FileHandle: Int] = [:]
    /// Hidden names on the server by the directory they are in, until their REMOVE has been
    /// answered: an RMDIR of that directory that the server finds not empty waits for them.
    var hiddenIn: [FileHandle: Int] = [:]

    mutating func hiddenNameGone(from directory: FileHandle) {
        let left = (hiddenIn[directory] ?? 1) - 1
        hiddenIn[directory] = left > 0 ? left : nil
    }

    /// Names of `handle`'s file on the server that its users no longer see.
    func hiddenCount(_ handle: FileHandle) -> Int {
        (byHandle[handle]?.hidden.count ?? 0) + (hiddenBeingRemoved[handle] ?? 0)
    }
    /// Every open file not released yet: a session that ends flushes and releases them.
    var files: [ObjectIdentifier: NFSFile] = [:]
    /// REMOVEs (and RENAMEs over a name) under way of files that were not open when they
    /// began, with the file's handle when it was looked up. An OPEN that registers while
    /// one is under way waits for it before asking the server about its file: otherwise the
    /// OPEN could succeed just before the REMOVE lands, and its READs get ESTALE.
    var removals: [(removal: Removal, handle: FileHandle?)] = []

    func removals(touching handle: FileHandle) -> [Removal] {
        removals.compactMap { $0.handle == nil || $0.handle == handle ? $0.removal : nil }
    }
}

/// One removal under way: its remover holds `done` from before it is listed in
/// `OpenFiles.removals` until its call is answered, so waiting for it is taking `done`.
final class Removal: Sendable {
    let done = Mutex<Void>(())
    func wait() { done.withLock { _ in } }
}
