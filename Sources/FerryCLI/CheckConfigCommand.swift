import ArgumentParser
import FerryConfig
import FerryDaemon

/// `ferry check-config [DIR]`: reads and checks a configuration directory, printing every
/// problem as FILE:LINE[:COLUMN]: message. Starts nothing and changes nothing.
struct CheckConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Check a configuration directory (ferry.toml and tenants/*.toml).",
        discussion: """
            Reports every problem (syntax, unknown keys, wrong types, duplicate names, tags \
            or sockets, missing directories, unreadable keyrings, malformed server names) as \
            FILE:LINE[:COLUMN]: message on standard error and exits 1. When there are none, \
            prints one line per export and exits 0. Nothing is started or changed.
            """
    )

    @Argument(help: "The configuration directory.")
    var directory: String = ConfigLoader.defaultDirectory

    func run() throws {
        switch ConfigLoader.load(directory: directory) {
        case .failure(let problems):
            for problem in problems.problems { writeStandardError("\(problem)\n") }
            writeStandardError("\(problems.problems.count) problem\(problems.problems.count == 1 ? "" : "s") in \(directory)\n")
            throw ExitCode(1)
        case .success(let configuration):
            for line in checkConfigSummary(configuration) { print(line) }
        }
    }
}

/// One line per export, then a total. Names a keyring by path only.
func checkConfigSummary(_ configuration: Configuration) -> [String] {
    var lines = configuration.exports.map { tenant, export in
        "\(tenant.name)/\(export.name): tag \(export.tag), socket \(export.socket), \(export.backend.kind) \(export.backend.summary)"
            + (export.readOnly ? ", read-only" : "")
    }
    let exports = lines.count
    lines.append("ok: \(configuration.tenants.count) tenant\(configuration.tenants.count == 1 ? "" : "s"), \(exports) export\(exports == 1 ? "" : "s")")
    return lines
}
