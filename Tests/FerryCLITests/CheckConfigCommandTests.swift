import FerryTestSupport
import Foundation
import Testing

/// `ferry check-config` as an operator runs it: exit 0 and a summary for a good directory,
/// exit 1 and `FILE:LINE:COLUMN: message` lines for a bad one.
@Suite struct CheckConfigCommandTests {
    @Test func theSampleConfigurationIsAccepted() throws {
        let ferry = try BuiltProducts.require("ferry")
        let result = try runToCompletion(ferry, ["check-config", BuiltProducts.packageRoot.appendingPathComponent("config").path])
        #expect(result.succeeded, "\(result.output)")
        #expect(result.output.contains("posix") && result.output.contains("nfs") && result.output.contains("rados"))
    }

    @Test func problemsArePrintedWithFileAndLineAndExitOne() throws {
        let ferry = try BuiltProducts.require("ferry")
        let dir = try makeTemporaryDirectory("ferry-badconfig")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/tenants", withIntermediateDirectories: false)
        try """
        name = "acme"
        [[export]]
        name = "home"
        tag = "home"
        socket = "/run/ferry/acme-home.sock"
        queus = 2
        [export.backend]
        kind = "posix"
        path = "/nonexistent/ferry-export"
        """.write(toFile: dir + "/tenants/acme.toml", atomically: false, encoding: .utf8)
        let result = try runToCompletion(ferry, ["check-config", dir])
        #expect(result.exitedNormally && result.status == 1)
        #expect(result.output.contains(dir + "/tenants/acme.toml:6:1: unknown key \"queus\""), "\(result.output)")
        #expect(result.output.contains(dir + "/tenants/acme.toml:9:"), "\(result.output)")
    }
}
