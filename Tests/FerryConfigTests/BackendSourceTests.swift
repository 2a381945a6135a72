import FerryBackend
import FerryNFSBackend
import Testing
@testable import FerryConfig

/// A backend reads a source URL and its `[export.backend]` table with one reader: the same
/// defaults and the same checks, each problem where it was written.
@Suite struct BackendSourceTests {
    func fromTable(_ keys: String) throws -> (NFSSource?, [String]) { try readTable(NFSBackend.self, keys) }

    func fromURL(_ url: String) -> (NFSSource?, [String]) { readSource(NFSBackend.self, url) }

    @Test func aURLAndATableMeanTheSameExportWithTheSameDefaults() throws {
        let (table, _) = try fromTable("server = \"files\"\npath = \"/srv/share\"")
        let (url, _) = fromURL("nfs://files/srv/share")
        #expect(table != nil && table == url)
        #expect(url?.version == .v4 && url?.timeout == 30 && url?.connections == 4)

        let (tuned, _) = try fromTable("server = \"files\"\npath = \"/srv/share\"\nversion = 3\ntimeout = 2.5\nconnections = 8")
        #expect(tuned == fromURL("nfs://files/srv/share?version=3&timeout=2.5&connections=8").0)
        #expect(try fromTable("server = \"files\"\npath = \"/x\"\nhard = true").0?.timeout == nil)
        #expect(fromURL("nfs://files/x?hard").0?.timeout == nil)
    }

    @Test func aURLAndATableGetTheSameProblemsEachAtItsColumn() throws {
        let (_, tableProblems) = try fromTable("server = \"files\"\npath = \"/x\"\nversion = 5\nconnections = 100\nbogus = 1")
        let (_, urlProblems) = fromURL("nfs://files/x?version=5&connections=100&bogus=1")
        #expect(tableProblems == [
            "version must be 3, 4, 4.0, 4.1 or 4.2, found 5", "connections must be between 1 and 64, found 100",
            "unknown key \"bogus\" in [export.backend]",
        ])
        #expect(urlProblems == [
            "version must be 3, 4, 4.0, 4.1 or 4.2, found 5", "connections must be between 1 and 64, found 100",
            "unknown key \"bogus\" in the URL",
        ])
        // Where: the URL as the file, line 1, the column of the value (of the key, for an unknown one).
        #expect(throws: BackendError.self) { try NFSSource(parsing: "nfs://files/x?version=5") }
        do {
            _ = try NFSSource(parsing: "nfs://files/x?version=5")
        } catch {
            #expect(error.description == "nfs://files/x?version=5:1:23: version must be 3, 4, 4.0, 4.1 or 4.2, found 5")
        }
    }
}

/// Problems without where they were written (`FILE:LINE:COLUMN: `, or a source's `TEXT: `).
func messages(_ rendered: [String]) -> [String] {
    rendered.map { $0.components(separatedBy: ": ").dropFirst().joined(separator: ": ") }
}

/// `keys` as the `[export.backend]` of a tenant file of the given kind: the options the
/// daemon's configuration loading made of it, and every problem it found.
func readTable<M: BackendModule>(_ module: M.Type, _ keys: String) throws -> (M.Options?, [String]) {
    let s = try Scratch(["tenants/a.toml": tenant(backend: "kind = \"\(M.kind)\"\n" + keys)])
    defer { s.remove() }
    let loaded = try? ConfigLoader.load(directory: s.path).get()
    return (loaded?.exports.first?.export.backend.options(of: module), messages(s.problems()))
}

/// `text` as the command line gives it, with its `settings`.
func readSource<M: BackendModule>(_ module: M.Type, _ text: String, settings: SourceSettings = [:]) -> (M.Options?, [String]) {
    guard let problems = sourceProblem(module, text, settings: settings) else {
        return (try? M.options(fromSource: text, settings: settings), [])
    }
    return (nil, messages(problems.split(separator: "\n").map(String.init)))
}

/// The problems reading `text` reports, as the operator sees it; nil when it reads.
func sourceProblem<M: BackendModule>(_ module: M.Type, _ text: String, settings: SourceSettings = [:]) -> String? {
    do {
        _ = try M.options(fromSource: text, settings: settings)
        return nil
    } catch {
        return error.description
    }
}

/// A table whose kind is wrong or missing: the kind is the problem, and a key some backend
/// knows is not called unknown as well (before the registry, `timeout`, `hard` and
/// `connections` were, having been left out of a hand-kept list).
@Suite struct BackendKindTests {
    @Test func aWrongKindIsTheOneProblemWhenItsKeysBelongToABackend() throws {
        let s = try Scratch(["tenants/a.toml": tenant(backend: "kind = \"nfz\"\nserver = \"h\"\npath = \"/x\"\ntimeout = 5\nbogus = 1")])
        defer { s.remove() }
        let problems = s.problems()
        #expect(problems.count == 2, "\(problems)")
        #expect(isKindProblem(problems.first ?? "", at: "\(s.path)/tenants/a.toml:9:8", suggesting: "nfs"), "\(problems)")
        #expect(problems.last == "\(s.path)/tenants/a.toml:13:1: unknown key \"bogus\" in [export.backend]")
    }
}
