import FerryFUSE

/// How long the kernel may cache what it learns, as virtiofsd's `--cache` means it.
public enum CachePolicy: String, Sendable, CaseIterable {
    /// No caching: entries and attributes expire at once, file data bypasses the page cache.
    case never
    /// Entries and attributes are trusted for a long time; file data is not cached.
    case metadata
    /// Short timeouts (1 s); the page cache is dropped when a file is reopened.
    case auto
    /// Everything is cached for a long time and kept across opens: only for exports
    /// nobody changes behind the guest's back.
    case always

    /// Entry and attribute timeout in seconds.
    public var timeout: UInt64 {
        switch self {
        case .never: return 0
        case .auto: return 1
        case .metadata, .always: return 86_400
        }
    }

    /// FOPEN_* bits for OPEN and CREATE replies.
    var openReplyFlags: UInt32 {
        switch self {
        case .never, .metadata: return FUSEOpenReplyFlag.directIO
        case .auto: return 0
        case .always: return FUSEOpenReplyFlag.keepCache
        }
    }

    /// FOPEN_* bits for OPENDIR replies.
    var opendirReplyFlags: UInt32 {
        self == .always ? FUSEOpenReplyFlag.cacheDir : 0
    }
}

/// What an export allows and how it is served: the server core applies this for every
/// driver, so a backend never has to.
public struct ExportPolicy: Sendable {
    public var cache: CachePolicy
    /// Extended attributes are off unless asked for, as in virtiofsd: ENOSYS otherwise.
    public var xattr: Bool
    /// Negotiate FUSE_POSIX_ACL (implies xattr).
    public var posixACL: Bool
    /// Allow MKNOD of character and block devices.
    public var allowDevices: Bool
    /// Refuse every change with EROFS.
    public var readOnly: Bool
    /// Negotiate the kernel's writeback cache.
    public var writeback: Bool
    /// Announce submounts to the guest (FUSE_SUBMOUNTS).
    public var announceSubmounts: Bool
    /// Most nodes the kernel may hold at once; further LOOKUPs get ENFILE.
    public var maxNodes: Int
    /// Most open files and directories at once; further OPENs get ENFILE.
    public var maxOpenHandles: Int
    /// Largest WRITE (and READ) payload negotiated with the kernel.
    public var maxWrite: UInt32
    /// Pass the client's O_DIRECT through to the backend (virtiofsd's --allow-direct-io);
    /// otherwise it is dropped, as host files are often on file systems that refuse it.
    public var allowDirectIO: Bool
    /// Offer READDIRPLUS (entries with attributes) to the kernel.
    public var readdirplus: Bool
    /// Negotiate FUSE_DIRECT_IO_ALLOW_MMAP (virtiofsd's `--allow-mmap`) when the kernel offers
    /// it (Linux 6.6+): files opened in direct I/O mode (cache `never` and `metadata`) may
    /// then be mapped MAP_SHARED instead of failing with ENODEV. On by default, unlike
    /// virtiofsd: programs that map files (databases, linkers, package managers) are what
    /// operators of those cache modes run, and the kernel itself writes mapped pages back
    /// before direct I/O on the same file; only a mapped file's pages are cached.
    public var allowMmap: Bool
    /// Negotiate FUSE_HANDLE_KILLPRIV_V2 (virtiofsd's default; `--no-killpriv-v2` turns it off):
    /// the server clears set-id bits on write, chown and truncation when the kernel asks.
    public var killPrivV2 = true
    /// Serve POSIX record locks (fcntl F_SETLK/F_GETLK/F_SETLKW) so every client of the
    /// storage sees them: FUSE_POSIX_LOCKS is agreed when the driver supports it too (and
    /// the transport can answer a waiting lock later). Off: each client locks in its own kernel.
    public var posixLocks = false
    /// Likewise for BSD flock(2) (FUSE_FLOCK_LOCKS).
    public var flockLocks = false
    /// Most F_SETLKW requests waiting at once; one more is answered ENOLCK.
    public var maxLockWaiters = 256
    /// Guest ids to host ids and back (squash, ranges).
    public var idMap = IDMap.identity
    /// Bytes and inodes the export may use (EDQUOT beyond).
    public var quota = QuotaLimits()
    /// Requests and bytes per second.
    public var qos = QoSLimits()

    public init(cache: CachePolicy = .auto, xattr: Bool = false, posixACL: Bool = false,
                allowDevices: Bool = false, readOnly: Bool = false, writeback: Bool = false,
                announceSubmounts: Bool = false, maxNodes: Int = 1_000_000, maxOpenHandles: Int = 65_536,
                maxWrite: UInt32 = 1 << 20, allowDirectIO: Bool = false, readdirplus: Bool = true,
                allowMmap: Bool = true) {
        self.cache = cache; self.xattr = xattr || posixACL; self.posixACL = posixACL
        self.allowDevices = allowDevices; self.readOnly = readOnly; self.writeback = writeback
        self.announceSubmounts = announceSubmounts; self.maxNodes = maxNodes
        self.maxOpenHandles = maxOpenHandles; self.maxWrite = maxWrite
        self.allowDirectIO = allowDirectIO; self.readdirplus = readdirplus
        self.allowMmap = allowMmap
    }
}
