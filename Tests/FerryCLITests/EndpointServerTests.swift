import Foundation
import Logging
import Synchronization
import Testing
@testable import FerryCLI
@testable import FerryDaemon
#if canImport(Glibc)
import Glibc
#endif

/// The endpoint server's bounds, on a loopback port: the connection cap drops the oldest
/// client still sending, the deadline covers the whole request however it trickles in, and
/// work answered off the loop does not hold up anyone else.
@Suite struct EndpointServerTests {
    /// Answers "ok" to a line; "slow" lines wait (off the loop) until `release` is set.
    final class Gate: Sendable {
        let open = Atomic<Bool>(false)
    }

    final class Fixture: Sendable {
        let port: UInt16
        let server: EndpointServer
        let release = Gate()

        init(maxConnections: Int = 512, requestSeconds: Double = 30) throws {
            let (port, fd) = try EndpointFuzzTests.loopbackListener()
            self.port = port
            let limits = EndpointLimits(maxRequestBytes: 1024, maxConnections: maxConnections, requestSeconds: requestSeconds,
                                        answerSeconds: 30, oversized: Array("too large\n".utf8))
            server = EndpointServer(listening: fd, limits: limits, logger: Logger(label: "endpoint")) { [release] request, _ in
                guard let end = request.firstIndex(of: 10) else { return .incomplete }
                if request[..<end].elementsEqual("slow".utf8) {
                    return .answerOffLoop {
                        while !release.open.load(ordering: .acquiring) { usleep(10_000) }
                        return Array("slow ok\n".utf8)
                    }
                }
                return .answer(Array("ok\n".utf8))
            }
            server.start()
        }

        deinit {
            release.open.store(true, ordering: .releasing)
            server.stop()
        }

        func ask(_ line: String) throws -> String {
            String(decoding: try EndpointClient.exchange(.tcp(port), [Array(line.utf8)], seconds: 30), as: UTF8.self)
        }
    }

    @Test func pastTheConnectionCapTheOldestClientStillSendingIsDroppedAndTheNewOneServed() throws {
        let f = try Fixture(maxConnections: 8)
        let idle = (0..<8).compactMap { _ in EndpointClient.open(.tcp(f.port)) }
        defer { idle.forEach { close($0) } }
        #expect(idle.count == 8)
        // Once all eight are accepted, the next connection pushes the first one out.
        #expect(try f.ask("hello\n") == "ok\n")
        #expect(FerryWait.until(30) { !EndpointClient.isOpenAndQuiet(idle[0]) })
        #expect(idle.dropFirst().allSatisfy(EndpointClient.isOpenAndQuiet))
    }

    @Test func aClientTricklingItsRequestIsCutOffAtTheDeadlineForTheWholeRequest() throws {
        let f = try Fixture(requestSeconds: 1)
        let slow = TricklingClients(.tcp(f.port), count: 1, request: Array("abcdefghijklmnopqrstuvwxyz\n".utf8))
        defer { slow.stop() }
        // A byte a second keeps every read short of any per-read timeout; the whole request
        // has one second, so the server closes it long before the line could end.
        let fd = try #require(slow.descriptors.first)
        #expect(FerryWait.until(30) { !EndpointClient.isOpenAndQuiet(fd) })
        #expect(try f.ask("after\n") == "ok\n")
    }

    @Test func anAnswerComputedOffTheLoopDoesNotHoldUpOtherClients() throws {
        let f = try Fixture()
        let slowAnswer = Mutex<String?>(nil)
        let waiting = Thread {
            let answer = try? f.ask("slow\n")
            slowAnswer.withLock { $0 = answer }
        }
        waiting.start()
        // While the slow answer is being worked on, others are served.
        for _ in 0..<5 { #expect(try f.ask("quick\n") == "ok\n") }
        #expect(slowAnswer.withLock { $0 } == nil)
        f.release.open.store(true, ordering: .releasing)
        #expect(FerryWait.until(30) { slowAnswer.withLock { $0 } == "slow ok\n" })
    }
}
