import FerryTestSupport
import Foundation
import Testing

/// `ferry exports list` lists the configuration even with no daemon running.
@Suite struct ExportsCommandTests {
    var sample: String { BuiltProducts.packageRoot.appendingPathComponent("config").path }
    /// Where no daemon answers, so these runs never see the one ServeTests may start on the sample.
    let noDaemon = "/nonexistent/ferry-control.sock"

    @Test func theJSONListingHasEveryExportWithItsBackendAndNoSecrets() throws {
        let ferry = try BuiltProducts.require("ferry")
        let result = try runToCompletion(ferry, ["exports", "list", "--config", sample, "--control-socket", noDaemon, "--json"])
        #expect(result.succeeded, "\(result.output)")
        let array = try #require(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [[String: Any]])
        #expect(array.count == 3)
        for object in array {
            for key in ["tenant", "export", "tag", "socket", "state", "backend"] { #expect(object[key] != nil, "missing \(key)") }
            #expect(object["state"] as? String == "not running")
        }
        let kinds = Set(array.compactMap { ($0["backend"] as? [String: Any])?["kind"] as? String })
        #expect(kinds == ["posix", "nfs", "rados"])
        #expect(!result.output.contains("keyring") && !result.output.contains("AQ"))
    }

    @Test func theTableHasAHeaderAndOneRowPerExport() throws {
        let ferry = try BuiltProducts.require("ferry")
        let result = try runToCompletion(ferry, ["exports", "list", "--config", sample, "--control-socket", noDaemon])
        #expect(result.succeeded, "\(result.output)")
        let lines = result.output.split(separator: "\n")
        #expect(lines.first?.hasPrefix("TENANT  EXPORT") == true)
        #expect(lines.filter { $0.hasPrefix("demo ") }.count == 3)
        #expect(lines.last?.contains("no ferry daemon is running") == true)
    }

    @Test func anUnknownTenantOrExportIsAClearError() throws {
        let ferry = try BuiltProducts.require("ferry")
        let tenant = try runToCompletion(ferry, ["exports", "list", "--config", sample, "--control-socket", noDaemon, "--tenant", "nosuch"])
        #expect(!tenant.succeeded && tenant.output.contains("no tenant named 'nosuch'"))
        let export = try runToCompletion(ferry, ["exports", "show", "--config", sample, "--control-socket", noDaemon, "demo/nosuch"])
        #expect(!export.succeeded && export.output.contains("no export 'demo/nosuch'"))
        let shown = try runToCompletion(ferry, ["exports", "show", "--config", sample, "--control-socket", noDaemon, "demo/home"])
        #expect(shown.succeeded && shown.output.contains("demo-home"))
    }
}
