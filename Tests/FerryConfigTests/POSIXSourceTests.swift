import FerryBackend
import FerryPOSIXBackend
import Testing
@testable import FerryConfig

/// A directory on the command line (`ferry mount DIR`, `ferry virtiofsd --shared-dir`) is
/// read as the `path` of a `kind = "posix"` table: the same checks and the same messages.
@Suite struct POSIXSourceTests {
    @Test func aDirectoryOnTheCommandLineAndInATableAreTheSameExport() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let (table, problems) = try readTable(POSIXBackend.self, "path = \"\(dir.path)\"")
        #expect(problems == [])
        #expect(table != nil && table == readSource(POSIXBackend.self, dir.path).0)
    }

    @Test func aDirectoryOnTheCommandLineAndInATableGetTheSameProblems() throws {
        let dir = try Scratch(["file": ""])
        defer { dir.remove() }
        for path in [dir.path + "/missing", dir.path + "/file", ""] {
            let (_, table) = try readTable(POSIXBackend.self, "path = \"\(path)\"")
            let (_, source) = readSource(POSIXBackend.self, path)
            #expect(!table.isEmpty && table == source, "\(path)")
        }
        #expect(try readTable(POSIXBackend.self, "path = \"\(dir.path)/file\"").1 == ["export path \(dir.path)/file is not a directory"])
        // The path is the whole source: named, without a column.
        #expect(sourceProblem(POSIXBackend.self, dir.path + "/missing")
            == "source \(dir.path)/missing: export directory \(dir.path)/missing does not exist")
    }
}
