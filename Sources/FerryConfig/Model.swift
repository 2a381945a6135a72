import FerryBackend
import FerryCore
import FerrySandbox

/// Where something was written, and a problem found there: the backends' readers report them too.
public typealias SourceLocation = FerryBackend.SourceLocation
public typealias ConfigProblem = FerryBackend.ConfigProblem

/// Every problem found, in file and line order.
public struct ConfigProblems: Error, Sendable, CustomStringConvertible {
    public var problems: [ConfigProblem]
    public var description: String { problems.map(\.description).joined(separator: "\n") }
}

/// Everything under the configuration directory, checked.
public struct Configuration: Sendable, Equatable {
    /// The directory as it was given.
    public var directory: String
    public var daemon: DaemonConfig
    /// Sorted by file name.
    public var tenants: [TenantConfig]

    public var exports: [(tenant: TenantConfig, export: ExportConfig)] {
        tenants.flatMap { tenant in tenant.exports.map { (tenant, $0) } }
    }
}

public enum LogLevel: String, Sendable, CaseIterable {
    case trace, debug, info, notice, warning, error, critical
}

/// The sandbox settings of ferry.toml are the sandbox's own types.
public typealias SandboxMode = FerrySandbox.SandboxMode
public typealias SeccompAction = FerrySandbox.SeccompAction

public struct SandboxDefaults: Sendable, Equatable {
    public var mode: SandboxMode = .namespace
    public var seccomp: SeccompAction = .kill
    /// A directory the daemon's private root shows whole (read-write), so exports under it
    /// can be added by a reload; nil: only the exports configured at start are shown.
    public var exportsRoot: String?
    public init() {}
}

/// A `host:port` address; IPv6 literals are written in brackets: `[::1]:9464`.
public struct HostPort: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: UInt16
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// `ferry.toml`: what the daemon as a whole uses.
public struct DaemonConfig: Sendable, Equatable {
    public static let defaultControlSocket = "/run/ferry/control.sock"

    public var controlSocket: String = DaemonConfig.defaultControlSocket
    /// nil: no metrics endpoint.
    public var metricsAddress: HostPort?
    public var logLevel: LogLevel = .info
    public var sandbox = SandboxDefaults()
    /// Where `control_socket` was written (nil: the default).
    public var controlSocketLocation: SourceLocation?

    public init() {}
}

/// One `tenants/NAME.toml`.
public struct TenantConfig: Sendable, Equatable {
    public var name: String
    public var exports: [ExportConfig]
    /// The tenant file.
    public var file: String
    public var nameLocation: SourceLocation
}

/// An export's id mapping is the server core's own type: what the file says is what is enforced.
public typealias IDMapping = IDMap
public typealias IDRange = IDMap.Range
public typealias SquashMode = IDMap.Squash

/// Resource limits of one export; nil: no limit beyond the server's defaults.
public struct ExportLimits: Sendable, Equatable {
    public var inodes: UInt64?
    public var openFiles: UInt64?
    public var inflightBytes: UInt64?
    public init() {}
}

public struct ExportQuota: Sendable, Equatable {
    public var bytes: UInt64?
    public var inodes: UInt64?
    public init() {}
}

public struct ExportQoS: Sendable, Equatable {
    public var iops: UInt64?
    /// Bytes per second.
    public var bandwidth: UInt64?
    public init() {}
}

/// An export's backend: its unit (`BackendRegistry`) and that unit's options.
public typealias Backend = ConfiguredBackend

/// One `[[export]]` of a tenant.
public struct ExportConfig: Sendable, Equatable {
    public static let maxTagBytes = 36
    public static let queueRange = 1...16
    public static let threadRange = 0...64

    public var name: String
    /// The virtio-fs tag the guest mounts.
    public var tag: String
    /// The vhost-user socket the VMM connects to.
    public var socket: String
    public var queues: Int = 1
    /// Threads each request queue hands its requests to (`threads_per_queue`); 0 runs them
    /// on the queue's own thread, one at a time; nil: the backend kind's default.
    public var threadsPerQueue: Int?
    public var readOnly = false
    public var cache: CachePolicy = .auto
    /// `allow_mmap`: shared mmap of files opened in direct I/O mode (`ExportPolicy.allowMmap`).
    public var allowMmap = true
    public var xattr = false
    /// `locks`: fcntl and flock locks shared by every client of the export (on by default),
    /// where the backend keeps them so (`ExportPolicy.posixLocks`); false: each guest locks
    /// in its own kernel.
    public var locks = true
    public var idMapping = IDMapping()
    public var limits = ExportLimits()
    public var quota = ExportQuota()
    public var qos = ExportQoS()
    /// `[export.migration]`: how this export's state moves in a live migration (the
    /// server core's own options, as `ferry virtiofsd --migration-*` sets them).
    public var migration = MigrationOptions()
    public var backend: Backend

    public var location: SourceLocation
    public var nameLocation: SourceLocation
    public var tagLocation: SourceLocation
    public var socketLocation: SourceLocation
}
