import FerryBackend
import FerryCore
import FerryNFS
import Logging

/// `nfs://SERVER/PATH[?version=3|4][&timeout=SECONDS][&hard][&connections=N]`, libnfs's URL
/// syntax with Ferry's own parameters: `timeout` is how long a request waits for the
/// server before failing with EIO (default 30 s), `hard` waits for ever instead,
/// `connections` is how many libnfs contexts the export uses (default 4).
public struct NFSSource: CustomStringConvertible, Equatable, Sendable {
    public var server: String
    public var path: String
    public var version: NFSVersion
    /// nil: hard (wait for ever).
    public var timeout: Double? = NFSSource.defaultTimeout
    public var connections = 4

    public static let defaultTimeout = 30.0
    public static let connectionRange = 1...64

    public init(server: String, path: String, version: NFSVersion) {
        self.server = server
        self.path = path
        self.version = version
    }

    public init(parsing text: String) throws(BackendError) {
        guard text.hasPrefix("nfs://") else { throw BackendError("\(text): an NFS source starts with nfs://") }
        var rest = Substring(text.dropFirst("nfs://".count))
        var query: Substring = ""
        if let q = rest.firstIndex(of: "?") { query = rest[rest.index(after: q)...]; rest = rest[..<q] }
        guard let slash = rest.firstIndex(of: "/") else { throw BackendError("\(text): expected nfs://SERVER/PATH") }
        var host = rest[..<slash]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard !host.isEmpty else { throw BackendError("\(text): no server in the NFS URL") }
        server = String(host)
        path = String(rest[slash...])
        version = .v3
        for item in query.split(separator: "&") where !item.isEmpty {
            let parts = item.split(separator: "=", maxSplits: 1)
            let key = parts[0], value = parts.count > 1 ? String(parts[1]) : nil
            switch key {
            case "version":
                guard let value, let v = Int(value), let nv = NFSVersion(rawValue: v) else {
                    throw BackendError("\(text): version must be 3 or 4")
                }
                version = nv
            case "timeout":
                guard let value, let seconds = Double(value), seconds > 0 else {
                    throw BackendError("\(text): timeout must be a positive number of seconds")
                }
                timeout = seconds
            case "hard":
                guard value == nil || value == "1" || value == "true" else { throw BackendError("\(text): hard takes no value") }
                timeout = nil
            case "connections":
                guard let value, let n = Int(value), (1...64).contains(n) else {
                    throw BackendError("\(text): connections must be 1 to 64")
                }
                connections = n
            default:
                throw BackendError("\(text): unknown NFS URL parameter '\(key)' (known: version, timeout, hard, connections)")
            }
        }
    }

    public var description: String { "nfs://\(server.contains(":") ? "[\(server)]" : server)\(path)?version=\(version.rawValue)" }
}

/// The server of an NFS export as a concrete type, so the request path is specialised for
/// `NFSDriver` (see POSIXExportHandler.swift).
final class NFSExportHandler: DriverExportHandler, MigratableHandler, @unchecked Sendable {
    // @unchecked: its only state is `server`, a FUSEServer (itself Sendable), set once in init.
    let server: FUSEServer<NFSDriver>

    init(_ server: FUSEServer<NFSDriver>) { self.server = server }

    var backendCounters: [BackendCounter] { server.driver.counters }

    func handle(request: UnsafeRawBufferPointer, reply: inout ReplyArea) -> ReplyDisposition {
        server.handle(request: request, reply: &reply)
    }

    func handle(request: UnsafeRawBufferPointer, payload: IOVectors, reply: inout ReplyArea) -> ReplyDisposition {
        server.handle(request: request, payload: payload, reply: &reply)
    }
}

/// NFSv3 or v4 through libnfs: nodes are NFS file handles.
public enum NFSBackend: BackendModule {
    public typealias Options = NFSSource

    public static let kind = "nfs"
    public static let tableKeys = ["server", "path", "version", "timeout", "hard", "connections"]

    /// libnfs: its own TCP connections to the server (and rpcbind), name lookups. An NFS
    /// client needs no capability: the server checks its callers.
    public static let sandbox = BackendSandboxNeeds(
        syscalls: [
            "socket", "connect", "bind", "getsockname", "getpeername", "sendto", "recvfrom", "sendmsg",
            "recvmsg", "sendmmsg", "recvmmsg", "setsockopt", "getsockopt", "poll", "ppoll", "select",
            "pselect6", "socketpair", "openat", "fstat", "close",
        ],
        network: true)

    public static func options(from table: BackendTable) -> Options? {
        let r = table.reader
        defer { r.finish(known: ["kind"] + tableKeys) }
        let server = r.string("server", required: true)
        if let (s, at) = server, let why = checkHost(s) { r.problem("server: \(why)", at: at) }
        let path = r.string("path", required: true)
        if let (p, at) = path, !p.hasPrefix("/") { r.problem("nfs path must be absolute (the export's path on the server)", at: at) }
        var version = NFSVersion.v4
        if let e = r.table["version"] {
            if case .integer(let v) = e.item.value, let nv = NFSVersion(rawValue: Int(clamping: v)) {
                version = nv
            } else if case .integer(let v) = e.item.value {
                r.problem("version must be 3 or 4, found \(v)", at: e.item.position)
            } else {
                r.problem("version must be 3 or 4 (an integer), found \(e.item.value.kindDescription)", at: e.item.position)
            }
        }
        var timeout: Double? = NFSSource.defaultTimeout
        var connections = 4
        if let e = r.table["timeout"] {
            switch e.item.value {
            case .integer(let v) where v > 0: timeout = Double(v)
            case .float(let v) where v > 0: timeout = v
            default: r.problem("timeout must be a positive number of seconds, found \(e.item.value.kindDescription)", at: e.item.position)
            }
        }
        if r.bool("hard") == true {
            if let e = r.table["timeout"] {
                r.problem("hard = true waits for the server for ever: it cannot have a timeout too", at: e.item.position)
            }
            timeout = nil
        }
        if let (n, at) = r.integer("connections") {
            if NFSSource.connectionRange.contains(Int(clamping: n)) {
                connections = Int(n)
            } else {
                r.problem("connections must be between 1 and 64, found \(n)", at: at)
            }
        }
        guard let (s, _) = server, let (p, _) = path, checkHost(s) == nil, p.hasPrefix("/") else { return nil }
        var host = s
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        var source = NFSSource(server: host, path: normalizePath(p), version: version)
        source.timeout = timeout
        source.connections = connections
        return source
    }

    public static func options(fromSource text: String, settings: SourceSettings) throws(BackendError) -> Options {
        try NFSSource(parsing: text)
    }

    public static func summary(_ o: Options) -> String {
        "\(o.server.contains(":") ? "[\(o.server)]" : o.server):\(o.path) (NFSv\(o.version.rawValue))"
    }

    public static func sourceDescription(_ o: Options) -> String { o.description }

    public static func listing(_ o: Options) -> BackendListing {
        BackendListing(kind: kind, location: "\(o.server):\(o.path) (v\(o.version.rawValue))",
                       path: o.path, server: o.server, version: o.version.rawValue)
    }

    /// A request to an NFS server waits for the network: each queue keeps as many requests
    /// in flight as the export has NFS connections (every request holds one while it waits).
    public static func defaultRequestThreads(_ o: Options) -> Int { o.connections }

    /// Name resolution: libnfs looks the server's name up when the export opens.
    public static func rootNeeds(_ o: Options, readOnly: Bool) -> BackendRootNeeds {
        BackendRootNeeds(resolvesNames: true, hostNames: [o.server])
    }

    public static func open(_ source: Options, _ context: BackendOpenContext) throws(BackendError) -> any ServedExport {
        let options = NFSOptions(server: source.server, path: source.path, version: source.version == .v4 ? .v4 : .v3,
                                 timeout: source.timeout, connections: source.connections,
                                 trustClientGroups: context.policy.idMap.isIdentity)
        do {
            let driver = try NFSDriver(options: options, logger: context.logger)
            return NFSExportHandler(try FUSEServer(driver: driver, policy: context.policy, logger: context.logger))
        } catch {
            throw BackendError("cannot serve \(source): \(error)")
        }
    }
}

/// NFS protocol versions an export can speak.
public enum NFSVersion: Int, Sendable {
    case v3 = 3
    case v4 = 4
}
