/// FUSE_INIT capability bits (`fuse_init_in.flags` / `flags2`), protocol 7.38 plus the
/// bits of 7.39 to 7.42 (defined here: the host's <linux/fuse.h> may be 7.38). Bits 32-63
/// travel in `flags2` under FUSE_INIT_EXT.
public struct FUSEInitFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    public static let asyncRead = FUSEInitFlags(rawValue: 1 << 0)
    public static let posixLocks = FUSEInitFlags(rawValue: 1 << 1)
    public static let fileOps = FUSEInitFlags(rawValue: 1 << 2)
    public static let atomicOTrunc = FUSEInitFlags(rawValue: 1 << 3)
    public static let exportSupport = FUSEInitFlags(rawValue: 1 << 4)
    public static let bigWrites = FUSEInitFlags(rawValue: 1 << 5)
    public static let dontMask = FUSEInitFlags(rawValue: 1 << 6)
    public static let spliceWrite = FUSEInitFlags(rawValue: 1 << 7)
    public static let spliceMove = FUSEInitFlags(rawValue: 1 << 8)
    public static let spliceRead = FUSEInitFlags(rawValue: 1 << 9)
    public static let flockLocks = FUSEInitFlags(rawValue: 1 << 10)
    public static let hasIoctlDir = FUSEInitFlags(rawValue: 1 << 11)
    public static let autoInvalData = FUSEInitFlags(rawValue: 1 << 12)
    public static let doReaddirplus = FUSEInitFlags(rawValue: 1 << 13)
    public static let readdirplusAuto = FUSEInitFlags(rawValue: 1 << 14)
    public static let asyncDio = FUSEInitFlags(rawValue: 1 << 15)
    public static let writebackCache = FUSEInitFlags(rawValue: 1 << 16)
    public static let noOpenSupport = FUSEInitFlags(rawValue: 1 << 17)
    public static let parallelDirops = FUSEInitFlags(rawValue: 1 << 18)
    public static let handleKillpriv = FUSEInitFlags(rawValue: 1 << 19)
    public static let posixACL = FUSEInitFlags(rawValue: 1 << 20)
    public static let abortError = FUSEInitFlags(rawValue: 1 << 21)
    public static let maxPages = FUSEInitFlags(rawValue: 1 << 22)
    public static let cacheSymlinks = FUSEInitFlags(rawValue: 1 << 23)
    public static let noOpendirSupport = FUSEInitFlags(rawValue: 1 << 24)
    public static let explicitInvalData = FUSEInitFlags(rawValue: 1 << 25)
    public static let mapAlignment = FUSEInitFlags(rawValue: 1 << 26)
    public static let submounts = FUSEInitFlags(rawValue: 1 << 27)
    public static let handleKillprivV2 = FUSEInitFlags(rawValue: 1 << 28)
    public static let setxattrExt = FUSEInitFlags(rawValue: 1 << 29)
    public static let initExt = FUSEInitFlags(rawValue: 1 << 30)
    /// FUSE_INIT_RESERVED: defined but never meaningful; listed for completeness.
    public static let initReserved = FUSEInitFlags(rawValue: 1 << 31)
    public static let securityCtx = FUSEInitFlags(rawValue: 1 << 32)
    public static let hasInodeDax = FUSEInitFlags(rawValue: 1 << 33)
    /// FUSE_CREATE_SUPP_GROUP (7.39): creating requests carry a FUSE_EXT_GROUPS extension.
    public static let createSuppGroup = FUSEInitFlags(rawValue: 1 << 34)
    public static let hasExpireOnly = FUSEInitFlags(rawValue: 1 << 35)
    /// FUSE_DIRECT_IO_ALLOW_MMAP (7.39, Linux 6.6+; first named FUSE_DIRECT_IO_RELAX): files
    /// opened with FOPEN_DIRECT_IO may be mapped MAP_SHARED (ENODEV without it).
    public static let directIOAllowMmap = FUSEInitFlags(rawValue: 1 << 36)
    /// FUSE_PASSTHROUGH (7.40, Linux 6.9+): an OPEN or CREATE reply may name a backing file
    /// registered with FUSE_DEV_IOC_BACKING_OPEN, and the kernel then reads, writes and maps
    /// that file itself. The kernel ignores it together with the writeback cache.
    public static let passthrough = FUSEInitFlags(rawValue: 1 << 37)
    /// FUSE_NO_EXPORT_SUPPORT (7.40): the server cannot look nodes up by handle (NFS export).
    public static let noExportSupport = FUSEInitFlags(rawValue: 1 << 38)
    /// FUSE_HAS_RESEND (7.40): the kernel understands FUSE_NOTIFY_RESEND.
    public static let hasResend = FUSEInitFlags(rawValue: 1 << 39)
    /// FUSE_ALLOW_IDMAP (7.41): idmapped mounts of this file system are allowed.
    public static let allowIdmap = FUSEInitFlags(rawValue: 1 << 40)
    /// FUSE_OVER_IO_URING (7.42, Linux 6.14+): requests may come through io_uring rings the
    /// server registers on the device after INIT. Offered only while the fuse module's
    /// `enable_uring` parameter is 1. A transport matter: the server core never asks for it.
    public static let overIOUring = FUSEInitFlags(rawValue: 1 << 41)
}

/// What the server would like from INIT; the kernel's offer bounds what it gets.
public struct FUSEInitConfig: Sendable, Equatable {
    public var wanted: FUSEInitFlags
    public var maxWrite: UInt32
    /// nil: accept whatever readahead the kernel proposes.
    public var maxReadahead: UInt32?
    public var maxBackground: UInt16
    public var congestionThreshold: UInt16
    /// Timestamp granularity in nanoseconds.
    public var timeGranularity: UInt32
    /// With FUSE_PASSTHROUGH: how deeply backing files may already be stacked, plus one
    /// (`fuse_init_out.max_stack_depth`, 1 or 2: FILESYSTEM_MAX_STACK_DEPTH). 1 allows backing
    /// files on ordinary file systems only; the mount itself then counts as stacked once,
    /// so no other stacking file system can be built on top of it twice.
    public var maxStackDepth: UInt32

    public init(wanted: FUSEInitFlags = [], maxWrite: UInt32 = 1 << 20, maxReadahead: UInt32? = nil,
                maxBackground: UInt16 = 64, congestionThreshold: UInt16 = 48, timeGranularity: UInt32 = 1,
                maxStackDepth: UInt32 = 1) {
        self.wanted = wanted; self.maxWrite = maxWrite; self.maxReadahead = maxReadahead
        self.maxBackground = maxBackground; self.congestionThreshold = congestionThreshold
        self.timeGranularity = timeGranularity; self.maxStackDepth = maxStackDepth
    }
}

/// The outcome of INIT negotiation and how the server must answer.
public enum FUSEInitResult: Sendable, Equatable {
    /// Send `reply`; from now on speak protocol 7.`minor` with `agreed` capabilities.
    case accepted(reply: FUSEInitOut, agreed: FUSEInitFlags, minor: UInt32)
    /// The kernel speaks a newer major: reply with our 7.42 so it retries INIT with that.
    case retryWithVersion(FUSEInitOut)
    /// The kernel is too old for us: answer the INIT with this (positive) errno.
    case refused(errno: Int32)
}

/// Decides the answer to FUSE_INIT. Pure: no I/O, so it is tested exhaustively.
public enum FUSEInitNegotiation {
    public static let serverMajor: UInt32 = 7
    /// 7.42: the layouts of 7.39 to 7.42 that change what we send are `fuse_init_out`'s
    /// `max_stack_depth` and `fuse_open_out`'s `backing_id` (both 7.40, both zero unless
    /// passthrough is agreed); every request we decode is laid out as in 7.38.
    public static let serverMinor: UInt32 = 42
    /// FILESYSTEM_MAX_STACK_DEPTH: the kernel refuses passthrough with a deeper stack.
    public static let maximumStackDepth: UInt32 = 2
    /// 7.27 is the oldest layout set the decoder handles (full-size mknod, write, etc.).
    public static let minimumMinor: UInt32 = 27
    /// EPROTO as Linux numbers it: FUSE errnos are Linux errnos whatever the host is.
    public static let eproto: Int32 = 71

    static let pageSize: UInt32 = 4096
    /// Without FUSE_MAX_PAGES the kernel limits a request to 32 pages.
    static let legacyMaxWrite: UInt32 = 32 * 4096
    static let maxPagesLimit: UInt32 = 65535

    public static func negotiate(_ kernel: FUSEInitIn, config: FUSEInitConfig) -> FUSEInitResult {
        if kernel.major > serverMajor {
            var reply = FUSEInitOut()
            reply.major = serverMajor
            reply.minor = serverMinor
            return .retryWithVersion(reply)
        }
        guard kernel.major == serverMajor, kernel.minor >= minimumMinor else {
            return .refused(errno: eproto)
        }

        var offered = FUSEInitFlags(rawValue: kernel.flags)
        // Bits above 31 only exist when the kernel sent flags2 under INIT_EXT.
        if !offered.contains(.initExt) {
            offered = FUSEInitFlags(rawValue: kernel.flags & 0xFFFF_FFFF)
        }
        var agreed = config.wanted.intersection(offered)
        // The kernel turns passthrough off under the writeback cache (and without a stack
        // depth it can use): never claim what it will not do.
        if agreed.contains(.passthrough)
            && (agreed.contains(.writebackCache) || !(1...maximumStackDepth).contains(config.maxStackDepth)) {
            agreed.remove(.passthrough)
        }

        var reply = FUSEInitOut()
        reply.major = serverMajor
        reply.minor = min(kernel.minor, serverMinor)
        reply.maxReadahead = min(kernel.maxReadahead, config.maxReadahead ?? kernel.maxReadahead)
        reply.maxBackground = config.maxBackground
        reply.congestionThreshold = config.congestionThreshold
        reply.timeGranularity = config.timeGranularity
        // The kernel raises max_write below one page anyway; keep our reply honest.
        let maxWrite = max(config.maxWrite, pageSize)
        if agreed.contains(.maxPages) {
            // Rounding up without `maxWrite + pageSize - 1`, which overflows near UInt32.max.
            let pages = min(maxWrite / pageSize + (maxWrite % pageSize == 0 ? 0 : 1), maxPagesLimit)
            reply.maxPages = UInt16(pages)
            reply.maxWrite = min(maxWrite, pages * pageSize)
        } else {
            reply.maxWrite = min(maxWrite, legacyMaxWrite)
        }
        // INIT_EXT is what makes the kernel read flags2, so echo it whenever offered.
        var replyFlags = agreed
        if offered.contains(.initExt) { replyFlags.insert(.initExt) }
        reply.flags = replyFlags.rawValue
        if agreed.contains(.passthrough) { reply.maxStackDepth = config.maxStackDepth }
        return .accepted(reply: reply, agreed: agreed, minor: reply.minor)
    }
}

public extension FUSEDecodeOptions {
    /// Decoder options implied by the negotiated capabilities.
    init(agreed: FUSEInitFlags) {
        self.init(setxattrExtended: agreed.contains(.setxattrExt))
    }
}
