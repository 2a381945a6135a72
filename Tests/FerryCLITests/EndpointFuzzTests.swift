import FerryTestSupport
import Foundation
import Logging
import Testing
@testable import FerryCLI
@testable import FerryConfig
@testable import FerryDaemon
#if canImport(Glibc)
import Glibc
#endif

/// The endpoint server and its two parsers fed random and mutated requests over real
/// sockets, each split at random points: the server never crashes, never hangs, and every
/// connection gets a well-formed answer or a plain close; afterwards it still answers a
/// good request. Deterministic: the seed is fixed, so a failure replays.
@Suite struct EndpointFuzzTests {
    /// Short deadlines, so the cases that never finish their request cost little.
    static let limits = EndpointLimits(maxRequestBytes: 2048, maxConnections: 64, requestSeconds: 0.3, answerSeconds: 5,
                                       oversized: Array("TOO LARGE".utf8))

    @Test func theMetricsServerAnswersOrClosesEveryRandomOrMutatedRequest() throws {
        let (port, listenFD) = try Self.loopbackListener()
        let server = EndpointServer(listening: listenFD, limits: Self.limits, logger: Logger(label: "fuzz")) { request, closed in
            metricsVerdict(request, peerClosed: closed) { "ferry_fuzz 1\n" }
        }
        server.start()
        defer { server.stop() }
        let seeds = [
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n",
            "HEAD / HTTP/1.0\r\n\r\n",
            "GET /metrics?name[]=x HTTP/1.1\r\nUser-Agent: Prometheus/2.0\r\nAccept-Encoding: gzip\r\n\r\n",
            "POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        ].map { Array($0.utf8) }
        let outcomes = try Self.fuzz(.tcp(port), seeds: seeds, cases: 3000, seed: 0xF3_44_13_05) { answer in
            guard answer.starts(with: "HTTP/1.1 ".utf8) else { return nil }
            return String(decoding: answer.prefix { $0 != 13 }, as: UTF8.self)
        }
        for outcome in ["HTTP/1.1 200 OK", "HTTP/1.1 400 Bad Request", "HTTP/1.1 404 Not Found", "HTTP/1.1 405 Method Not Allowed", "TOO LARGE", "closed"] {
            #expect(outcomes[outcome, default: 0] > 0, "no case got \(outcome): \(outcomes)")
        }
        let ok = try EndpointClient.exchange(.tcp(port), [seeds[0]], seconds: 30)
        #expect(String(decoding: ok, as: UTF8.self).hasSuffix("\r\n\r\nferry_fuzz 1\n"))
    }

    @Test func theControlServerAnswersOrClosesEveryRandomOrMutatedRequest() throws {
        let dir = try makeTemporaryDirectory("ferry-control-fuzz")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/control.sock"
        let listenFD = try ControlServer.listen(at: path)
        let server = EndpointServer(listening: listenFD, limits: Self.limits, logger: Logger(label: "fuzz")) { request, closed in
            controlVerdict(request, peerClosed: closed) { request in
                let reply = controlReplyBytes(ControlReply(ok: true, directory: request.command.rawValue))
                return request.command == .reload ? .answerOffLoop { reply } : .answer(reply)
            }
        }
        server.start()
        defer { server.stop() }
        let seeds = [
            #"{"command":"status"}"#, #"{"command":"show","export":"acme/home"}"#,
            #"{"command":"reload"}"#, #"{"command":"status","tenant":"a\"b"}"#,
        ].map { Array($0.utf8) }
        let outcomes = try Self.fuzz(.unix(path), seeds: seeds, cases: 3000, seed: 0xC0_47_13_05) { answer in
            (try? JSONDecoder().decode(ControlReply.self, from: Data(answer))).map { $0.ok ? "ok" : "error" }
        }
        for outcome in ["ok", "error", "TOO LARGE", "closed"] {
            #expect(outcomes[outcome, default: 0] > 0, "no case got \(outcome): \(outcomes)")
        }
        let ok = try EndpointClient.exchange(.unix(path), [seeds[2]], shutWrite: true, seconds: 30)
        #expect((try? JSONDecoder().decode(ControlReply.self, from: Data(ok)))?.directory == "reload")
    }

    /// Sends `cases` requests made from `seeds`, each in random pieces, and counts the
    /// outcomes: "closed" (no answer), "TOO LARGE", or what `classify` names a well-formed
    /// answer (nil: malformed, a failure). Most clients shut their side after sending (the
    /// server must then answer or close at once); one in a hundred leaves it open (the
    /// deadline must close it).
    static func fuzz(_ address: EndpointClient.Address, seeds: [[UInt8]], cases: Int, seed: UInt64,
                     classify: ([UInt8]) -> String?) throws -> [String: Int] {
        var rng = SplitMix64(seed: seed)
        var outcomes: [String: Int] = [:]
        for n in 0..<cases {
            let request = mutated(seeds[Int(rng.next() % UInt64(seeds.count))], &rng)
            let answer = try EndpointClient.exchange(address, split(request, &rng), shutWrite: rng.next() % 100 != 0, seconds: 30)
            let outcome = answer.isEmpty ? "closed" : answer == Array("TOO LARGE".utf8) ? "TOO LARGE" : classify(answer)
            #expect(outcome != nil, "case \(n): \(request.prefix(200)) got \(answer.prefix(200))")
            outcomes[outcome ?? "malformed", default: 0] += 1
        }
        return outcomes
    }

    static func mutated(_ seed: [UInt8], _ rng: inout SplitMix64) -> [UInt8] {
        var bytes = seed
        func random(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8(truncatingIfNeeded: rng.next()) } }
        for _ in 0..<(1 + rng.next() % 4) {
            let at = bytes.isEmpty ? 0 : Int(rng.next() % UInt64(bytes.count))
            switch rng.next() % 9 {
            case 0: if !bytes.isEmpty { bytes[at] = UInt8(truncatingIfNeeded: rng.next()) }
            case 1: bytes.insert(contentsOf: random(Int(rng.next() % 16)), at: at)
            case 2: bytes.removeSubrange(at..<min(bytes.count, at + Int(rng.next() % 16)))
            case 3: bytes.insert(contentsOf: bytes[at..<min(bytes.count, at + Int(rng.next() % 32))], at: at)
            case 4: bytes = Array(bytes.prefix(at))
            case 5: bytes = random(Int(rng.next() % 300))
            case 6: bytes += [UInt8](repeating: UInt8(ascii: "A"), count: 2000 + Int(rng.next() % 4000))
            case 7: bytes.insert(contentsOf: [[13, 10], [10], [0], [123], [125], [34]][Int(rng.next() % 6)], at: at)
            default: break
            }
        }
        return bytes
    }

    /// `bytes` in one to six pieces cut at random points.
    static func split(_ bytes: [UInt8], _ rng: inout SplitMix64) -> [[UInt8]] {
        guard !bytes.isEmpty else { return [] }
        let cuts = (0..<(rng.next() % 6)).map { _ in Int(rng.next() % UInt64(bytes.count)) }
        let bounds = [0] + Set(cuts).sorted() + [bytes.count]
        return zip(bounds, bounds.dropFirst()).filter { $0 < $1 }.map { Array(bytes[$0..<$1]) }
    }

    static func loopbackListener() throws -> (UInt16, Int32) {
        let fd = try MetricsServer.listen(on: HostPort(host: "127.0.0.1", port: 0))
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return (UInt16(bigEndian: address.sin_port), fd)
    }
}

/// A small deterministic generator (SplitMix64), so every run makes the same cases.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
