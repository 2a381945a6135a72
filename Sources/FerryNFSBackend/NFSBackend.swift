import FerryBackend
import FerryCore
import FerryNFS
import Logging

/// `nfs://SERVER/PATH[?version=3|4|4.0|4.1|4.2][&timeout=SECONDS][&hard][&connections=N]`,
/// libnfs's URL syntax with Ferry's own parameters, which are the keys of `[export.backend]`:
/// `version` (default 4, which is 4.0, as in a tenant file; `version = "4.1"` in a table), `timeout` is how long a request waits for the server
/// before failing with EIO (default 30 s), `hard` waits for ever instead, `connections` is
/// how many libnfs contexts the export uses (default 4).
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

    /// The URL read by `NFSBackend.options(from:)`, as a tenant file's table is: the same
    /// defaults (NFSv4, 30 s, 4 connections) and checks, problems at their column.
    public init(parsing text: String) throws(BackendError) {
        let scheme = "nfs://"
        guard text.hasPrefix(scheme) else { throw BackendError("\(text): an NFS source starts with nfs://") }
        var rest = Substring(text.dropFirst(scheme.count))
        var query: Substring = ""
        if let q = rest.firstIndex(of: "?") { query = rest[rest.index(after: q)...]; rest = rest[..<q] }
        guard let slash = rest.firstIndex(of: "/") else { throw BackendError("\(text): expected nfs://SERVER/PATH") }
        let host = rest[..<slash]
        guard !host.isEmpty, host != "[]" else { throw BackendError("\(text): no server in the NFS URL") }
        let pathOffset = scheme.count + host.count
        self = try BackendTable.readingSource(
            text, fields: [("server", String(host), scheme.count), ("path", String(rest[slash...]), pathOffset)],
            query: query, queryOffset: pathOffset + rest[slash...].count + 1) { NFSBackend.options(from: $0) }
    }

    public var description: String { "nfs://\(server.contains(":") ? "[\(server)]" : server)\(path)?version=\(version)" }
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
            let text: String?
            switch e.item.value {
            case .integer(let v): text = String(v)
            case .float(let v): text = [4.0: "4.0", 4.1: "4.1", 4.2: "4.2"][v] ?? String(v)
            case .string(let v): text = v
            default: text = nil
            }
            if let text, let nv = NFSVersion(text) {
                version = nv
            } else if let text {
                r.problem("version must be 3, 4, 4.0, 4.1 or 4.2, found \(text)", at: e.item.position)
            } else {
                r.problem("version must be 3, 4, 4.0, 4.1 or 4.2, found \(e.item.value.kindDescription)", at: e.item.position)
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
        "\(o.server.contains(":") ? "[\(o.server)]" : o.server):\(o.path) (NFSv\(o.version))"
    }

    public static func sourceDescription(_ o: Options) -> String { o.description }

    public static func listing(_ o: Options) -> BackendListing {
        BackendListing(kind: kind, location: "\(o.server):\(o.path) (v\(o.version))",
                       path: o.path, server: o.server, version: o.version.major)
    }

    /// A request to an NFS server waits for the network: each queue keeps as many requests
    /// in flight as the export has NFS connections (every request holds one while it waits).
    public static func defaultRequestThreads(_ o: Options) -> Int { o.connections }

    /// Name resolution: libnfs looks the server's name up when the export opens.
    public static func rootNeeds(_ o: Options, readOnly: Bool) -> BackendRootNeeds {
        BackendRootNeeds(resolvesNames: true, hostNames: [o.server])
    }

    public static func open(_ source: Options, _ context: BackendOpenContext) throws(BackendError) -> any ServedExport {
        let options = NFSOptions(server: source.server, path: source.path, version: source.version,
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

/// NFS protocol versions an export can speak (3, 4.0, 4.1, 4.2).
public typealias NFSVersion = NFSProtocolVersion
