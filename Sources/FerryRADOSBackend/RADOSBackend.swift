import FerryBackend
import FerryCore
import FerryRADOS
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// How to reach a Ceph cluster, from the command line.
public struct CephAccess: Equatable, Sendable {
    /// The defaults of a RADOS source, wherever it is read (`RADOSBackend.options(from:)`).
    public static let defaultConf = "/etc/ceph/ceph.conf"
    public static let defaultClientID = "admin"

    public var conf = CephAccess.defaultConf
    public var clientID = CephAccess.defaultClientID
    /// nil: whatever ceph.conf says (or no cephx).
    public var keyring: String?
    /// How long the single-writer lease lasts unless renewed.
    public var leaseSeconds = 30
    /// Seconds before an op against an unreachable OSD fails with EIO; 0 retries for ever.
    public var operationTimeout = 60

    public init(conf: String = CephAccess.defaultConf, clientID: String = CephAccess.defaultClientID, keyring: String? = nil,
                leaseSeconds: Int = 30, operationTimeout: Int = 60) {
        self.conf = conf
        self.clientID = clientID
        self.keyring = keyring
        self.leaseSeconds = leaseSeconds
        self.operationTimeout = operationTimeout
    }

    /// As `RADOSBackend.options(fromSource:settings:)` takes it. A default is left out, as
    /// a table leaves its key out: what was not written is not checked (librados reads the
    /// default ceph.conf when the export opens, as it always has).
    public var sourceSettings: SourceSettings {
        var settings = ["lease_seconds": "\(leaseSeconds)", "op_timeout": "\(operationTimeout)"]
        if conf != Self.defaultConf { settings["ceph_conf"] = conf }
        if clientID != Self.defaultClientID { settings["client_id"] = clientID }
        settings["keyring"] = keyring
        return settings
    }

    init(_ settings: SourceSettings) {
        self.init()
        if let v = settings["ceph_conf"] { conf = v }
        if let v = settings["client_id"] { clientID = v }
        keyring = settings["keyring"]
        if let v = settings["lease_seconds"].flatMap(Int.init) { leaseSeconds = v }
        if let v = settings["op_timeout"].flatMap(Int.init) { operationTimeout = v }
    }
}

/// `rados://POOL[/NAMESPACE]` with how to reach its cluster.
public struct RADOSSource: CustomStringConvertible, Equatable, Sendable {
    public var pool: String
    public var namespace: String
    public var cephConf: String
    public var clientID: String
    /// nil: whatever ceph.conf says (or no cephx).
    public var keyring: String?
    public var leaseSeconds = 30
    public var operationTimeout = 60

    public init(pool: String, namespace: String, cephConf: String, clientID: String, keyring: String?) {
        self.pool = pool
        self.namespace = namespace
        self.cephConf = cephConf
        self.clientID = clientID
        self.keyring = keyring
    }

    /// The URL read by `RADOSBackend.options(from:)`, as a tenant file's table is: the pool
    /// and namespace from the URL (problems at their column), `ceph`'s conf, client id and
    /// keyring as the table's keys (the same defaults and checks; problems name the source).
    /// The lease and op timeout are the command line's own tuning, not table keys.
    public init(parsing text: String, ceph: CephAccess = CephAccess()) throws(BackendError) {
        let scheme = "rados://"
        guard text.hasPrefix(scheme) else { throw BackendError("\(text): not a rados:// source") }
        let rest = text.dropFirst(scheme.count)
        let pool = rest.prefix { $0 != "/" }
        var fields = [(key: "pool", value: String(pool), offset: scheme.count)]
        if pool.endIndex < rest.endIndex {
            fields.append(("namespace", String(rest[rest.index(after: pool.endIndex)...]), scheme.count + pool.count + 1))
        }
        let settings = ceph.sourceSettings.filter { RADOSBackend.tableKeys.contains($0.key) }
        self = try BackendTable.readingSource(text, fields: fields, settings: settings) { RADOSBackend.options(from: $0) }
        leaseSeconds = ceph.leaseSeconds
        operationTimeout = ceph.operationTimeout
    }

    public var target: RADOSTarget {
        RADOSTarget(pool: pool, namespace: namespace, cephConf: cephConf, clientID: clientID, keyring: keyring,
                    operationTimeout: operationTimeout)
    }

    public var description: String { "rados://\(pool)" + (namespace.isEmpty ? "" : "/\(namespace)") }
}

/// The server of a RADOS export as a concrete type (see POSIXExportHandler for why).
final class RADOSExportHandler: DriverExportHandler, MigratableHandler, @unchecked Sendable {
    // @unchecked: `server` and `driver` are set once in init; FUSEServer is Sendable and
    // RADOSDriver guards its own state (its lease and pool are used from every queue thread).
    let server: FUSEServer<RADOSDriver>
    let driver: RADOSDriver

    init(_ server: FUSEServer<RADOSDriver>, driver: RADOSDriver) { self.server = server; self.driver = driver }

    var backendCounters: [BackendCounter] {
        [
            BackendCounter(name: "rados_timeouts", help: "RADOS operations that failed with ETIMEDOUT (past the op timeout).",
                           value: driver.pool.timedOutOperations.load(ordering: .relaxed)),
            BackendCounter(name: "rados_errors", help: "RADOS operations the cluster failed (EIO, ESHUTDOWN, blocklisted...).",
                           value: driver.pool.failedOperations.load(ordering: .relaxed)),
        ]
    }

    func handle(request: UnsafeRawBufferPointer, reply: inout ReplyArea) -> ReplyDisposition {
        server.handle(request: request, reply: &reply)
    }

    func handle(request: UnsafeRawBufferPointer, payload: IOVectors, reply: inout ReplyArea) -> ReplyDisposition {
        server.handle(request: request, payload: payload, reply: &reply)
    }

    func shutdown() {
        server.shutdown()
        driver.close()
    }
}

/// A POSIX namespace kept directly in a RADOS pool.
public enum RADOSBackend: BackendModule {
    public typealias Options = RADOSSource

    public static let kind = "rados"
    public static let tableKeys = ["pool", "namespace", "ceph_conf", "client_id", "keyring"]

    /// librados: its messenger threads, timers and event loops. A Ceph client needs no
    /// capability: the cluster checks its key.
    public static let sandbox = BackendSandboxNeeds(
        syscalls: [
            "socket", "connect", "bind", "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg",
            "setsockopt", "getsockopt", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait",
            "timerfd_create", "timerfd_settime", "timerfd_gettime", "eventfd2", "pipe2", "epoll_create",
            "sched_setaffinity", "sched_getparam", "sched_setscheduler", "sched_getscheduler",
            "set_mempolicy", "get_mempolicy", "mbind", "io_setup", "io_submit", "io_getevents",
            "socketpair", "select", "pselect6", "openat", "fstat", "close", "fsync", "fdatasync",
            "getsockname", "getpeername", "sysinfo",
        ],
        network: true)

    /// Every key but `pool` has a default (no namespace, the default ceph.conf, client
    /// "admin", the keyring ceph.conf names): the command line's. A tenant file must set
    /// the cluster and identity all the same: `requireOwnCephIdentity`.
    public static func options(from table: BackendTable) -> Options? {
        let r = table.reader
        let problemsBefore = r.problems.problems.count
        defer {
            r.finish(known: ["kind"] + tableKeys, secretHint: "; put the key in a keyring file and set keyring = \"PATH\"")
        }
        let pool = r.string("pool", required: true)
        if let (p, at) = pool, p.isEmpty || p.utf8.count > 255 || p.contains(where: { $0 == "/" || $0.isWhitespace }) {
            r.problem("pool must be a Ceph pool name (1 to 255 bytes, no '/' or whitespace)", at: at)
        }
        let namespace = r.string("namespace")
        if let (n, at) = namespace, n.contains(where: { $0 == "/" || $0.isWhitespace }) {
            r.problem("a RADOS namespace has no '/' or whitespace", at: at)
        }
        var clientID = CephAccess.defaultClientID
        if let (c, at) = r.string("client_id") {
            clientID = c.hasPrefix("client.") ? String(c.dropFirst(7)) : c
            if clientID.isEmpty || clientID.contains(where: { $0.isWhitespace || $0 == "/" }) {
                r.problem("client_id must be a Ceph client id such as \"ferry\" or \"client.ferry\"", at: at)
            }
        }
        var cephConf: String? = CephAccess.defaultConf
        if let (c, at) = r.string("ceph_conf") { cephConf = table.readableFile(c, at: at, named: "ceph.conf") }
        var keyring: String?
        if let (k, at) = r.string("keyring") {
            if looksLikeCephKey(k) {
                // Never echo it: this is the secret itself.
                r.problem("keyring must be the path of a keyring file, not the key: secrets are referred to by path, never written inline", at: at)
            } else {
                let resolved = table.resolve(k)
                switch fileKind(resolved) {
                case _ where table.unverifiable(resolved): keyring = resolved
                case (.missing, let e): r.problem("keyring \(k) is not readable: \(errnoText(e))", at: at)
                case (.directory, _): r.problem("keyring \(k) is a directory, not a keyring file", at: at)
                default:
                    if access(resolved, R_OK) == 0 { keyring = resolved } else { r.problem("keyring \(k) is not readable: \(errnoText(errno))", at: at) }
                }
            }
        }
        guard let (p, _) = pool, let cephConf, r.problems.problems.count == problemsBefore else { return nil }
        return RADOSSource(pool: p, namespace: namespace?.value ?? "", cephConf: cephConf, clientID: clientID, keyring: keyring)
    }

    /// The policy of the multi-tenant daemon, not a default of the parser: each tenant's
    /// export names its own cluster, Ceph identity and key. Falling back to the host's
    /// ceph.conf and client.admin (what `ferry mount` does for an operator at a shell) would
    /// let a tenant file reach the host's cluster as its administrator.
    public static func tenantFileRules(_ table: BackendTable) { requireOwnCephIdentity(table) }

    static func requireOwnCephIdentity(_ table: BackendTable) {
        for key in ["client_id", "ceph_conf", "keyring"] where table.reader.table[key] == nil {
            table.reader.missing(key, because: "a tenant's export names its own Ceph identity, never the host's default (\(CephAccess.defaultConf), client.\(CephAccess.defaultClientID))")
        }
    }

    /// `rados://POOL[/NAMESPACE]`; the cluster from `--ceph-conf`, `--ceph-id`, `--ceph-keyring`.
    public static func options(fromSource text: String, settings: SourceSettings) throws(BackendError) -> Options {
        try RADOSSource(parsing: text, ceph: CephAccess(settings))
    }

    public static func summary(_ o: Options) -> String {
        "pool \(o.pool)" + (o.namespace.isEmpty ? "" : " namespace \(o.namespace)")
            + " as client.\(o.clientID) (conf \(o.cephConf)" + (o.keyring.map { ", keyring \($0)" } ?? "") + ")"
    }

    public static func sourceDescription(_ o: Options) -> String { o.description }

    public static func listing(_ o: Options) -> BackendListing {
        BackendListing(kind: kind, location: "pool \(o.pool)" + (o.namespace.isEmpty ? "" : "/\(o.namespace)"),
                       pool: o.pool, namespace: o.namespace, clientID: o.clientID, cephConf: o.cephConf)
    }

    /// A request to the cluster waits for the network: 8 in flight per queue.
    public static func defaultRequestThreads(_ o: Options) -> Int { 8 }

    /// Its ceph.conf and keyring, read when the export opens (a reload may open one).
    public static func rootNeeds(_ o: Options, readOnly: Bool) -> BackendRootNeeds {
        BackendRootNeeds(filesIfPresent: [o.cephConf] + (o.keyring.map { [$0] } ?? []))
    }

    public static func open(_ source: Options, _ context: BackendOpenContext) throws(BackendError) -> any ServedExport {
        let driver: RADOSDriver
        do {
            driver = try RADOSDriver(target: source.target,
                                     options: RADOSOptions(readOnly: context.policy.readOnly, leaseSeconds: source.leaseSeconds,
                                                           standby: context.migrationStandby ? .whenLeased : .never),
                                     logger: context.logger)
        } catch {
            throw BackendError("cannot serve \(source): \(error)")
        }
        do {
            return RADOSExportHandler(try FUSEServer(driver: driver, policy: context.policy, logger: context.logger), driver: driver)
        } catch {
            driver.close()
            throw BackendError("cannot serve \(source): \(error)")
        }
    }
}
