import FerryBackend
import FerryBackends
import FerryCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reads and checks a configuration directory:
///
///     DIR/ferry.toml            daemon-wide settings (optional)
///     DIR/tenants/*.toml        one file per tenant (the directory is required)
///
/// Every problem is collected, not just the first. Nothing is created or changed: the
/// checks only read files, stat paths and call access(2).
public enum ConfigLoader {
    public static let defaultDirectory = "/etc/ferry"
    public static let daemonFileName = "ferry.toml"
    public static let tenantsDirectoryName = "tenants"
    /// A socket whose directory is missing is accepted only under here: the daemon creates
    /// its runtime directories below /run (a tmpfs emptied at boot) when it starts.
    public static let creatableSocketRoot = "/run/"

    /// `unverifiable` answers true for paths the caller cannot see (outside the root of a
    /// sandboxed daemon that is reloading): those are taken as written, not checked, and
    /// whoever would use one reports why it cannot.
    public static func load(directory: String = defaultDirectory,
                            unverifiable: @escaping (String) -> Bool = { _ in false }) -> Result<Configuration, ConfigProblems> {
        var loader = Loader(directory: directory, unverifiable: unverifiable)
        let configuration = loader.run()
        let problems = loader.problems.problems.sorted(by: problemOrder)
        return problems.isEmpty ? .success(configuration) : .failure(ConfigProblems(problems: problems))
    }

    /// The daemon-wide settings alone, as far as `ferry.toml` can be read (defaults for
    /// whatever it lacks or gets wrong): enough for a client to find the daemon's control
    /// socket even when a tenant file is broken.
    public static func daemonSettings(directory: String = defaultDirectory) -> DaemonConfig {
        var loader = Loader(directory: directory)
        let daemonFile = joinPath(loader.displayDirectory, daemonFileName)
        guard fileKind(daemonFile).0 == .regular, let document = loader.parse(daemonFile) else { return DaemonConfig() }
        _ = loader
        return loader.readDaemon(TableReader(table: document, file: daemonFile, name: "the daemon file", problems: ProblemList()))
    }

    static func problemOrder(_ a: ConfigProblem, _ b: ConfigProblem) -> Bool {
        if a.file != b.file { return a.file < b.file }
        if (a.line ?? 0) != (b.line ?? 0) { return (a.line ?? 0) < (b.line ?? 0) }
        return (a.column ?? 0) < (b.column ?? 0)
    }
}

private let nameRule = "1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"

func isValidName(_ name: String) -> Bool {
    let bytes = Array(name.utf8)
    guard (1...63).contains(bytes.count) else { return false }
    func ok(_ b: UInt8, first: Bool) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): return true
        case UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"): return !first
        default: return false
        }
    }
    return bytes.enumerated().allSatisfy { ok($0.element, first: $0.offset == 0) }
}

func parentDirectory(_ path: String) -> String {
    let n = normalizePath(path)
    guard let slash = n.lastIndex(of: "/") else { return "." }
    return slash == n.startIndex ? "/" : String(n[..<slash])
}

private struct Loader {
    let directory: String
    /// The directory as files are named in messages (no trailing slash).
    let displayDirectory: String
    /// Absolute, for resolving relative paths in the configuration.
    let absoluteDirectory: String
    let problems = ProblemList()
    /// Every export's tag and socket as read, even from exports with other problems, so
    /// duplicates are found in one pass.
    let seen = SeenExports()
    /// Paths not to check: see `ConfigLoader.load`.
    let unverifiable: (String) -> Bool

    init(directory: String, unverifiable: @escaping (String) -> Bool = { _ in false }) {
        self.directory = directory
        self.unverifiable = unverifiable
        var d = directory
        while d.count > 1, d.hasSuffix("/") { d.removeLast() }
        displayDirectory = d
        absoluteDirectory = normalizePath(d.hasPrefix("/") ? d : joinPath(FileManager.default.currentDirectoryPath, d))
    }

    /// A path from the configuration: relative ones are taken from the configuration directory.
    func resolve(_ path: String) -> String {
        normalizePath(joinPath(absoluteDirectory, path))
    }

    mutating func run() -> Configuration {
        var configuration = Configuration(directory: directory, daemon: DaemonConfig(), tenants: [])
        switch fileKind(displayDirectory).0 {
        case .missing:
            problems.add("configuration directory does not exist", at: SourceLocation(file: displayDirectory, line: 0))
            fixWholeFileProblems()
            return configuration
        case .directory: break
        default:
            problems.add("not a directory", at: SourceLocation(file: displayDirectory, line: 0))
            fixWholeFileProblems()
            return configuration
        }

        let daemonFile = joinPath(displayDirectory, ConfigLoader.daemonFileName)
        if fileKind(daemonFile).0 != .missing, let document = parse(daemonFile) {
            configuration.daemon = readDaemon(TableReader(table: document, file: daemonFile, name: "the daemon file", problems: problems))
        }

        let tenantsDirectory = joinPath(displayDirectory, ConfigLoader.tenantsDirectoryName)
        switch fileKind(tenantsDirectory).0 {
        case .directory:
            let names: [String]
            do {
                names = try FileManager.default.contentsOfDirectory(atPath: tenantsDirectory).sorted()
            } catch {
                problems.add("cannot list the tenants directory: \(error.localizedDescription)", at: SourceLocation(file: tenantsDirectory, line: 0))
                names = []
            }
            for name in names where !name.hasPrefix(".") {
                let file = joinPath(tenantsDirectory, name)
                guard name.hasSuffix(".toml"), name.count > 5 else {
                    problems.add("not a tenant file: tenant files are named tenants/*.toml", at: SourceLocation(file: file, line: 0))
                    continue
                }
                guard fileKind(file).0 == .regular else {
                    problems.add("not a regular file", at: SourceLocation(file: file, line: 0))
                    continue
                }
                guard let document = parse(file) else { continue }
                if let tenant = readTenant(TableReader(table: document, file: file, name: "the tenant file", problems: problems)) {
                    configuration.tenants.append(tenant)
                }
            }
        case .missing:
            problems.add("missing tenants directory (one TOML file per tenant goes in \(tenantsDirectory)/)", at: SourceLocation(file: tenantsDirectory, line: 0))
        default:
            problems.add("not a directory (tenant files go in \(tenantsDirectory)/)", at: SourceLocation(file: tenantsDirectory, line: 0))
        }

        checkAcrossTenants(configuration)
        fixWholeFileProblems()
        return configuration
    }

    /// Line 0 is how this file marks a problem with a file or directory as a whole.
    func fixWholeFileProblems() {
        for n in problems.problems.indices where problems.problems[n].line == 0 {
            problems.problems[n].line = nil
            problems.problems[n].column = nil
        }
    }

    func parse(_ file: String) -> TOMLTable? {
        guard let data = FileManager.default.contents(atPath: file) else {
            problems.add("cannot read the file: \(errnoText(errno))", at: SourceLocation(file: file, line: 0))
            return nil
        }
        guard let text = String(data: data, encoding: .utf8) else {
            problems.add("the file is not valid UTF-8", at: SourceLocation(file: file, line: 0))
            return nil
        }
        do {
            return try TOML.parse(text)
        } catch {
            problems.add(error.message, at: SourceLocation(file: file, line: error.position.line, column: error.position.column))
            return nil
        }
    }

    /// `path` resolved, if it names a directory; otherwise a problem that calls it `missing`
    /// (not there or unreachable) or `notDirectory`.
    func existingDirectory(_ path: String, at: TOMLPosition, in r: TableReader, named missing: String, _ notDirectory: String) -> String? {
        backendTable(r).existingDirectory(path, at: at, named: missing, notDirectory)
    }

    // MARK: - Daemon file

    func readDaemon(_ r: TableReader) -> DaemonConfig {
        var daemon = DaemonConfig()
        if let (path, at) = r.string("control_socket") {
            if checkSocketPath(path, key: "control_socket", at: r.location(at)) {
                daemon.controlSocket = normalizePath(path)
            }
            daemon.controlSocketLocation = r.location(at)
        }
        if let (address, at) = r.string("metrics") {
            switch parseHostPort(address) {
            case .success(let hp): daemon.metricsAddress = hp
            case .failure(let why): r.problem("metrics: \(why.message)", at: at)
            }
        }
        if let level = r.choice("log_level", LogLevel.self) { daemon.logLevel = level }
        if let sandbox = r.table("sandbox", name: "[sandbox]") {
            if let mode = sandbox.choice("mode", SandboxMode.self) { daemon.sandbox.mode = mode }
            if let seccomp = sandbox.choice("seccomp", SeccompAction.self) { daemon.sandbox.seccomp = seccomp }
            if let (path, at) = sandbox.string("exports_root") {
                daemon.sandbox.exportsRoot = existingDirectory(path, at: at, in: sandbox, named: "exports_root", "exports_root")
            }
            sandbox.finish(known: ["mode", "seccomp", "exports_root"])
        }
        r.finish(known: ["control_socket", "metrics", "log_level", "sandbox"])
        return daemon
    }

    // MARK: - Tenant files

    func readTenant(_ r: TableReader) -> TenantConfig? {
        let name = r.string("name", required: true)
        if let (n, at) = name, !isValidName(n) {
            r.problem("tenant name must be \(nameRule)", at: at)
        }
        if r.table["export"] == nil {
            r.problem("tenant has no exports (add [[export]] blocks)", at: TOMLPosition(line: 1, column: 1))
        }
        var exports: [ExportConfig] = []
        var exportNames: [String: SourceLocation] = [:]
        for e in r.tables("export", name: "[[export]]") {
            let exportName = e.table["name"].flatMap { entry -> (String, SourceLocation)? in
                guard case .string(let n) = entry.item.value else { return nil }
                return (n, e.location(entry.item.position))
            }
            let who = "export \(name?.value ?? "?")/\(exportName?.0 ?? "?")"
            if let (n, at) = exportName {
                if let first = exportNames[n] {
                    problems.add("duplicate export name \"\(n)\" in this tenant (first defined at \(first))", at: at)
                } else {
                    exportNames[n] = at
                }
            }
            if let export = readExport(e, who: who) { exports.append(export) }
        }
        r.finish(known: ["name", "export"])
        guard let (n, at) = name else { return nil }
        return TenantConfig(name: n, exports: exports, file: r.file, nameLocation: r.location(at))
    }

    func readExport(_ r: TableReader, who: String) -> ExportConfig? {
        let name = r.string("name", required: true)
        if let (n, at) = name, !isValidName(n) { r.problem("export name must be \(nameRule)", at: at) }

        let tag = r.string("tag", required: true)
        if let (t, at) = tag {
            if t.isEmpty {
                r.problem("tag must not be empty", at: at)
            } else if t.utf8.count > ExportConfig.maxTagBytes {
                r.problem("tag is \(t.utf8.count) bytes long; virtio-fs tags are at most \(ExportConfig.maxTagBytes) bytes", at: at)
            } else if t.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
                r.problem("tag must not contain control characters", at: at)
            }
            seen.tags.append((t, r.location(at), who))
        }

        let socket = r.string("socket", required: true)
        var socketOK = false
        if let (path, at) = socket {
            socketOK = checkSocketPath(path, key: "socket", at: r.location(at))
            if path.hasPrefix("/") { seen.sockets.append((normalizePath(path), r.location(at), who)) }
        }

        var queues = 1
        if let (q, at) = r.integer("queues") {
            if ExportConfig.queueRange.contains(Int(clamping: q)) {
                queues = Int(q)
            } else {
                r.problem("queues must be between \(ExportConfig.queueRange.lowerBound) and \(ExportConfig.queueRange.upperBound), found \(q)", at: at)
            }
        }
        var threadsPerQueue: Int?
        if let (n, at) = r.integer("threads_per_queue") {
            if ExportConfig.threadRange.contains(Int(clamping: n)) {
                threadsPerQueue = Int(n)
            } else {
                r.problem("threads_per_queue must be between \(ExportConfig.threadRange.lowerBound) and \(ExportConfig.threadRange.upperBound), found \(n)", at: at)
            }
        }
        let readOnly = r.bool("read_only") ?? false
        let cache = r.choice("cache", CachePolicy.self) ?? .auto
        let allowMmap = r.bool("allow_mmap") ?? true
        let xattr = r.bool("xattr") ?? false
        let locks = r.bool("locks") ?? true

        var mapping = IDMapping()
        if let m = r.table("id_mapping", name: "[export.id_mapping]") { mapping = readIDMapping(m) }
        var limits = ExportLimits()
        if let l = r.table("limits", name: "[export.limits]") {
            limits.inodes = l.count("inodes")
            limits.openFiles = l.count("open_files")
            limits.inflightBytes = l.size("inflight_bytes")
            l.finish(known: ["inodes", "open_files", "inflight_bytes"])
        }
        var quota = ExportQuota()
        if let q = r.table("quota", name: "[export.quota]") {
            quota.bytes = q.size("bytes")
            quota.inodes = q.count("inodes")
            q.finish(known: ["bytes", "inodes"])
        }
        var qos = ExportQoS()
        if let q = r.table("qos", name: "[export.qos]") {
            qos.iops = q.count("iops")
            qos.bandwidth = q.size("bandwidth", perSecond: true)
            q.finish(known: ["iops", "bandwidth"])
        }

        var migration = MigrationOptions()
        if let m = r.table("migration", name: "[export.migration]") { migration = readMigration(m) }

        var backend: Backend?
        if let b = r.table("backend", required: true, name: "[export.backend]") { backend = readBackend(b) }

        r.finish(known: ["name", "tag", "socket", "queues", "threads_per_queue", "read_only", "cache", "allow_mmap", "xattr", "locks", "id_mapping", "limits", "quota", "qos", "migration", "backend"])

        guard let (n, nameAt) = name, let (t, tagAt) = tag, let (s, socketAt) = socket, let backend else { return nil }
        var export = ExportConfig(
            name: n, tag: t, socket: socketOK ? normalizePath(s) : s, backend: backend,
            location: r.headerLocation, nameLocation: r.location(nameAt),
            tagLocation: r.location(tagAt), socketLocation: r.location(socketAt))
        export.queues = queues
        export.threadsPerQueue = threadsPerQueue
        export.readOnly = readOnly
        export.cache = cache
        export.allowMmap = allowMmap
        export.xattr = xattr
        export.locks = locks
        export.idMapping = mapping
        export.limits = limits
        export.quota = quota
        export.qos = qos
        export.migration = migration
        return export
    }

    /// `[export.migration]`: `ferry virtiofsd`'s --migration-* options, with its defaults
    /// (find-paths, abort, neither check) and its rule that the two checks belong to
    /// find-paths.
    func readMigration(_ r: TableReader) -> MigrationOptions {
        var options = MigrationOptions()
        if let mode = r.choice("mode", MigrationOptions.Mode.self) { options.mode = mode }
        if let onError = r.choice("on_error", MigrationOptions.OnError.self) { options.onError = onError }
        options.verifyHandles = r.bool("verify_handles") ?? false
        options.confirmPaths = r.bool("confirm_paths") ?? false
        if options.mode == .fileHandles {
            for key in ["verify_handles", "confirm_paths"] {
                guard let entry = r.table[key], case .boolean(true) = entry.item.value else { continue }
                r.problem("\(key) applies to mode = \"find-paths\" only (file handles need no path check)", at: entry.item.position)
            }
        }
        r.finish(known: ["mode", "on_error", "verify_handles", "confirm_paths"])
        return options
    }

    func readIDMapping(_ r: TableReader) -> IDMapping {
        var m = IDMapping()
        if let squash = r.choice("squash", SquashMode.self) { m.squash = squash }
        for (key, keyPath) in [("anon_uid", \IDMapping.anonymousUID), ("anon_gid", \IDMapping.anonymousGID)] {
            if let (v, at) = r.integer(key) {
                if (0..<Int64(UInt32.max)).contains(v) {
                    m[keyPath: keyPath] = UInt32(v)
                } else {
                    r.problem("\(key) must be between 0 and \(UInt32.max - 1)", at: at)
                }
            }
        }
        m.uidRanges = readRanges(r, "uid_map")
        m.gidRanges = readRanges(r, "gid_map")
        r.finish(known: ["squash", "anon_uid", "anon_gid", "uid_map", "gid_map"])
        return m
    }

    /// `uid_map = [{ guest = 0, host = 100000, count = 65536 }, ...]`: ranges must fit in
    /// 32 bits and overlap neither on the guest side nor on the host side.
    func readRanges(_ r: TableReader, _ key: String) -> [IDRange] {
        var ranges: [(IDRange, TOMLPosition)] = []
        for t in r.tables(key, name: "a \(key) range") {
            var fields: [String: UInt32] = [:]
            for field in ["guest", "host", "count"] {
                guard let (v, at) = t.integer(field, required: true) else { continue }
                guard (0...Int64(UInt32.max)).contains(v) else {
                    t.problem("\(key) \(field) must be between 0 and \(UInt32.max)", at: at)
                    continue
                }
                fields[field] = UInt32(v)
            }
            t.finish(known: ["guest", "host", "count"])
            guard let guest = fields["guest"], let host = fields["host"], let count = fields["count"] else { continue }
            if count == 0 {
                t.problem("\(key) count must be at least 1", at: t.table["count"]!.item.position)
                continue
            }
            if UInt64(guest) + UInt64(count) > 1 << 32 || UInt64(host) + UInt64(count) > 1 << 32 {
                t.problem("\(key) range goes past id \(UInt32.max)", at: t.table.position)
                continue
            }
            let range = IDRange(guest: guest, host: host, count: count)
            for (other, otherAt) in ranges {
                if overlaps(range.guest, other.guest, range.count, other.count) {
                    t.problem("\(key) range overlaps the guest ids of the range on line \(otherAt.line)", at: t.table.position)
                } else if overlaps(range.host, other.host, range.count, other.count) {
                    t.problem("\(key) range overlaps the host ids of the range on line \(otherAt.line)", at: t.table.position)
                }
            }
            ranges.append((range, t.table.position))
        }
        return ranges.map(\.0)
    }

    func overlaps(_ a: UInt32, _ b: UInt32, _ n: UInt32, _ m: UInt32) -> Bool {
        UInt64(a) < UInt64(b) + UInt64(m) && UInt64(b) < UInt64(a) + UInt64(n)
    }

    /// `[export.backend]`, as the unit its `kind` names reads it, and what that unit asks of
    /// a tenant file (`tenantFileRules`: a tenant's export may not lean on defaults that
    /// belong to the host, such as its Ceph identity).
    func readBackend(_ r: TableReader) -> Backend? {
        let table = backendTable(r)
        BackendRegistry.module(of: table)?.tenantFileRules(table)
        return BackendRegistry.read(table)
    }

    func backendTable(_ r: TableReader) -> BackendTable {
        BackendTable(reader: r, resolve: resolve, unverifiable: unverifiable)
    }

    // MARK: - Paths and names

    /// A socket path must be absolute, fit a Unix socket address, and sit in a directory
    /// that exists or that the daemon creates (under /run).
    func checkSocketPath(_ path: String, key: String, at location: SourceLocation) -> Bool {
        guard path.hasPrefix("/") else {
            problems.add("\(key) must be an absolute path", at: location)
            return false
        }
        guard path.utf8.count < 108 else {
            problems.add("\(key) is \(path.utf8.count) bytes long; a Unix socket path is at most 107 bytes", at: location)
            return false
        }
        guard !path.hasSuffix("/") else {
            problems.add("\(key) must name a socket file, not a directory", at: location)
            return false
        }
        let parent = parentDirectory(path)
        if unverifiable(parent) { return true }
        switch fileKind(parent).0 {
        case .directory: return true
        case .missing:
            if (parent + "/").hasPrefix(ConfigLoader.creatableSocketRoot) { return true }
            problems.add("\(key) directory \(parent) does not exist (only directories under \(ConfigLoader.creatableSocketRoot) are created by the daemon)", at: location)
        default:
            problems.add("\(key) directory \(parent) is not a directory", at: location)
        }
        return false
    }

    /// Duplicate tenant names, and tags or sockets used twice anywhere (the control
    /// socket included). The later place is reported, naming the first.
    func checkAcrossTenants(_ configuration: Configuration) {
        var tenantNames: [String: SourceLocation] = [:]
        for tenant in configuration.tenants {
            if let first = tenantNames[tenant.name] {
                problems.add("duplicate tenant name \"\(tenant.name)\" (also defined at \(first))", at: tenant.nameLocation)
            } else {
                tenantNames[tenant.name] = tenant.nameLocation
            }
        }
        var tags: [String: (SourceLocation, String)] = [:]
        for (tag, at, who) in seen.tags {
            if let (first, other) = tags[tag] {
                problems.add("duplicate tag \"\(tag)\": \(other) at \(first) uses it too", at: at)
            } else {
                tags[tag] = (at, who)
            }
        }
        var sockets: [String: (SourceLocation?, String)] = [:]
        sockets[configuration.daemon.controlSocket] = (configuration.daemon.controlSocketLocation, "the daemon's control socket")
        for (socket, at, who) in seen.sockets {
            if let (first, other) = sockets[socket] {
                problems.add("duplicate socket \(socket): \(other)\(first.map { " at \($0)" } ?? " (the default)") uses it too", at: at)
            } else {
                sockets[socket] = (at, who)
            }
        }
    }
}

final class SeenExports {
    var tags: [(String, SourceLocation, String)] = []
    var sockets: [(String, SourceLocation, String)] = []
}

/// `host:port`, with IPv6 hosts in brackets.
func parseHostPort(_ text: String) -> Result<HostPort, SizeError> {
    let host: String
    let portText: Substring
    if text.hasPrefix("[") {
        guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
            return .failure(SizeError(message: "expected host:port, with an IPv6 address in brackets ([::1]:9464)"))
        }
        host = String(text[text.index(after: text.startIndex)..<close])
        portText = text[text.index(close, offsetBy: 2)...]
    } else {
        guard let colon = text.lastIndex(of: ":") else { return .failure(SizeError(message: "expected host:port (such as 127.0.0.1:9464)")) }
        host = String(text[..<colon])
        if host.contains(":") { return .failure(SizeError(message: "an IPv6 address must be in brackets: [::1]:9464")) }
        portText = text[text.index(after: colon)...]
    }
    if let why = checkHost(host) { return .failure(SizeError(message: "host \(why)")) }
    guard let port = UInt16(portText), port > 0 else { return .failure(SizeError(message: "port must be between 1 and 65535")) }
    return .success(HostPort(host: host, port: port))
}
