import FerryCore
import FerrySandbox
import Logging

/// One kind of backend as a unit: everything the configuration, the sandbox and the daemon
/// need to know about it, so that adding a backend is one module and one line in
/// `BackendRegistry` and nothing else switches on backend kinds.
///
/// The hot path is not here: `open` answers the backend's own concrete handler (a
/// `DriverExportHandler` over `FUSEServer<ItsDriver>`), whose request methods are
/// specialised for the driver; the daemon and the transports only hold it as
/// `any ServedExport`, exactly as before there was a protocol.
public protocol BackendModule: Sendable {
    /// What the export's configuration says about the backend (`[export.backend]`, or a
    /// source on the command line). Compared by value when a reload decides whether an
    /// export changed.
    associatedtype Options: Equatable & Sendable

    /// `kind` in `[export.backend]` (and the scheme of its source URL, `kind://...`).
    static var kind: String { get }

    /// The keys its `[export.backend]` table may have besides `kind`.
    static var tableKeys: [String] { get }

    /// What serving it needs from the sandbox, whatever the options.
    static var sandbox: BackendSandboxNeeds { get }

    /// Reads `[export.backend]` (its `kind` already read): every problem is reported to the
    /// table with its file, line and column; nil when there was one.
    static func options(from table: BackendTable) -> Options?

    /// What a tenant file of the multi-tenant daemon must say beyond what `options(from:)`
    /// requires: policy, not parsing (the parser has one set of defaults for every input).
    /// Applied by the daemon's configuration loading; problems go to the table.
    static func tenantFileRules(_ table: BackendTable)

    /// Reads a source as the command line gives it (`kind://...`, or for the backend that
    /// claims them, a bare path). `settings`: command-line options for this kind.
    static func options(fromSource text: String, settings: SourceSettings) throws(BackendError) -> Options

    /// One phrase for logs and `check-config`: where the data lives. Never a secret.
    static func summary(_ options: Options) -> String

    /// The source as the command line would write it, for logs.
    static func sourceDescription(_ options: Options) -> String

    /// What `ferry exports list/show` print about it.
    static func listing(_ options: Options) -> BackendListing

    /// Threads each request queue hands its requests to unless the export says otherwise.
    static func defaultRequestThreads(_ options: Options) -> Int

    /// What a private root must show for this export, and host names to resolve before
    /// the process pivots into it.
    static func rootNeeds(_ options: Options, readOnly: Bool) -> BackendRootNeeds

    /// Opens the export for serving: the driver, the server core and the concrete handler.
    static func open(_ options: Options, _ context: BackendOpenContext) throws(BackendError) -> any ServedExport
}

extension BackendModule {
    public static var sandbox: BackendSandboxNeeds { BackendSandboxNeeds() }
    public static func sourceDescription(_ options: Options) -> String { summary(options) }
    public static func defaultRequestThreads(_ options: Options) -> Int { 0 }
    public static func rootNeeds(_ options: Options, readOnly: Bool) -> BackendRootNeeds { BackendRootNeeds() }
    public static func tenantFileRules(_ table: BackendTable) {}
    public static func options(fromSource text: String, settings: SourceSettings) throws(BackendError) -> Options {
        throw BackendError("\(text): a \(kind) backend is configured in a tenant file only")
    }

    /// `options(from:)` boxed, callable on `any BackendModule.Type`.
    package static func configured(from table: BackendTable) -> ConfiguredBackend? {
        options(from: table).map { ConfiguredBackend(Self.self, $0) }
    }

    package static func configured(fromSource text: String, settings: SourceSettings) throws(BackendError) -> ConfiguredBackend {
        ConfiguredBackend(Self.self, try options(fromSource: text, settings: settings))
    }
}

/// What serving a backend needs from the sandbox.
public struct BackendSandboxNeeds: Sendable, Equatable {
    /// System calls beyond what every Ferry process makes (`SyscallAllowlist.base`).
    public var syscalls: [String]
    /// Capabilities the process keeps to act as its callers.
    public var capabilities: Set<Capability>
    /// Reaches its data over the network: the process keeps the host's network namespace.
    public var network: Bool

    public init(syscalls: [String] = [], capabilities: Set<Capability> = [], network: Bool = false) {
        self.syscalls = syscalls
        self.capabilities = capabilities
        self.network = network
    }

    /// What a process serving every one of `needs` needs.
    public static func union(_ needs: [BackendSandboxNeeds]) -> BackendSandboxNeeds {
        BackendSandboxNeeds(syscalls: Array(Set(needs.flatMap(\.syscalls))).sorted(),
                            capabilities: needs.reduce(into: []) { $0.formUnion($1.capabilities) },
                            network: needs.contains { $0.network })
    }
}

/// What one export needs to see inside a private root (docs/security.md).
public struct BackendRootNeeds: Sendable, Equatable {
    /// Directories or files shown whole; `writable` ones read-write.
    public var paths: [(path: String, writable: Bool)]
    /// Files shown read-only when they exist (a ceph.conf, a keyring).
    public var filesIfPresent: [String]
    /// The name-resolution files, and names to look up before the pivot (so glibc has
    /// loaded the NSS modules it needs).
    public var resolvesNames: Bool
    public var hostNames: [String]
    /// A directory a process serving only this export may make its root (pivot_root or
    /// chroot into it); nil: such a process gets a private root with the above.
    public var ownRoot: String?

    public init(paths: [(path: String, writable: Bool)] = [], filesIfPresent: [String] = [],
                resolvesNames: Bool = false, hostNames: [String] = [], ownRoot: String? = nil) {
        self.paths = paths
        self.filesIfPresent = filesIfPresent
        self.resolvesNames = resolvesNames
        self.hostNames = hostNames
        self.ownRoot = ownRoot
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.paths.elementsEqual(b.paths) { $0.path == $1.path && $0.writable == $1.writable }
            && a.filesIfPresent == b.filesIfPresent && a.resolvesNames == b.resolvesNames && a.hostNames == b.hostNames
            && a.ownRoot == b.ownRoot
    }
}

/// What opening an export takes besides its backend's options.
public struct BackendOpenContext: Sendable {
    public var policy: ExportPolicy
    public var logger: Logger
    /// With ids mapped or squashed the guest's identity is not the host's: a backend that
    /// can re-check permissions as the mapped caller should.
    public var trustClientPermissions: Bool
    /// A backend with a single-writer lease another process holds opens as a live
    /// migration's standby instead of failing (docs/migration.md).
    public var migrationStandby: Bool

    public init(policy: ExportPolicy, logger: Logger, trustClientPermissions: Bool = true, migrationStandby: Bool = false) {
        self.policy = policy
        self.logger = logger
        self.trustClientPermissions = trustClientPermissions
        self.migrationStandby = migrationStandby
    }
}

/// Command-line settings a source URL cannot carry (`--ceph-conf`...), by setting name.
public typealias SourceSettings = [String: String]

/// One export's backend as `ferry exports list` shows it. No secrets: a keyring is neither
/// read nor named. Optional fields a backend does not have are left out of `--json`.
public struct BackendListing: Codable, Equatable, Sendable {
    public var kind: String
    public var path: String?
    public var server: String?
    public var version: Int?
    public var pool: String?
    public var namespace: String?
    public var clientID: String?
    public var cephConf: String?
    /// Where the data is, in one phrase, for the table (not in `--json`).
    public var location: String

    enum CodingKeys: String, CodingKey { case kind, path, server, version, pool, namespace, clientID, cephConf }

    public init(kind: String, location: String, path: String? = nil, server: String? = nil, version: Int? = nil,
                pool: String? = nil, namespace: String? = nil, clientID: String? = nil, cephConf: String? = nil) {
        self.kind = kind
        self.location = location
        self.path = path
        self.server = server
        self.version = version
        self.pool = pool
        self.namespace = namespace
        self.clientID = clientID
        self.cephConf = cephConf
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(kind: try c.decode(String.self, forKey: .kind), location: "",
                  path: try c.decodeIfPresent(String.self, forKey: .path), server: try c.decodeIfPresent(String.self, forKey: .server),
                  version: try c.decodeIfPresent(Int.self, forKey: .version), pool: try c.decodeIfPresent(String.self, forKey: .pool),
                  namespace: try c.decodeIfPresent(String.self, forKey: .namespace),
                  clientID: try c.decodeIfPresent(String.self, forKey: .clientID), cephConf: try c.decodeIfPresent(String.self, forKey: .cephConf))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(kind, forKey: .kind)
        try c.encodeIfPresent(path, forKey: .path)
        try c.encodeIfPresent(server, forKey: .server)
        try c.encodeIfPresent(version, forKey: .version)
        try c.encodeIfPresent(pool, forKey: .pool)
        try c.encodeIfPresent(namespace, forKey: .namespace)
        try c.encodeIfPresent(clientID, forKey: .clientID)
        try c.encodeIfPresent(cephConf, forKey: .cephConf)
    }
}

/// Why a backend could not be read or opened, as operators read it.
public struct BackendError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
