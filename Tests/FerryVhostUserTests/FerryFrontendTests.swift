import FerryCore
import FerryFUSE
import FerryVhostFrontend
import FerryVhostUser
import FerryVirtio
import Foundation
import Glibc
import Testing

/// Ferry's back-end driven through the Swift front-end (what QEMU plus a guest kernel do):
/// the functional path, over a real socket and shared memory.
extension FerryFrontendAndHostileTests {
@Suite(.serialized) struct FerryFrontendTests {
    @Test(arguments: [1, 4])
    func handshakeStartsHiprioAndRequestQueues(requestQueues: Int) throws {
        let daemon = try FerryDaemon()
        var configuration = FrontendConfiguration(requestQueues: requestQueues, depth: 4, dataBufferSize: 4096)
        configuration.scratchBytes = 4096
        let frontend = try VhostUserFrontend(socketPath: daemon.socketPath, configuration: configuration)
        #expect(frontend.features & VirtioFeature.version1 != 0)
        #expect(frontend.features & VirtioFeature.protocolFeatures != 0)
        #expect(frontend.features & VirtioFeature.ringIndirectDescriptors != 0)
        #expect(frontend.features & VirtioFeature.ringEventIndex != 0)
        #expect(frontend.protocolFeatures & VhostUserProtocolFeature.replyAck != 0)
        #expect(frontend.protocolFeatures & VhostUserProtocolFeature.multiqueue != 0)
        #expect(frontend.backendQueueCount == 17)
        #expect(frontend.queues.count == requestQueues + 1)
        #expect(daemon.backend.state == .connected)
        #expect(daemon.backend.connectionsServed == 1)
        // Every request queue answers.
        let session = try FUSESession(frontend: frontend)
        for q in session.requestQueues {
            #expect(try q.getattr(nodeID: FUSESession.rootNodeID).attr.mode & 0o170000 == 0o040000)
        }
    }

    @Test func initNegotiatesAsForALinuxGuest() throws {
        let daemon = try FerryDaemon()
        let session = try FUSESession(socketPath: daemon.socketPath)
        let reply = try #require(session.initReply)
        #expect(reply.major == 7)
        #expect(reply.minor >= 31)
        #expect(reply.maxWrite >= 4096 && reply.maxWrite <= 1 << 20)
        // A second INIT on the same connection is not a fresh start.
        #expect(throws: FrontendError.self) { _ = try session.queue.initialize() }
        #expect(try session.queue.getattr(nodeID: FUSESession.rootNodeID).attr.ino != 0)
    }

    @Test func requestsBeforeInitAreRefused() throws {
        let daemon = try FerryDaemon()
        let session = try FUSESession(socketPath: daemon.socketPath, sendInit: false)
        #expect(throws: FrontendError.self) { _ = try session.queue.getattr(nodeID: FUSESession.rootNodeID) }
        _ = try session.queue.initialize()
        #expect(try session.queue.getattr(nodeID: FUSESession.rootNodeID).attr.mode & 0o170000 == 0o040000)
    }

    @Test func createWriteReadBackOneMebibyteVerifiedOnTheHost() throws {
        let daemon = try FerryDaemon()
        let session = try FUSESession(socketPath: daemon.socketPath)
        let q = session.queue
        let (entry, open) = try q.create(parent: FUSESession.rootNodeID, name: "big", flags: O_RDWR, mode: 0o644)
        let data = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 12) }
        #expect(try q.write(nodeID: entry.nodeID, fh: open.fh, offset: 0, data: data) == UInt32(data.count))
        try q.flush(nodeID: entry.nodeID, fh: open.fh)
        try q.fsync(nodeID: entry.nodeID, fh: open.fh)
        let onHost = try Data(contentsOf: URL(fileURLWithPath: daemon.export + "/big"))
        #expect(onHost.count == data.count)
        #expect(Array(onHost) == data)
        // Read back in one 1 MiB READ, and in an unaligned piece.
        #expect(try q.read(nodeID: entry.nodeID, fh: open.fh, offset: 0, size: data.count) == data)
        #expect(try q.read(nodeID: entry.nodeID, fh: open.fh, offset: 12345, size: 100_000) == Array(data[12345..<112_345]))
        // A READ past the end is short.
        #expect(try q.read(nodeID: entry.nodeID, fh: open.fh, offset: UInt64(data.count - 10), size: 4096) == Array(data.suffix(10)))
        #expect(try q.getattr(nodeID: entry.nodeID).attr.size == UInt64(data.count))
        try q.release(nodeID: entry.nodeID, fh: open.fh)
        #expect(daemon.server.openHandleCount == 0)
    }

    @Test func lookupGetattrReaddirMkdirUnlink() throws {
        let daemon = try FerryDaemon()
        try Data(repeating: 7, count: 12345).write(to: URL(fileURLWithPath: daemon.export + "/host-file"))
        let session = try FUSESession(socketPath: daemon.socketPath)
        let q = session.queue
        let entry = try q.lookup(parent: FUSESession.rootNodeID, name: "host-file")
        #expect(entry.attr.size == 12345)
        #expect(entry.attr.mode & 0o170000 == 0o100000)
        var st = stat()
        #expect(stat(daemon.export + "/host-file", &st) == 0)
        #expect(entry.attr.ino == UInt64(st.st_ino))
        #expect(try q.getattr(nodeID: entry.nodeID).attr.size == 12345)
        #expect(throws: FrontendError.fuseError(opcode: FUSEOpcode.lookup.rawValue, errno: ENOENT)) {
            _ = try q.lookup(parent: FUSESession.rootNodeID, name: "missing")
        }

        let dir = try q.mkdir(parent: FUSESession.rootNodeID, name: "sub", mode: 0o755)
        #expect(dir.attr.mode & 0o170000 == 0o040000)
        var isDirectory: ObjCBool = false
        #expect(FileManager.default.fileExists(atPath: daemon.export + "/sub", isDirectory: &isDirectory) && isDirectory.boolValue)
        #expect(throws: FrontendError.fuseError(opcode: FUSEOpcode.mkdir.rawValue, errno: EEXIST)) {
            _ = try q.mkdir(parent: FUSESession.rootNodeID, name: "sub", mode: 0o755)
        }
        let (inner, open) = try q.create(parent: dir.nodeID, name: "inner", flags: O_WRONLY, mode: 0o600)
        try q.release(nodeID: inner.nodeID, fh: open.fh)
        #expect(FileManager.default.fileExists(atPath: daemon.export + "/sub/inner"))

        #expect(Set(try q.listDirectory(nodeID: FUSESession.rootNodeID)) == [".", "..", "host-file", "sub"])
        #expect(Set(try q.listDirectory(nodeID: dir.nodeID)) == [".", "..", "inner"])

        try q.unlink(parent: dir.nodeID, name: "inner")
        #expect(!FileManager.default.fileExists(atPath: daemon.export + "/sub/inner"))
        #expect(throws: FrontendError.fuseError(opcode: FUSEOpcode.unlink.rawValue, errno: ENOENT)) {
            try q.unlink(parent: dir.nodeID, name: "inner")
        }
        #expect(Set(try q.listDirectory(nodeID: dir.nodeID)) == [".", ".."])
        #expect(daemon.server.openHandleCount == 0)
    }

    @Test func forgetOnHiprioDropsTheNodeWithoutAReply() throws {
        let daemon = try FerryDaemon()
        FileManager.default.createFile(atPath: daemon.export + "/f", contents: Data())
        let session = try FUSESession(socketPath: daemon.socketPath)
        var node: UInt64 = 0
        for _ in 0..<3 { node = try session.queue.lookup(parent: FUSESession.rootNodeID, name: "f").nodeID }
        #expect(daemon.server.lookupCount(of: node) == 3)
        try session.forget(nodeID: node, nlookup: 2)
        #expect(try session.drainHiprio() == [0])
        #expect(daemon.server.lookupCount(of: node) == 1)
        try session.forget(nodeID: node, nlookup: 1)
        #expect(try session.drainHiprio() == [0])
        #expect(daemon.server.lookupCount(of: node) == nil)
        #expect(daemon.server.nodeCount == 1)
        // A forgotten node is unknown; a fresh lookup brings the file back.
        #expect(throws: FrontendError.self) { _ = try session.queue.getattr(nodeID: node) }
        #expect(try session.queue.lookup(parent: FUSESession.rootNodeID, name: "f").attr.size == 0)
    }

    @Test func sixtyFourRequestsInFlightAcrossFourQueuesFromFourThreads() throws {
        let daemon = try FerryDaemon()
        for i in 0..<64 {
            FileManager.default.createFile(atPath: daemon.export + "/f\(i)", contents: Data(count: 100 + i))
        }
        let configuration = FrontendConfiguration(requestQueues: 4, depth: 16, dataBufferSize: 4096)
        let session = try FUSESession(socketPath: daemon.socketPath, configuration: configuration)
        let start = DispatchSemaphore(value: 0)
        let group = DispatchGroup()
        let results = ThreadResults()
        for (qi, q) in session.requestQueues.enumerated() {
            group.enter()
            Thread {
                defer { group.leave() }
                start.wait()
                var expected: [Int: Int] = [:]      // slot -> file index
                for k in 0..<16 {
                    let i = qi * 16 + k
                    guard let slot = q.submit(opcode: .lookup, nodeID: FUSESession.rootNodeID, argument: FUSENoArgument(),
                                              name: "f\(i)", replyArgumentSize: 128, kick: false) else {
                        results.fail("queue \(qi): no slot for request \(k)"); return
                    }
                    expected[slot] = i
                }
                #expect(q.inFlight == 16)
                q.queue.kickIfNeeded()
                var done = 0
                while done < 16 {
                    do {
                        try q.waitAndReap { c in
                            done += 1
                            guard let i = expected.removeValue(forKey: c.slot) else { results.fail("unexpected slot \(c.slot)"); return }
                            guard c.isWellFormed, c.header?.error == 0,
                                  let e = FUSEClientDecoder.entryOut(q.replyArguments(c.slot, count: 128)) else {
                                results.fail("queue \(qi) f\(i): bad reply \(c)"); return
                            }
                            if e.attr.size != UInt64(100 + i) { results.fail("queue \(qi) f\(i): size \(e.attr.size)") } else { results.ok() }
                        }
                    } catch { results.fail("queue \(qi): \(error)"); return }
                }
            }.start()
        }
        for _ in 0..<4 { start.signal() }
        #expect(group.wait(timeout: .now() + 30) == .success)
        #expect(results.failures == [])
        #expect(results.successes == 64)
        #expect(daemon.server.nodeCount == 65)
        for q in session.requestQueues { #expect(q.freeSlotCount == q.depth) }
    }

    @Test func aSecondFrontendAfterTheFirstDisconnectsGetsAFreshDevice() throws {
        let daemon = try FerryDaemon()
        FileManager.default.createFile(atPath: daemon.export + "/f", contents: Data(count: 42))
        var oldNode: UInt64 = 0
        do {
            let first = try FUSESession(socketPath: daemon.socketPath)
            oldNode = try first.queue.lookup(parent: FUSESession.rootNodeID, name: "f").nodeID
            let (e, o) = try first.queue.create(parent: FUSESession.rootNodeID, name: "open-at-disconnect", flags: O_RDWR, mode: 0o644)
            _ = e; _ = o
            #expect(daemon.server.openHandleCount == 1)
            #expect(daemon.backend.connectionsServed == 1)
        }
        #expect(daemon.waitUntilListening())
        #expect(daemon.server.lookupCount(of: oldNode) == nil)
        #expect(daemon.server.openHandleCount == 0)
        #expect(daemon.server.nodeCount == 1)
        let second = try FUSESession(socketPath: daemon.socketPath)
        #expect(daemon.backend.connectionsServed == 2)
        #expect(daemon.backend.state == .connected)
        // The old node id means nothing to the new device.
        #expect(throws: FrontendError.self) { _ = try second.queue.getattr(nodeID: oldNode) }
        let fresh = try second.queue.lookup(parent: FUSESession.rootNodeID, name: "f")
        #expect(fresh.attr.size == 42)
        #expect(daemon.server.lookupCount(of: fresh.nodeID) == 1)
    }
}
}

/// Results gathered from the driving threads.
/// @unchecked Sendable: its vars are touched only with `lock` held.
final class ThreadResults: @unchecked Sendable {
    private let lock = NSLock()
    private var _failures: [String] = []
    private var _successes = 0
    func fail(_ s: String) { lock.lock(); _failures.append(s); lock.unlock() }
    func ok() { lock.lock(); _successes += 1; lock.unlock() }
    var failures: [String] { lock.lock(); defer { lock.unlock() }; return _failures }
    var successes: Int { lock.lock(); defer { lock.unlock() }; return _successes }
}
