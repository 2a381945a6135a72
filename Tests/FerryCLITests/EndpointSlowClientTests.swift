import FerryTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `ferry serve`'s control socket and metrics endpoint under clients that connect and send
/// nothing, or a byte a second: an operator's scrape and `ferry exports list` still complete,
/// and are correct, while every one of them stays connected. No timing is asserted; each
/// wait is bounded, so a server that serves one connection at a time fails by timing out.
@Suite(.serialized) struct EndpointSlowClientTests {
    static let idle = 300
    static let trickling = 4
    /// Far more than a responsive server needs, far less than 300 clients served in turn.
    static let bound = 60.0

    func servingFixture() throws -> ServeFixture {
        let f = try ServeFixture()
        try f.writeTenant("acme", f.posixExport("home", tenant: "acme", path: try f.directory("acme-home")))
        try f.start()
        return f
    }

    @Test func aScrapeCompletesWhileHundredsOfIdleAndTricklingClientsHoldTheMetricsPort() throws {
        let f = try servingFixture()
        let address = EndpointClient.Address.tcp(f.metricsPort)
        let idle = (0..<Self.idle).compactMap { _ in EndpointClient.open(address) }
        defer { idle.forEach { close($0) } }
        let slow = TricklingClients(address, count: Self.trickling, request: Array("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        defer { slow.stop() }
        #expect(idle.count == Self.idle && slow.count == Self.trickling)

        let response = String(decoding: try EndpointClient.exchange(
            address, [Array("GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8)], seconds: Self.bound), as: UTF8.self)
        #expect(response.hasPrefix("HTTP/1.1 200 OK"))
        #expect(response.contains("ferry_export_up{tenant=\"acme\",export=\"home\"} 1"))
        // The scrape did not get through by the server dropping the idle clients.
        #expect(idle.filter(EndpointClient.isOpenAndQuiet).count == Self.idle)
        #expect(f.stop() == 0)
    }

    @Test func exportsListCompletesWhileHundredsOfIdleAndTricklingClientsHoldTheControlSocket() throws {
        let f = try servingFixture()
        let address = EndpointClient.Address.unix(f.controlSocket)
        let idle = (0..<Self.idle).compactMap { _ in EndpointClient.open(address) }
        defer { idle.forEach { close($0) } }
        let slow = TricklingClients(address, count: Self.trickling, request: Array(#"{"command":"status"}"#.utf8))
        defer { slow.stop() }
        #expect(idle.count == Self.idle && slow.count == Self.trickling)

        let list = try EndpointClient.ferry(["exports", "list", "--config", f.config, "--json"], seconds: Self.bound)
        #expect(list.status == 0)
        let exports = try JSONSerialization.jsonObject(with: Data(list.output.utf8)) as? [[String: Any]]
        #expect(exports?.first?["export"] as? String == "home")
        #expect(exports?.first?["state"] as? String == "listening")
        #expect(idle.filter(EndpointClient.isOpenAndQuiet).count == Self.idle)
        #expect(f.stop() == 0)
    }

    @Test func oversizedAndMalformedRequestsGetAnErrorAndBothEndpointsKeepServing() throws {
        let f = try servingFixture()
        let metrics = EndpointClient.Address.tcp(f.metricsPort)
        func http(_ request: String) throws -> String {
            String(decoding: try EndpointClient.exchange(metrics, [Array(request.utf8)], seconds: Self.bound), as: UTF8.self)
        }
        #expect(try http("GET /metrics HTTP/1.1\r\nX-Pad: \(String(repeating: "a", count: 20000))\r\n\r\n")
            .hasPrefix("HTTP/1.1 431 "))
        #expect(try http("GET /metrics\r\n\r\n").hasPrefix("HTTP/1.1 400 "))
        #expect(try http("\u{0}\u{1}\r\n\r\n").hasPrefix("HTTP/1.1 400 "))
        #expect(try http("DELETE /metrics HTTP/1.1\r\n\r\n").hasPrefix("HTTP/1.1 405 "))
        #expect(try http("GET /other HTTP/1.1\r\n\r\n").hasPrefix("HTTP/1.1 404 "))
        #expect(try http("GET /metrics HTTP/1.1\r\n\r\n").contains("ferry_export_up{tenant=\"acme\",export=\"home\"} 1"))

        let control = EndpointClient.Address.unix(f.controlSocket)
        func ask(_ request: [UInt8]) throws -> ControlReplyFields? {
            try? JSONDecoder().decode(ControlReplyFields.self, from: Data(EndpointClient.exchange(control, [request], shutWrite: true, seconds: Self.bound)))
        }
        #expect(try ask(Array(repeating: UInt8(ascii: "{"), count: 100_000))?.error == "request too large")
        #expect(try ask(Array("not json".utf8))?.error?.hasPrefix("malformed request") == true)
        #expect(try ask(Array(#"{"command":"format-disk"}"#.utf8))?.error?.hasPrefix("malformed request") == true)
        #expect(try ask(Array(#"{"command":"status"}"#.utf8))?.ok == true)
        let list = try EndpointClient.ferry(["exports", "list", "--config", f.config], seconds: Self.bound)
        #expect(list.status == 0 && list.output.contains("listening"))
        #expect(f.stop() == 0)
    }
}

/// The fields of the control socket's reply these tests read.
struct ControlReplyFields: Decodable {
    var ok: Bool
    var error: String?
}
