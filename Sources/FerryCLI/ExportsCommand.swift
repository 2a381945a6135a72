import ArgumentParser
import FerryConfig
import Foundation

/// `ferry exports`: what the configuration serves, export by export.
struct ExportsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exports",
        abstract: "List and inspect the configured exports.",
        subcommands: [ExportsListCommand.self, ExportsShowCommand.self],
        defaultSubcommand: ExportsListCommand.self
    )
}

/// Options shared by the `exports` subcommands.
struct ConfigDirectoryOption: ParsableArguments {
    @Option(name: .customLong("config"), help: "The configuration directory.")
    var directory: String = ConfigLoader.defaultDirectory

    /// The configuration, or every problem printed as check-config does and exit 1.
    func load() throws -> Configuration {
        switch ConfigLoader.load(directory: directory) {
        case .success(let configuration): return configuration
        case .failure(let problems):
            for problem in problems.problems { writeStandardError("\(problem)\n") }
            throw ExitCode(1)
        }
    }
}

/// One export as `exports list` shows it. No secrets: a keyring is neither read nor named.
struct ExportListing: Codable, Equatable {
    struct BackendListing: Codable, Equatable {
        var kind: String
        var path: String?
        var server: String?
        var version: Int?
        var pool: String?
        var namespace: String?
        var clientID: String?
        var cephConf: String?
    }
    var tenant: String
    var export: String
    var tag: String
    var socket: String
    var state: String
    var queues: Int
    var readOnly: Bool
    var cache: String
    var backend: BackendListing

    init(tenant: TenantConfig, export: ExportConfig, state: String) {
        self.tenant = tenant.name
        self.export = export.name
        self.tag = export.tag
        self.socket = export.socket
        self.state = state
        self.queues = export.queues
        self.readOnly = export.readOnly
        self.cache = export.cache.rawValue
        switch export.backend {
        case .posix(let path):
            backend = BackendListing(kind: "posix", path: path)
        case .nfs(let server, let path, let version):
            backend = BackendListing(kind: "nfs", path: path, server: server, version: version.rawValue)
        case .rados(let pool, let namespace, let cephConf, let clientID, _):
            backend = BackendListing(kind: "rados", pool: pool, namespace: namespace, clientID: clientID, cephConf: cephConf)
        }
    }

    /// Where the backend's files are, in one phrase.
    var location: String {
        switch backend.kind {
        case "posix": return backend.path ?? ""
        case "nfs": return "\(backend.server ?? ""):\(backend.path ?? "") (v\(backend.version ?? 4))"
        default: return "pool \(backend.pool ?? "")" + ((backend.namespace ?? "").isEmpty ? "" : "/\(backend.namespace!)")
        }
    }
}

/// The state of every export. There is no serving daemon to ask yet (`ferry serve` is still
/// to come), so every configured export is reported as not running rather than guessed at.
func exportListings(_ configuration: Configuration, tenant: String?) -> [ExportListing] {
    configuration.exports
        .filter { tenant == nil || $0.tenant.name == tenant }
        .map { ExportListing(tenant: $0.tenant, export: $0.export, state: "not running") }
}

struct ExportsListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List every export of every tenant: tag, backend, socket, state, queues.")

    @OptionGroup var config: ConfigDirectoryOption

    @Option(help: "Only this tenant's exports.")
    var tenant: String?

    @Flag(help: "Print a JSON array instead of a table.")
    var json = false

    func run() throws {
        let configuration = try config.load()
        if let tenant, !configuration.tenants.contains(where: { $0.name == tenant }) {
            throw CLIError("no tenant named '\(tenant)' in \(config.directory)")
        }
        let listings = exportListings(configuration, tenant: tenant)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(listings), as: UTF8.self))
            return
        }
        let rows = [["TENANT", "EXPORT", "TAG", "BACKEND", "SOCKET", "STATE", "QUEUES"]] + listings.map {
            [$0.tenant, $0.export, $0.tag, "\($0.backend.kind) \($0.location)", $0.socket, $0.state, "\($0.queues)"]
        }
        print(renderTable(rows))
    }
}

struct ExportsShowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Show one export's configuration (and, with a running daemon, its counters).")

    @OptionGroup var config: ConfigDirectoryOption

    @Argument(help: "The export, as TENANT/EXPORT.")
    var name: String

    func run() throws {
        let configuration = try config.load()
        let parts = name.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2 else { throw CLIError("name the export as TENANT/EXPORT, not '\(name)'") }
        guard let found = configuration.exports.first(where: { $0.tenant.name == parts[0] && $0.export.name == parts[1] }) else {
            throw CLIError("no export '\(name)' in \(config.directory)")
        }
        let listing = ExportListing(tenant: found.tenant, export: found.export, state: "not running")
        let e = found.export
        var rows: [[String]] = [
            ["export", "\(listing.tenant)/\(listing.export)"],
            ["defined at", "\(e.location)"],
            ["tag", listing.tag],
            ["socket", listing.socket],
            ["backend", "\(listing.backend.kind) \(listing.location)"],
            ["state", listing.state],
            ["queues", "\(listing.queues)"],
            ["read-only", listing.readOnly ? "yes" : "no"],
            ["cache", listing.cache],
            ["xattr", e.xattr ? "on" : "off"],
            ["id mapping", "squash \(e.idMapping.squash.rawValue)"],
        ]
        if let inodes = e.limits.inodes { rows.append(["inode limit", "\(inodes)"]) }
        if let bytes = e.quota.bytes { rows.append(["quota", "\(bytes) bytes"]) }
        if let iops = e.qos.iops { rows.append(["qos", "\(iops) IOPS"]) }
        print(renderTable(rows, header: false))
        print("\nPer-operation counters and latencies come from the serving daemon; none is running "
              + "(ferry serve is not part of this build yet).")
    }
}

/// Left-aligned columns separated by two spaces.
func renderTable(_ rows: [[String]], header: Bool = true) -> String {
    guard let columns = rows.map(\.count).max() else { return "" }
    let widths = (0..<columns).map { c in rows.map { c < $0.count ? $0[c].count : 0 }.max() ?? 0 }
    return rows.map { row in
        row.enumerated().map { c, cell in c == row.count - 1 ? cell : cell.padding(toLength: widths[c], withPad: " ", startingAt: 0) }
            .joined(separator: "  ")
    }.joined(separator: "\n")
}
