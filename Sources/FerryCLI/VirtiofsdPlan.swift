import FerryCore
import FerryDaemon
import FerryPOSIX
import FerryRADOSBackend
import FerrySandbox
import Logging

/// Everything a `virtiofsd` command line asks for, as a plain value: parsing touches no file,
/// socket or process state, so every option can be tested. `serveVirtiofsd` acts on it.
public struct VirtiofsdPlan: Equatable, Sendable {
    /// Where the vhost-user front-end (QEMU, cloud-hypervisor, ...) connects.
    public enum Listener: Equatable, Sendable {
        /// Create a listening UNIX socket at this path.
        case socketPath(String)
        /// Use this already listening (not yet connected) socket, inherited from the parent.
        case fd(Int32)
    }

    public var listener: Listener
    /// What to serve, as `ferry mount` takes it (`Source(parsing:)`), resolved when serving.
    public var source: String
    public var cache: CachePolicy = .auto
    public var xattr = false
    public var posixACL = false
    public var readonly = false
    public var writeback = false
    /// virtiofsd announces submounts unless `--no-announce-submounts`.
    public var announceSubmounts = true
    /// Honour O_DIRECT from guest applications (virtiofsd's `--allow-direct-io`).
    public var allowDirectIO = false
    /// Off with `--no-readdirplus` / `-o no_readdirplus`.
    public var readdirplus = true
    /// Shared mmap of direct I/O files (`--allow-mmap`): on unless `--no-allow-mmap`
    /// (`ExportPolicy.allowMmap` says why Ferry differs from virtiofsd here).
    public var allowMmap = true
    /// FUSE_HANDLE_KILLPRIV_V2, offered by default as virtiofsd does; off with
    /// `--no-killpriv-v2` / `-o no_killpriv_v2`.
    public var killPrivV2 = true
    /// POSIX record locks shared with every client of the export (FUSE_POSIX_LOCKS): off by
    /// default as in virtiofsd; `-o posix_lock` turns them on.
    public var posixLock = false
    /// BSD flock(2) locks likewise (FUSE_FLOCK_LOCKS): `-o flock`.
    public var flock = false
    public var inodeFileHandles: FileHandleMode = .prefer
    /// Worker threads for each queue's requests; 0 serves them on the queue threads
    /// (virtiofsd's default); nil (not given): what suits the source
    /// (`Source.defaultRequestThreads`: 0 for a directory).
    public var threadPoolSize: Int?
    /// Group owning the socket (`--socket-group`), resolved with getgrnam when serving.
    public var socketGroup: String?
    /// nil: logging off (`--log-level=off`).
    public var logLevel: Logger.Level? = .info
    public var syslog = false
    /// nil: raise the open file limit as virtiofsd does (to min(1M, fs.nr_open));
    /// 0: leave it; N: set it to N.
    public var rlimitNofile: UInt64?
    /// `--ceph-conf`, `--ceph-id`, `--ceph-keyring`: for a rados:// source.
    var ceph = CephAccess()
    /// `--sandbox`: on by default, as in virtiofsd.
    public var sandbox: SandboxMode = .namespace
    /// `--seccomp`: kill by default, as in virtiofsd.
    public var seccomp: SeccompAction = .kill
    /// `--migration-mode`, `--migration-on-error`, `--migration-verify-handles`,
    /// `--migration-confirm-paths` (docs/migration.md).
    public var migration = MigrationOptions()

    public init(listener: Listener, source: String) {
        self.listener = listener
        self.source = source
    }

    /// What the server core applies for every request.
    public var policy: ExportPolicy {
        var policy = ExportPolicy(cache: cache, xattr: xattr, posixACL: posixACL, readOnly: readonly,
                                  writeback: writeback, announceSubmounts: announceSubmounts,
                                  allowDirectIO: allowDirectIO, readdirplus: readdirplus, allowMmap: allowMmap)
        policy.killPrivV2 = killPrivV2
        policy.posixLocks = posixLock
        policy.flockLocks = flock
        return policy
    }

    public var posixOptions: POSIXOptions {
        POSIXOptions(fileHandles: inodeFileHandles, readOnly: readonly)
    }
}

/// What a `virtiofsd` command line asks Ferry to do.
public enum VirtiofsdInvocation: Equatable, Sendable {
    case serve(VirtiofsdPlan)
    case printCapabilities
    case version
    case help
}

/// The capabilities `--print-capabilities` reports (QEMU's docs/interop/vhost-user.json),
/// laid out as the Rust virtiofsd prints them: "migrate-precopy" (libvirt refuses to
/// migrate a guest whose daemon lacks it; docs/migration.md) and "separate-options". Ferry
/// takes `--posix-acl` and `--security-label` as plain switches (no "*-negotiation-mode").
public let virtiofsdCapabilitiesJSON = """
    {
      "type": "fs",
      "features": [
        "migrate-precopy",
        "separate-options"
      ]
    }

    """

extension VirtiofsdPlan {
    /// Parses a virtiofsd command line (without the program name): the Rust virtiofsd's
    /// options and the legacy C virtiofsd's `-o` options, as libvirt and Kata pass them.
    /// Every option Ferry cannot honour fails with a message saying so; none is ignored.
    static func parse(_ arguments: [String]) throws(CLIError) -> VirtiofsdInvocation {
        var parser = VirtiofsdParser()
        return try parser.parse(arguments)
    }
}

/// Options that take a value, so `--name VALUE` consumes the next argument.
private let valueOptions: Set<String> = [
    "socket-path", "socket", "fd", "shared-dir", "source", "cache", "thread-pool-size",
    "sandbox", "seccomp", "log-level", "socket-group", "inode-file-handles", "rlimit-nofile",
    "ceph-conf", "ceph-id", "ceph-keyring",
    "migration-mode", "migration-on-error",
    // Refused, but their value must not be taken for the next option.
    "tag", "xattrmap", "modcaps", "uid-map", "gid-map", "translate-uid", "translate-gid",
]

/// virtiofsd options Ferry knows but cannot honour yet.
private let unsupportedLongOptions: [String: String] = [
    "tag": "Ferry does not advertise a tag over vhost-user yet; set the tag on the front-end (QEMU's vhost-user-fs-pci tag=)",
    "xattrmap": "extended attribute name mapping is not implemented by Ferry yet",
    "modcaps": "Ferry does not drop or modify capabilities yet; leave the option out",
    "uid-map": "user namespace id maps (an unprivileged sandbox) are not supported: run as root, or map ids per export in ferry serve ([export.id_mapping])",
    "gid-map": "user namespace id maps (an unprivileged sandbox) are not supported: run as root, or map ids per export in ferry serve ([export.id_mapping])",
    "translate-uid": "uid translation is not implemented by Ferry yet",
    "translate-gid": "gid translation is not implemented by Ferry yet",
    "security-label": "security label support is not implemented by Ferry yet",
    "posix-acl-create-fallback": "needs --xattrmap, which Ferry does not implement yet",
    "preserve-noatime": "Ferry does not pass O_NOATIME through yet; leave the option out",
]

struct VirtiofsdParser {
    /// Which of the three ways of naming the export was used, for the conflict check.
    enum SourceKind: String { case sharedDir = "--shared-dir", legacySource = "-o source", source = "--source" }

    var socketPath: String?
    var fd: Int32?
    var sources: [SourceKind: String] = [:]
    var sourceOrder: [SourceKind] = []
    var debug = false
    var printCapabilities = false
    var plan = VirtiofsdPlan(listener: .fd(-1), source: "")

    mutating func parse(_ arguments: [String]) throws(CLIError) -> VirtiofsdInvocation {
        var index = 0
        func next(for name: String) throws(CLIError) -> String {
            guard index < arguments.count else { throw CLIError("\(name) needs a value") }
            defer { index += 1 }
            return arguments[index]
        }
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            if argument.hasPrefix("--"), argument.count > 2 {
                let body = argument.dropFirst(2)
                let name: String, inline: String?
                if let eq = body.firstIndex(of: "=") {
                    name = String(body[..<eq]); inline = String(body[body.index(after: eq)...])
                } else {
                    name = String(body); inline = nil
                }
                if name == "help" { return .help }
                if name == "version" { return .version }
                if valueOptions.contains(name) {
                    let value: String
                    if let inline { value = inline } else { value = try next(for: "--\(name)") }
                    try long(name, value: value)
                } else if name == "posix-acl" {
                    try posixACL(inline)
                } else {
                    if let inline { throw CLIError("--\(name) takes no value (got '\(inline)')") }
                    try flag(name)
                }
            } else if argument.hasPrefix("-"), argument.count > 1, !argument.hasPrefix("--") {
                // Short options, possibly bundled (-df); -o takes the rest or the next argument.
                var rest = Substring(argument.dropFirst())
                while let c = rest.first {
                    rest = rest.dropFirst()
                    switch c {
                    case "h": return .help
                    case "V": return .version
                    case "d": debug = true
                    case "f": break  // foreground: Ferry always is
                    case "o":
                        let list = rest.isEmpty ? try next(for: "-o") : String(rest)
                        rest = ""
                        for option in Self.splitOptionList(list) { try legacy(option) }
                    default:
                        throw CLIError("unknown option '-\(c)'")
                    }
                }
            } else {
                throw CLIError("unexpected argument '\(argument)' (virtiofsd takes only options)")
            }
        }
        return try finish()
    }

    mutating func setSource(_ kind: SourceKind, _ value: String) throws(CLIError) {
        guard !value.isEmpty else { throw CLIError("\(kind.rawValue) needs a value") }
        if sources[kind] == nil { sourceOrder.append(kind) }
        sources[kind] = value
    }

    mutating func long(_ name: String, value: String) throws(CLIError) {
        if let reason = unsupportedLongOptions[name] {
            throw CLIError("--\(name) is not supported: \(reason)")
        }
        switch name {
        case "socket-path", "socket":
            guard !value.isEmpty else { throw CLIError("--\(name) needs a path") }
            socketPath = value
        case "fd":
            guard let n = Int32(value), n >= 0 else { throw CLIError("invalid value '\(value)' for --fd (expected a file descriptor number)") }
            fd = n
        case "shared-dir": try setSource(.sharedDir, value)
        case "source": try setSource(.source, value)
        case "cache": plan.cache = try Self.cachePolicy(value, option: "--cache")
        case "thread-pool-size":
            guard let n = Int(value), (0...1024).contains(n) else {
                throw CLIError("invalid value '\(value)' for --thread-pool-size (expected 0 to 1024)")
            }
            plan.threadPoolSize = n
        case "sandbox":
            guard let mode = SandboxMode(rawValue: value) else {
                throw CLIError("invalid value '\(value)' for --sandbox (expected namespace, chroot or none)")
            }
            plan.sandbox = mode
        case "seccomp":
            guard let action = SeccompAction(rawValue: value) else {
                throw CLIError("invalid value '\(value)' for --seccomp (expected none, log, trap or kill)")
            }
            plan.seccomp = action
        case "log-level":
            switch value.lowercased() {
            case "off": plan.logLevel = nil
            case "error": plan.logLevel = .error
            case "warn": plan.logLevel = .warning
            case "info": plan.logLevel = .info
            case "debug": plan.logLevel = .debug
            case "trace": plan.logLevel = .trace
            default: throw CLIError("invalid value '\(value)' for --log-level (expected error, warn, info, debug, trace or off)")
            }
        case "socket-group":
            guard !value.isEmpty else { throw CLIError("--socket-group needs a group name") }
            plan.socketGroup = value
        case "inode-file-handles":
            switch value {
            case "never": plan.inodeFileHandles = .never
            case "prefer", "fallback": plan.inodeFileHandles = .prefer
            case "mandatory": plan.inodeFileHandles = .mandatory
            default: throw CLIError("invalid value '\(value)' for --inode-file-handles (expected never, prefer or mandatory)")
            }
        case "ceph-conf", "ceph-keyring":
            guard !value.isEmpty else { throw CLIError("--\(name) needs a path") }
            if name == "ceph-conf" { plan.ceph.conf = value } else { plan.ceph.keyring = value }
        case "ceph-id":
            guard !value.isEmpty else { throw CLIError("--ceph-id needs a client id") }
            plan.ceph.clientID = value.hasPrefix("client.") ? String(value.dropFirst(7)) : value
        case "migration-mode":
            guard let mode = MigrationOptions.Mode(rawValue: value) else {
                throw CLIError("invalid value '\(value)' for --migration-mode (expected find-paths or file-handles)")
            }
            plan.migration.mode = mode
        case "migration-on-error":
            guard let onError = MigrationOptions.OnError(rawValue: value) else {
                throw CLIError("invalid value '\(value)' for --migration-on-error (expected abort or guest-error)")
            }
            plan.migration.onError = onError
        case "rlimit-nofile":
            guard let n = UInt64(value) else { throw CLIError("invalid value '\(value)' for --rlimit-nofile (expected a number; 0 leaves the limit unchanged)") }
            plan.rlimitNofile = n
        default:
            throw CLIError("unknown option '--\(name)'")
        }
    }

    mutating func posixACL(_ value: String?) throws(CLIError) {
        switch value {
        case nil, "always": plan.posixACL = true
        case "never": plan.posixACL = false
        case "auto": throw CLIError("--posix-acl=auto is not supported: Ferry negotiates POSIX ACLs only when told to; use --posix-acl or --posix-acl=never")
        case let other?: throw CLIError("invalid value '\(other)' for --posix-acl (expected always or never)")
        }
    }

    mutating func flag(_ name: String) throws(CLIError) {
        if let reason = unsupportedLongOptions[name] {
            throw CLIError("--\(name) is not supported: \(reason)")
        }
        switch name {
        case "xattr": plan.xattr = true
        case "readonly": plan.readonly = true
        case "writeback": plan.writeback = true
        case "allow-direct-io": plan.allowDirectIO = true
        case "allow-mmap": plan.allowMmap = true
        case "no-allow-mmap": plan.allowMmap = false
        case "announce-submounts": plan.announceSubmounts = true
        case "no-announce-submounts": plan.announceSubmounts = false
        case "no-readdirplus": plan.readdirplus = false
        case "killpriv-v2": plan.killPrivV2 = true
        case "no-killpriv-v2": plan.killPrivV2 = false
        case "syslog": plan.syslog = true
        case "debug": debug = true
        case "print-capabilities": printCapabilities = true
        case "migration-verify-handles": plan.migration.verifyHandles = true
        case "migration-confirm-paths": plan.migration.confirmPaths = true
        default:
            if valueOptions.contains(name) { throw CLIError("--\(name) needs a value") }
            throw CLIError("unknown option '--\(name)'")
        }
    }

    /// One item of a legacy `-o` list.
    mutating func legacy(_ option: String) throws(CLIError) {
        if let eq = option.firstIndex(of: "=") {
            let key = String(option[..<eq]), value = String(option[option.index(after: eq)...])
            switch key {
            case "source": try setSource(.legacySource, value)
            case "cache": plan.cache = try Self.cachePolicy(value, option: "-o cache")
            case "loglevel", "log_level":
                switch value {
                case "debug": plan.logLevel = .debug
                case "info": plan.logLevel = .info
                case "warn", "warning": plan.logLevel = .warning
                case "err", "error": plan.logLevel = .error
                default: throw CLIError("invalid value '\(value)' for -o \(key) (expected err, warn, info or debug)")
                }
            case "sandbox":
                guard let mode = SandboxMode(rawValue: value) else {
                    throw CLIError("invalid value '\(value)' for -o sandbox (expected namespace, chroot or none)")
                }
                plan.sandbox = mode
            case "timeout":
                throw CLIError("-o timeout= is not supported: the timeouts follow the cache policy; use --cache=never|metadata|auto|always instead")
            case "modcaps":
                throw CLIError("-o modcaps= is not supported: \(unsupportedLongOptions["modcaps"]!)")
            case "xattrmap":
                throw CLIError("-o xattrmap= is not supported: \(unsupportedLongOptions["xattrmap"]!)")
            default:
                throw CLIError("unknown -o option '\(option)'")
            }
            return
        }
        switch option {
        case "xattr": plan.xattr = true
        case "no_xattr": plan.xattr = false
        case "posix_acl": plan.posixACL = true
        case "no_posix_acl": plan.posixACL = false
        case "readdirplus": plan.readdirplus = true
        case "no_readdirplus": plan.readdirplus = false
        case "writeback": plan.writeback = true
        case "no_writeback": plan.writeback = false
        case "allow_direct_io": plan.allowDirectIO = true
        case "no_allow_direct_io": plan.allowDirectIO = false
        case "announce_submounts": plan.announceSubmounts = true
        case "debug": debug = true
        case "killpriv_v2": plan.killPrivV2 = true
        case "no_killpriv_v2": plan.killPrivV2 = false
        case "posix_lock": plan.posixLock = true
        case "no_posix_lock": plan.posixLock = false
        case "flock": plan.flock = true
        case "no_flock": plan.flock = false
        // What this asks for is what Ferry does: no security labels.
        case "no_security_label": break
        case "security_label":
            throw CLIError("-o security_label is not supported: \(unsupportedLongOptions["security-label"]!)")
        case "norace":
            throw CLIError("-o norace is not supported: Ferry has no racy fallback to disable; leave it out")
        case "source", "cache", "timeout", "loglevel", "log_level", "sandbox":
            throw CLIError("-o \(option) needs a value (-o \(option)=...)")
        default:
            throw CLIError("unknown -o option '\(option)'")
        }
    }

    /// Completes the plan: cross-field checks and the options Ferry refuses only when given.
    mutating func finish() throws(CLIError) -> VirtiofsdInvocation {
        if printCapabilities { return .printCapabilities }

        if sourceOrder.count > 1 {
            throw CLIError("\(sourceOrder[0].rawValue) and \(sourceOrder[1].rawValue) both name the export; give only one of --shared-dir, -o source and --source")
        }
        guard let kind = sourceOrder.first, let source = sources[kind] else {
            throw CLIError("no export given: pass --shared-dir=DIR (or -o source=DIR, or --source SRC)")
        }
        plan.source = source
        switch (socketPath, fd) {
        case (let path?, nil): plan.listener = .socketPath(path)
        case (nil, let n?):
            if plan.socketGroup != nil {
                throw CLIError("--socket-group applies to the socket Ferry creates; it cannot be used with --fd")
            }
            plan.listener = .fd(n)
        case (_?, _?): throw CLIError("--socket-path and --fd are mutually exclusive; give one")
        case (nil, nil): throw CLIError("no vhost-user socket given: pass --socket-path=PATH or --fd=N")
        }
        if plan.migration.mode == .fileHandles && (plan.migration.verifyHandles || plan.migration.confirmPaths) {
            // As virtiofsd: both check paths, and file-handles mode sends none.
            throw CLIError("--migration-verify-handles and --migration-confirm-paths apply to --migration-mode=find-paths only")
        }
        if debug { plan.logLevel = .debug }
        return .serve(plan)
    }

    static func cachePolicy(_ value: String, option: String) throws(CLIError) -> CachePolicy {
        switch value.lowercased() {
        case "auto": return .auto
        case "always": return .always
        case "never", "none": return .never
        case "metadata": return .metadata
        default: throw CLIError("invalid value '\(value)' for \(option) (expected auto, always, never or metadata)")
        }
    }

    /// Splits a `-o` list at commas; a doubled comma is a comma inside a value, as libvirt
    /// escapes paths. Empty items are skipped.
    static func splitOptionList(_ list: String) -> [String] {
        var items: [String] = []
        var current = ""
        var chars = list.makeIterator()
        var pending = chars.next()
        while let c = pending {
            pending = chars.next()
            if c == "," {
                if pending == "," {
                    current.append(",")
                    pending = chars.next()
                } else {
                    items.append(current)
                    current = ""
                }
            } else {
                current.append(c)
            }
        }
        items.append(current)
        return items.filter { !$0.isEmpty }
    }
}
