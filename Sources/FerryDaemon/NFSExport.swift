import FerryConfig
import FerryCore
import FerryNFS
import Logging

/// `nfs://SERVER/PATH[?version=3|4][&timeout=SECONDS][&hard][&connections=N]`, libnfs's URL
/// syntax with Ferry's own parameters: `timeout` is how long a request waits for the
/// server before failing with EIO (default 30 s), `hard` waits for ever instead,
/// `connections` is how many libnfs contexts the export uses (default 4).
public struct NFSSource: CustomStringConvertible {
    public var server: String
    public var path: String
    public var version: NFSVersion
    /// nil: hard (wait for ever).
    public var timeout: Double? = 30
    public var connections = 4

    public init(server: String, path: String, version: NFSVersion) {
        self.server = server
        self.path = path
        self.version = version
    }

    public init(parsing text: String) throws(CLIError) {
        guard text.hasPrefix("nfs://") else { throw CLIError("\(text): an NFS source starts with nfs://") }
        var rest = Substring(text.dropFirst("nfs://".count))
        var query: Substring = ""
        if let q = rest.firstIndex(of: "?") { query = rest[rest.index(after: q)...]; rest = rest[..<q] }
        guard let slash = rest.firstIndex(of: "/") else { throw CLIError("\(text): expected nfs://SERVER/PATH") }
        var host = rest[..<slash]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard !host.isEmpty else { throw CLIError("\(text): no server in the NFS URL") }
        server = String(host)
        path = String(rest[slash...])
        version = .v3
        for item in query.split(separator: "&") where !item.isEmpty {
            let parts = item.split(separator: "=", maxSplits: 1)
            let key = parts[0], value = parts.count > 1 ? String(parts[1]) : nil
            switch key {
            case "version":
                guard let value, let v = Int(value), let nv = NFSVersion(rawValue: v) else {
                    throw CLIError("\(text): version must be 3 or 4")
                }
                version = nv
            case "timeout":
                guard let value, let seconds = Double(value), seconds > 0 else {
                    throw CLIError("\(text): timeout must be a positive number of seconds")
                }
                timeout = seconds
            case "hard":
                guard value == nil || value == "1" || value == "true" else { throw CLIError("\(text): hard takes no value") }
                timeout = nil
            case "connections":
                guard let value, let n = Int(value), (1...64).contains(n) else {
                    throw CLIError("\(text): connections must be 1 to 64")
                }
                connections = n
            default:
                throw CLIError("\(text): unknown NFS URL parameter '\(key)' (known: version, timeout, hard, connections)")
            }
        }
    }

    public var description: String { "nfs://\(server.contains(":") ? "[\(server)]" : server)\(path)?version=\(version.rawValue)" }
}

/// The server of an NFS export as a concrete type, so the request path is specialised for
/// `NFSDriver` (see POSIXExportHandler.swift).
final class NFSExportHandler: DriverExportHandler, @unchecked Sendable {
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

func openNFSExport(_ source: NFSSource, policy: ExportPolicy, logger: Logger) throws(CLIError) -> any ServedExport {
    let options = NFSOptions(server: source.server, path: source.path, version: source.version == .v4 ? .v4 : .v3,
                             timeout: source.timeout, connections: source.connections,
                             trustClientGroups: policy.idMap.isIdentity)
    do {
        let driver = try NFSDriver(options: options, logger: logger)
        return NFSExportHandler(try FUSEServer(driver: driver, policy: policy, logger: logger))
    } catch {
        throw CLIError("cannot serve \(source): \(error)")
    }
}
