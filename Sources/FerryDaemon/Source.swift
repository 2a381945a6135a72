import ArgumentParser
import FerryConfig
import FerryCore
import FerryPOSIX
import FerrySandbox
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Where an export's files come from, as given on the command line or in a tenant file.
public enum Source: CustomStringConvertible {
    case directory(String)
    case nfs(NFSSource)
    case rados(RADOSSource)

    /// `ceph` carries `--ceph-conf`, `--ceph-id`, `--ceph-keyring` for `rados://` sources.
    public init(parsing text: String, ceph: CephAccess = CephAccess()) throws(CLIError) {
        if text.hasPrefix("nfs://") {
            self = .nfs(try NFSSource(parsing: text))
            return
        }
        if text.hasPrefix("rados://") {
            self = .rados(try RADOSSource(parsing: text, ceph: ceph))
            return
        }
        if let scheme = text.firstRange(of: "://") {
            throw CLIError("\(text): unknown source kind '\(text[..<scheme.lowerBound])' (expected a directory, nfs://SERVER/PATH or rados://POOL[/NAMESPACE])")
        }
        var st = stat()
        guard stat(text, &st) == 0 else {
            throw CLIError("source \(text): \(String(cString: strerror(errno)))")
        }
        guard st.st_mode & S_IFMT == S_IFDIR else { throw CLIError("source \(text) is not a directory") }
        self = .directory(text)
    }

    /// The source of a configured export.
    public init(backend: Backend) {
        switch backend {
        case .posix(let path):
            self = .directory(path)
        case .nfs(let server, let path, let version, let client):
            var source = NFSSource(server: server, path: path, version: version)
            source.timeout = client.timeout
            source.connections = client.connections
            self = .nfs(source)
        case .rados(let pool, let namespace, let cephConf, let clientID, let keyring):
            self = .rados(RADOSSource(pool: pool, namespace: namespace, cephConf: cephConf, clientID: clientID, keyring: keyring))
        }
    }

    /// Which system calls and capabilities serving it needs.
    public var backendKind: BackendKind {
        switch self {
        case .directory: return .posix
        case .nfs: return .nfs
        case .rados: return .rados
        }
    }

    /// Threads each request queue hands its requests to, unless told otherwise. A local
    /// directory answers in microseconds: served on the queue's own thread, as virtiofsd
    /// does. A request to an NFS server or a Ceph cluster waits for the network: each queue
    /// keeps as many requests in flight as the export has NFS connections (every request
    /// holds one while it waits), or 8 RADOS requests.
    public var defaultRequestThreads: Int {
        switch self {
        case .directory: return 0
        case .nfs(let source): return source.connections
        case .rados: return 8
        }
    }

    public var description: String {
        switch self {
        case .directory(let path): return path
        case .nfs(let source): return source.description
        case .rados(let source): return source.description
        }
    }
}

/// Opens `source` for serving under `policy`: the driver, the server core, and the
/// concrete handler that specialises the request path for that driver.
/// `migrationStandby`: a RADOS export whose lease another daemon holds opens as a
/// migration standby instead of failing (docs/migration.md).
public func openExport(_ source: Source, policy: ExportPolicy, posix: POSIXOptions, logger: Logger,
                migrationStandby: Bool = false) throws(CLIError) -> any ServedExport {
    switch source {
    case .directory(let path):
        do {
            let driver = try POSIXDriver(root: path, options: posix)
            return POSIXExportHandler(try FUSEServer(driver: driver, policy: policy, logger: logger))
        } catch {
            throw CLIError("cannot serve \(path): \(error)")
        }
    case .nfs(let nfs):
        return try openNFSExport(nfs, policy: policy, logger: logger)
    case .rados(let rados):
        return try openRADOSExport(rados, policy: policy, logger: logger, migrationStandby: migrationStandby)
    }
}

/// A problem with what the operator asked for, reported as `Error: message` without a
/// usage dump (that is for malformed command lines).
public struct CLIError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
