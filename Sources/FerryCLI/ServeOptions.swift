import ArgumentParser
import FerryCore
import FerryDaemon
import FerryPOSIX
import Logging

extension CachePolicy: ExpressibleByArgument {}

/// How inodes of a POSIX export are held: file handles need no open fd per inode.
enum InodeFileHandles: String, ExpressibleByArgument, CaseIterable {
    case never, prefer, mandatory

    var mode: FileHandleMode {
        switch self {
        case .never: return .never
        case .prefer: return .prefer
        case .mandatory: return .mandatory
        }
    }
}

enum LogLevelOption: String, ExpressibleByArgument, CaseIterable {
    case error, warn, info, debug, trace
    var level: Logger.Level {
        switch self {
        case .error: return .error
        case .warn: return .warning
        case .info: return .info
        case .debug: return .debug
        case .trace: return .trace
        }
    }
}

/// Options every serving command shares: what the export allows and how it is cached.
struct ExportOptions: ParsableArguments {
    @Option(help: "Cache policy: never, metadata, auto or always (as virtiofsd's --cache).")
    var cache: CachePolicy = .auto

    @Flag(help: "Serve extended attributes (off by default).")
    var xattr = false

    @Flag(name: .customLong("posix-acl"), help: "Negotiate POSIX ACLs (implies --xattr).")
    var posixACL = false

    @Flag(help: "Allow the client to create character and block device nodes.")
    var allowDevices = false

    @Flag(help: "Refuse every change with EROFS.")
    var readonly = false

    @Flag(help: "Let the kernel use its writeback cache.")
    var writeback = false

    @Flag(inversion: .prefixedNo, help: "Let the client map files MAP_SHARED with --cache never or metadata (FUSE_DIRECT_IO_ALLOW_MMAP, Linux 6.6+); without it such a mapping fails with ENODEV.")
    var allowMmap = true

    @Flag(help: "Re-check every request's permissions on the host as the caller (uid, primary gid and the group FUSE sends on create). Stricter, but refuses access a caller has only through other supplementary groups, which FUSE does not send.")
    var hostPermissionChecks = false

    @Option(help: "Hold inodes as kernel file handles: never, prefer or mandatory.")
    var inodeFileHandles: InodeFileHandles = .prefer

    @Option(help: "Most inodes the client may hold at once.")
    var maxInodes: Int = 1_000_000

    @Option(help: "Most open descriptors kept for inodes (beyond this, inodes are reopened from handles).")
    var maxCachedFds: Int = 1024

    var policy: ExportPolicy {
        var policy = ExportPolicy(cache: cache, xattr: xattr, posixACL: posixACL, allowDevices: allowDevices,
                                  readOnly: readonly, writeback: writeback, maxNodes: maxInodes, allowMmap: allowMmap)
        // The host's own processes share the files: their locks and the mount's must meet.
        policy.posixLocks = true
        policy.flockLocks = true
        return policy
    }

    var posixOptions: POSIXOptions {
        POSIXOptions(fileHandles: inodeFileHandles.mode, maxCachedDescriptors: maxCachedFds, readOnly: readonly,
                     trustClientPermissions: !hostPermissionChecks)
    }
}
