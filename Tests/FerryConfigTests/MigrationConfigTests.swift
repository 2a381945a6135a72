import FerryCore
import Testing
@testable import FerryConfig

/// `[export.migration]`: `ferry virtiofsd`'s --migration-* options in a tenant file.
@Suite struct MigrationConfigTests {
    func export(_ extra: String) throws -> ExportConfig {
        let s = try Scratch(["tenants/acme.toml": tenant(extra: extra)])
        defer { s.remove() }
        return try #require(try ConfigLoader.load(directory: s.path).get().exports.first?.export)
    }

    func problems(_ extra: String) throws -> [String] {
        let s = try Scratch(["tenants/acme.toml": tenant(extra: extra)])
        defer { s.remove() }
        return s.problems().map { $0.replacingOccurrences(of: s.path, with: "DIR") }
    }

    @Test func anExportWithoutTheTableHasVirtiofsdsDefaults() throws {
        let e = try export("")
        #expect(e.migration == MigrationOptions(mode: .findPaths, onError: .abort, verifyHandles: false, confirmPaths: false))
    }

    @Test func everyKeyIsRead() throws {
        let e = try export("[export.migration]\nmode = \"find-paths\"\non_error = \"guest-error\"\nverify_handles = true\nconfirm_paths = true")
        #expect(e.migration == MigrationOptions(mode: .findPaths, onError: .guestError, verifyHandles: true, confirmPaths: true))
        let inline = try export("migration = { mode = \"file-handles\" }")
        #expect(inline.migration == MigrationOptions(mode: .fileHandles))
    }

    @Test func theSampleConfigurationSetsIt() throws {
        let c = try ConfigLoader.load(directory: sampleDirectory).get()
        let home = try #require(c.exports.first { $0.export.name == "home" }?.export)
        #expect(home.migration == MigrationOptions(mode: .findPaths, onError: .abort))
    }

    @Test func aBadModeOrOnErrorNamesTheFileLineAndColumn() throws {
        #expect(try problems("[export.migration]\nmode = \"file-handle\"\non_error = \"ignore\"") == [
            "DIR/tenants/acme.toml:8:8: mode must be one of \"find-paths\", \"file-handles\"; did you mean \"file-handles\"?",
            "DIR/tenants/acme.toml:9:12: on_error must be one of \"abort\", \"guest-error\"",
        ])
    }

    @Test func checksThatNeedPathsAreRefusedWithFileHandles() throws {
        #expect(try problems("[export.migration]\nmode = \"file-handles\"\nverify_handles = true\nconfirm_paths = true") == [
            "DIR/tenants/acme.toml:9:18: verify_handles applies to mode = \"find-paths\" only (file handles need no path check)",
            "DIR/tenants/acme.toml:10:17: confirm_paths applies to mode = \"find-paths\" only (file handles need no path check)",
        ])
        // Turned off explicitly, they are no problem.
        #expect(try problems("[export.migration]\nmode = \"file-handles\"\nverify_handles = false").isEmpty)
    }

    @Test func wrongTypesAndUnknownKeysAreProblems() throws {
        #expect(try problems("[export.migration]\nverify_handles = \"yes\"\nonerror = \"abort\"") == [
            "DIR/tenants/acme.toml:8:18: verify_handles must be a boolean (true or false), found a string",
            "DIR/tenants/acme.toml:9:1: unknown key \"onerror\" in [export.migration]; did you mean \"on_error\"?",
        ])
        #expect(try problems("migration = 1") == ["DIR/tenants/acme.toml:7:13: migration must be a table, found an integer"])
    }
}
