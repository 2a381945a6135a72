import ArgumentParser
import FerryBackend
import FerryConfig
import FerryCore
import FerryDaemon
import FerryRADOSBackend
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

    @Option(help: "The daemon's control socket (default: control_socket of ferry.toml).")
    var controlSocket: String?

    /// Asks the daemon serving this configuration; nil when none is running.
    func askRunningDaemon(_ request: ControlRequest, configuration: Configuration) throws -> ControlReply? {
        let path = controlSocket ?? configuration.daemon.controlSocket
        do {
            return try askDaemon(request, at: path)
        } catch {
            if case .notRunning = error { return nil }
            throw CLIError("\(error)")
        }
    }

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
    var tenant: String
    var export: String
    var tag: String
    var socket: String
    var state: ExportState
    /// Set while the export's guest is being live-migrated.
    var migration: ExportMigrationState?
    /// A RADOS export's part in its namespace's lease, when the daemon serves it.
    var lease: ExportLease?
    var queues: Int
    var readOnly: Bool
    var cache: String
    var backend: BackendListing
    /// Live counters, when the daemon serves the export.
    var counters: LiveCounters?

    init(tenant: TenantConfig, export: ExportConfig, state: ExportState) {
        self.tenant = tenant.name
        self.export = export.name
        self.tag = export.tag
        self.socket = export.socket
        self.state = state
        self.queues = export.queues
        self.readOnly = export.readOnly
        self.cache = export.cache.rawValue
        backend = export.backend.listing
    }

    /// The state column: the state, then the migrating state while there is one and a RADOS
    /// export's lease role when it is not the writer ("listening (standby)").
    var displayedState: String {
        let notes = [migration?.rawValue, lease.flatMap { $0.isStandby ? $0.role : nil }].compactMap { $0 }
        return notes.isEmpty ? state.description : "\(state) (\(notes.joined(separator: ", ")))"
    }

    /// Where the backend's files are, in one phrase.
    var location: String { backend.location }
}

/// Every configured export (of one tenant), with its live state and counters from `live`,
/// the daemon's answer; without one, every export is `not running`. An export the daemon
/// does not serve (added since its last reload) is `not running` too.
func exportListings(_ configuration: Configuration, tenant: String?, live: [ExportStatus]? = nil) -> [ExportListing] {
    var byKey: [String: ExportStatus] = [:]
    for status in live ?? [] { byKey["\(status.tenant)/\(status.export)"] = status }
    return configuration.exports
        .filter { tenant == nil || $0.tenant.name == tenant }
        .map { entry in
            let status = byKey["\(entry.tenant.name)/\(entry.export.name)"]
            var listing = ExportListing(tenant: entry.tenant, export: entry.export, state: status?.state ?? .notRunning)
            listing.migration = status?.migration
            listing.lease = status?.lease
            listing.counters = status?.counters
            return listing
        }
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
        let live = try config.askRunningDaemon(ControlRequest(command: .status, tenant: tenant), configuration: configuration)
        let listings = exportListings(configuration, tenant: tenant, live: live?.exports)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(listings), as: UTF8.self))
            return
        }
        var header = ["TENANT", "EXPORT", "TAG", "BACKEND", "SOCKET", "STATE", "QUEUES"]
        if live != nil { header += ["OPS", "READ", "WRITTEN", "ERRORS", "OPEN", "INODES"] }
        let rows = [header] + listings.map { l in
            var row = [l.tenant, l.export, l.tag, "\(l.backend.kind) \(l.location)", l.socket, l.displayedState, "\(l.queues)"]
            if live != nil {
                if let c = l.counters {
                    row += ["\(c.operations)", byteCount(c.bytesRead), byteCount(c.bytesWritten), "\(c.errors)", "\(c.openFiles)", "\(c.inodes)"]
                } else {
                    row += ["-", "-", "-", "-", "-", "-"]
                }
            }
            return row
        }
        print(renderTable(rows))
        if live == nil { print("\n(no ferry daemon is running with this configuration: no live state or counters)") }
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
        let reply = try config.askRunningDaemon(ControlRequest(command: .show, export: name), configuration: configuration)
        let status = reply?.exports?.first
        var listing = ExportListing(tenant: found.tenant, export: found.export, state: status?.state ?? .notRunning)
        listing.migration = status?.migration
        listing.lease = status?.lease
        listing.counters = status?.counters
        let e = found.export
        var rows: [[String]] = [
            ["export", "\(listing.tenant)/\(listing.export)"],
            ["defined at", "\(e.location)"],
            ["tag", listing.tag],
            ["socket", listing.socket],
            ["backend", "\(listing.backend.kind) \(listing.location)"],
            ["state", listing.state.description],
        ]
        if let migrating = listing.migration { rows.append(["migrating", migrating.explanation]) }
        if let lease = listing.lease { rows.append(["lease", lease.explanation]) }
        rows += [
            ["queues", "\(listing.queues)"],
            ["threads per queue", e.requestThreads == 0 ? "0 (requests run on the queue's thread)" : "\(e.requestThreads)"],
            ["read-only", listing.readOnly ? "yes" : "no"],
            ["cache", listing.cache],
            ["xattr", e.xattr ? "on" : "off"],
            ["id mapping", "squash \(e.idMapping.squash.rawValue)"],
            ["migration", migrationSummary(e.migration)],
        ]
        if let inodes = e.limits.inodes { rows.append(["inode limit", "\(inodes)"]) }
        if let bytes = e.quota.bytes { rows.append(["quota", "\(bytes) bytes"]) }
        if let iops = e.qos.iops { rows.append(["qos", "\(iops) IOPS"]) }
        if let c = listing.counters {
            rows += [
                ["operations", "\(c.operations) (\(c.errors) errors)"],
                ["read", byteCount(c.bytesRead)],
                ["written", byteCount(c.bytesWritten)],
                ["open files", "\(c.openFiles)"],
                ["inodes held", "\(c.inodes)"],
                ["throttled", "\(c.throttledRequests) requests, \(String(format: "%.3f", c.throttledSeconds)) s"],
                ["quota refusals", "\(c.quotaRefusals)"],
                ["malformed requests", "\(c.malformedRequests)"],
            ]
            if let used = c.quotaBytesUsed { rows.append(["quota bytes used", byteCount(used)]) }
            if let used = c.quotaInodesUsed { rows.append(["quota inodes used", "\(used)"]) }
            for counter in c.backend { rows.append(["backend \(counter.name)", "\(counter.value)"]) }
        }
        print(renderTable(rows, header: false))
        guard let operations = status?.operations else {
            if reply == nil {
                print("\nNo ferry daemon is running with this configuration: no counters or latencies.")
            } else if reply != nil && status?.counters == nil {
                print("\nThe export is not serving: no counters.")
            }
            return
        }
        print("")
        var table = [["OPERATION", "COUNT", "ERRORS", "MEAN", "P50", "P90", "P99", "P99.9"]]
        for op in operations {
            let mean = op.requests == 0 ? 0 : Double(op.latencySumNanoseconds) / Double(op.requests) / 1e9
            table.append([op.name, "\(op.requests)", "\(op.errors)", duration(mean), "≤" + duration(op.percentile(0.5)),
                          "≤" + duration(op.percentile(0.9)), "≤" + duration(op.percentile(0.99)), "≤" + duration(op.percentile(0.999))])
        }
        print(renderTable(table))
    }
}

/// `[export.migration]` in one line: "find-paths, on error abort, verify handles".
func migrationSummary(_ m: MigrationOptions) -> String {
    var parts = [m.mode.rawValue, "on error \(m.onError.rawValue)"]
    if m.verifyHandles { parts.append("verify handles") }
    if m.confirmPaths { parts.append("confirm paths") }
    return parts.joined(separator: ", ")
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

/// 1536 → "1.5 KiB".
func byteCount(_ n: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    var value = Double(n)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
    return unit == 0 ? "\(n) B" : String(format: "%.1f %@", value, units[unit])
}

/// Seconds as µs, ms or s.
func duration(_ seconds: Double) -> String {
    if seconds < 1e-3 { return String(format: "%.0fµs", seconds * 1e6) }
    if seconds < 1 { return String(format: "%.2fms", seconds * 1e3) }
    return String(format: "%.2fs", seconds)
}
