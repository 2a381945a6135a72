import FerryTestSupport
import Foundation
import Testing

/// config/ferry.service is a unit systemd accepts, and its commands are ferry's.
@Suite struct SystemdUnitTests {
    static let analyzer = "/usr/bin/systemd-analyze"

    @Test(.requires(.systemdAnalyze))
    func theUnitVerifiesWithTheBuiltBinary() throws {
        let unit = try String(contentsOfFile: BuiltProducts.packageRoot.path + "/config/ferry.service", encoding: .utf8)
        #expect(unit.contains("ExecStart=/usr/local/bin/ferry serve --config /etc/ferry"))
        #expect(unit.contains("ExecReload=/usr/local/bin/ferry reload --config /etc/ferry"))
        let ferry = try BuiltProducts.require("ferry")
        let dir = try makeTemporaryDirectory("ferry-unit")
        try unit.replacingOccurrences(of: "/usr/local/bin/ferry", with: ferry)
            .write(toFile: dir + "/ferry.service", atomically: true, encoding: .utf8)
        // Other suites in this process run with umask 0; systemd warns about a world-writable unit.
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: dir + "/ferry.service")
        let verified = try runToCompletion(Self.analyzer, ["verify", dir + "/ferry.service"])
        #expect(verified.succeeded && verified.output.isEmpty, "\(verified.output)")
        // Every command the unit runs is one ferry has.
        for command in ["check-config", "serve", "reload"] {
            let help = try runToCompletion(ferry, [command, "--help"])
            #expect(help.succeeded, "ferry \(command): \(help.output)")
        }
    }
}
