import FerryCore
import FerryFUSE
import FerryVhostFrontend
import FerryVhostUser
import FerryVirtio
import Foundation
import Glibc
import Testing

/// A hostile guest cannot exhaust the daemon: lookup counts grow without new nodes,
/// distinct nodes are capped by the export's limit (ENFILE), and open descriptors stay
/// bounded and are given back when the guest goes.
extension FerryFrontendAndHostileTests {
@Suite(.serialized) struct HostileExhaustionTests {
    /// Submits `count` LOOKUPs of `name(i)` pipelined `depth` deep on one queue; returns
    /// the errno of each (0 for success) and the node ids seen.
    static func lookups(_ q: FUSEQueueClient, count: Int, name: (Int) -> String) throws -> (errors: [Int32: Int], nodes: Set<UInt64>) {
        var errors: [Int32: Int] = [:]
        var nodes = Set<UInt64>()
        var submitted = 0, completed = 0
        func handle(_ c: FUSECompletion) {
            completed += 1
            guard c.isWellFormed, let h = c.header else { errors[-1, default: 0] += 1; return }
            errors[-h.error, default: 0] += 1
            if h.error == 0, let e = FUSEClientDecoder.entryOut(q.replyArguments(c.slot, count: 128)) { nodes.insert(e.nodeID) }
        }
        while completed < count {
            var posted = false
            while submitted < count, q.freeSlotCount > 0 {
                _ = q.submit(opcode: .lookup, nodeID: FUSESession.rootNodeID, argument: FUSENoArgument(), name: name(submitted),
                             replyArgumentSize: 128, kick: false)
                submitted += 1; posted = true
            }
            if posted { q.queue.kickIfNeeded() }
            try q.waitAndReap(timeoutMilliseconds: 10_000, handle)
        }
        return (errors, nodes)
    }

    @Test func repeatedLookupsOfOneNameWithoutForgetKeepOneNode() async {
        relay(await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) { try FerryFrontendAndHostileTests.HostileExhaustionTests.repeatedLookupsOfOneNameWithoutForgetKeepOneNodeHere() })
    }
    static func repeatedLookupsOfOneNameWithoutForgetKeepOneNodeHere() throws {
        let daemon = try FerryDaemon()
        FileManager.default.createFile(atPath: daemon.export + "/same", contents: Data("x".utf8))
        let fdsBefore = openFDCount()
        do {
            let configuration = FrontendConfiguration(requestQueues: 1, depth: 64, dataBufferSize: 0)
            let session = try FUSESession(socketPath: daemon.socketPath, configuration: configuration)
            let (errors, nodes) = try Self.lookups(session.queue, count: 100_000) { _ in "same" }
            #expect(errors == [0: 100_000])
            #expect(nodes.count == 1)
            let node = try #require(nodes.first)
            #expect(daemon.server.nodeCount == 2)                  // the root and "same"
            #expect(daemon.server.lookupCount(of: node) == 100_000)
            #expect(openFDCount() <= fdsBefore + 40, "fds \(fdsBefore) -> \(openFDCount())")
            // One FORGET of the whole count drops it.
            try session.forget(nodeID: node, nlookup: 100_000)
            #expect(try session.drainHiprio() == [0])
            #expect(daemon.server.lookupCount(of: node) == nil)
            #expect(daemon.server.nodeCount == 1)
        }
        daemon.newConnectionWorks()
    }

    @Test func distinctLookupsWithoutForgetAreCappedByTheNodeLimit() async {
        relay(await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) { try FerryFrontendAndHostileTests.HostileExhaustionTests.distinctLookupsWithoutForgetAreCappedByTheNodeLimitHere() })
    }
    static func distinctLookupsWithoutForgetAreCappedByTheNodeLimitHere() throws {
        let limit = 1000
        let daemon = try FerryDaemon(policy: ExportPolicy(maxNodes: limit))
        for i in 0..<5000 {
            let fd = open(daemon.export + "/f\(i)", O_CREAT | O_WRONLY, 0o644)
            precondition(fd >= 0)
            close(fd)
        }
        let fdsBefore = openFDCount()
        do {
            let configuration = FrontendConfiguration(requestQueues: 1, depth: 64, dataBufferSize: 0)
            let session = try FUSESession(socketPath: daemon.socketPath, configuration: configuration)
            let (errors, nodes) = try Self.lookups(session.queue, count: 5000) { "f\($0)" }
            let ok = errors[0] ?? 0
            #expect(ok + (errors[ENFILE] ?? 0) == 5000, "errors \(errors)")
            #expect(ok >= limit - 1 && ok <= limit, "\(ok) lookups succeeded with a limit of \(limit)")
            #expect(nodes.count == ok)
            #expect(daemon.server.nodeCount <= limit)
            let during = openFDCount()
            #expect(during - fdsBefore <= limit + 40, "fds \(fdsBefore) -> \(during)")
            // The limit is a ceiling, not a wedge: after a FORGET, a new name can be looked up.
            let victim = try #require(nodes.first)
            try session.forget(nodeID: victim, nlookup: 1)
            #expect(try session.drainHiprio() == [0])
            #expect(throws: Never.self) { _ = try session.queue.lookup(parent: FUSESession.rootNodeID, name: "f4999") }
            #expect(throws: FrontendError.fuseError(opcode: FUSEOpcode.lookup.rawValue, errno: ENFILE)) {
                _ = try session.queue.lookup(parent: FUSESession.rootNodeID, name: "f4998")
            }
            // Known nodes still answer at the limit.
            #expect(try session.queue.getattr(nodeID: nodes.dropFirst().first!).attr.size == 0)
        }
        // When the guest goes, its nodes and their descriptors go too.
        #expect(daemon.waitUntilListening())
        #expect(daemon.server.nodeCount == 1)
        #expect(FerryDaemon.eventually { openFDCount() <= fdsBefore + 8 }, "fds \(fdsBefore) -> \(openFDCount())")
        daemon.newConnectionWorks()
    }

    @Test func openHandlesAreCappedAndReturnedOnDisconnect() async {
        relay(await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) { try FerryFrontendAndHostileTests.HostileExhaustionTests.openHandlesAreCappedAndReturnedOnDisconnectHere() })
    }
    static func openHandlesAreCappedAndReturnedOnDisconnectHere() throws {
        let daemon = try FerryDaemon(policy: ExportPolicy(maxOpenHandles: 100))
        FileManager.default.createFile(atPath: daemon.export + "/f", contents: Data())
        let fdsBefore = openFDCount()
        do {
            let session = try FUSESession(socketPath: daemon.socketPath)
            let q = session.queue
            let node = try q.lookup(parent: FUSESession.rootNodeID, name: "f").nodeID
            var opened = 0, refused = 0
            for _ in 0..<300 {
                do { _ = try q.open(nodeID: node, flags: O_RDONLY); opened += 1 } catch FrontendError.fuseError(_, let e) where e == ENFILE { refused += 1 }
            }
            #expect(opened == 100 && refused == 200)
            #expect(daemon.server.openHandleCount == 100)
            #expect(openFDCount() - fdsBefore <= 100 + 40)
        }
        #expect(daemon.waitUntilListening())
        #expect(daemon.server.openHandleCount == 0)
        #expect(FerryDaemon.eventually { openFDCount() <= fdsBefore + 8 }, "fds \(fdsBefore) -> \(openFDCount())")
        daemon.newConnectionWorks()
    }
}
}
