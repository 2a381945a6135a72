import CFerry
import FerryCore
import FerryFUSE
import FerryPOSIX
import FerryVhostFrontend
import FerryVhostUser
import Foundation
import Glibc
import Logging
import Synchronization
import Testing

/// Resident memory of this process, in bytes (/proc/self/statm).
func residentBytes() -> Int {
    let fields = ((try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8)) ?? "").split(separator: " ")
    return (fields.count > 1 ? Int(fields[1]) ?? 0 : 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
}

/// A guest pushing an export's limits through the vhost-user front-end: each push gets
/// ENFILE/ERANGE or a bounded answer, memory stays bounded, the export keeps serving.
/// The numbers measured are printed for the issue notes (`swift test --filter LimitTests`).
@Suite(.serialized) struct LimitTests {
    @Test(.timeLimit(.minutes(10))) func aMillionLookupsWithoutForgetStayWithinTheNodeLimit() async {
        relay(await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) { try LimitTests.aMillionLookupsWithoutForgetStayWithinTheNodeLimitHere() })
    }
    static func aMillionLookupsWithoutForgetStayWithinTheNodeLimitHere() throws {
        let limit = 1000
        let daemon = try FerryDaemon(policy: ExportPolicy(maxNodes: limit))
        for i in 0..<1500 { FileManager.default.createFile(atPath: daemon.export + "/f\(i)", contents: nil) }
        var configuration = FrontendConfiguration()
        configuration.depth = 64
        configuration.dataBufferSize = 4096
        let session = try FUSESession(socketPath: daemon.socketPath, configuration: configuration)
        let q = session.queue
        let rssBefore = residentBytes()
        let total = 1_000_000
        var sent = 0, done = 0, found = 0, refused = 0, other = 0
        let started = Date()
        while done < total {
            while sent < total, let _ = q.submit(opcode: .lookup, nodeID: FUSESession.rootNodeID, argument: FUSENoArgument(),
                                                 name: "f\(sent % 1500)", replyArgumentSize: 128, kick: false) {
                sent += 1
            }
            q.queue.forceKick()
            try q.waitAndReap { c in
                done += 1
                switch c.header?.error {
                case 0?: found += 1
                case (-ENFILE)?: refused += 1
                default: other += 1
                }
            }
        }
        let seconds = Date().timeIntervalSince(started)
        let growth = residentBytes() - rssBefore
        print("LimitTests: \(total) LOOKUPs without FORGET in \(String(format: "%.1f", seconds)) s: \(found) found, \(refused) ENFILE; nodes \(daemon.server.nodeCount) (limit \(limit)); RSS +\(growth >> 10) KiB")
        #expect(other == 0)
        #expect(refused > 0 && found > 0)
        #expect(daemon.server.nodeCount <= limit)
        #expect(growth < 64 << 20, "resident memory grew by \(growth >> 20) MiB")
        // FORGET more than was ever looked up: clamped, the node goes, nothing breaks.
        let node = try q.lookup(parent: FUSESession.rootNodeID, name: "f0").nodeID
        try session.forget(nodeID: node, nlookup: UInt64.max)
        try session.drainHiprio()
        #expect(daemon.server.lookupCount(of: node) == nil)
        #expect(try q.lookup(parent: FUSESession.rootNodeID, name: "f0").nodeID > 0)
    }

    @Test func readdirAndXattrRepliesAskingForGigabytesStayBounded() async {
        relay(await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) { try LimitTests.readdirAndXattrRepliesAskingForGigabytesStayBoundedHere() })
    }
    static func readdirAndXattrRepliesAskingForGigabytesStayBoundedHere() throws {
        let daemon = try FerryDaemon(policy: ExportPolicy(xattr: true))
        for i in 0..<3000 { FileManager.default.createFile(atPath: daemon.export + "/a-rather-long-file-name-\(i)", contents: nil) }
        let session = try FUSESession(socketPath: daemon.socketPath)
        let q = session.queue
        let rssBefore = residentBytes()
        let dir = try q.opendir(nodeID: FUSESession.rootNodeID)
        for _ in 0..<50 {
            let c = try q.roundTrip(.readdirplus, nodeID: FUSESession.rootNodeID,
                                    argument: FUSEReadIn(fh: dir.fh, offset: 0, size: UInt32.max), readLength: 1 << 20)
            #expect(Int(c.usedLength) <= FUSEOutHeader.size + (1 << 20), "the reply never exceeds the buffers given")
        }
        // GETXATTR and LISTXATTR asking for 4 GiB: the answer is what exists, not an allocation.
        let file = try q.lookup(parent: FUSESession.rootNodeID, name: "a-rather-long-file-name-1").nodeID
        for opcode in [FUSEOpcode.getxattr, .listxattr] {
            var args: [UInt8] = []
            withUnsafeBytes(of: UInt32.max.littleEndian) { args += $0 }
            args += [0, 0, 0, 0]
            if opcode == .getxattr { args += Array("user.none".utf8) + [0] }
            var header = [UInt8](repeating: 0, count: 40)
            header.withUnsafeMutableBytes {
                FUSEInHeader(length: UInt32(40 + args.count), opcode: opcode.rawValue, unique: 77, nodeID: file, uid: 0, gid: 0, pid: 1).encode(to: $0.baseAddress!)
            }
            let posted = try #require(q.submitRaw(readable: [header + args], writableSizes: [4096]))
            let c = try q.wait(for: posted.slot)
            #expect(c.isWellFormed)
            #expect(c.usedLength <= 4096)
        }
        let growth = residentBytes() - rssBefore
        print("LimitTests: 50 READDIRPLUS of 4 GiB and GETXATTR/LISTXATTR of 4 GiB: RSS +\(growth >> 10) KiB")
        #expect(growth < 32 << 20)
    }

    /// Holds every WRITE until released: a backend that has stopped answering.
    final class StallingHandler: FUSERequestHandler, Sendable {
        let inner: any FUSERequestHandler
        let gate = DispatchSemaphore(value: 0)
        let arrived = Atomic(0)
        init(_ inner: any FUSERequestHandler) { self.inner = inner }
        func handle(request: UnsafeRawBufferPointer, reply: inout ReplyArea) -> ReplyDisposition {
            if request.count >= 8, request.loadUnaligned(fromByteOffset: 4, as: UInt32.self) == FUSEOpcode.write.rawValue { stall() }
            return inner.handle(request: request, reply: &reply)
        }
        func handle(request: UnsafeRawBufferPointer, payload: IOVectors, reply: inout ReplyArea) -> ReplyDisposition {
            stall()
            return inner.handle(request: request, payload: payload, reply: &reply)
        }
        private func stall() {
            arrived.add(1, ordering: .relaxed)
            gate.wait()
        }
        func connectionLost() { inner.connectionLost() }
    }

    @Test(.timeLimit(.minutes(10))) func aFullQueueOfOneMegabyteWritesAgainstAStalledBackendCostsNoMemory() async {
        relay(await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) { try LimitTests.aFullQueueOfOneMegabyteWritesAgainstAStalledBackendCostsNoMemoryHere() })
    }
    static func aFullQueueOfOneMegabyteWritesAgainstAStalledBackendCostsNoMemoryHere() throws {
        var template = Array("/tmp/ferry-stall-XXXXXX".utf8CString)
        let top = String(cString: mkdtemp(&template)!)
        defer { try? FileManager.default.removeItem(atPath: top) }
        try FileManager.default.createDirectory(atPath: top + "/export", withIntermediateDirectories: false)
        var logger = Logger(label: "stall")
        logger.logLevel = .critical
        let server = try FUSEServer(driver: POSIXDriver(root: top + "/export"), logger: logger)
        let stalling = StallingHandler(server)
        let backend = try VhostUserFSBackend(socketPath: top + "/vhost.sock", handler: stalling, logger: logger)
        let runner = Thread { backend.run() }
        runner.start()
        defer { backend.stop() }

        let depth = 64
        var configuration = FrontendConfiguration()
        configuration.depth = depth
        let session = try FUSESession(socketPath: top + "/vhost.sock", configuration: configuration)
        let q = session.queue
        let created = try q.create(parent: FUSESession.rootNodeID, name: "big", flags: O_RDWR, mode: 0o644)
        // The guest's data is in guest memory (this process's, here) before the count starts.
        for slot in 0..<depth {
            UnsafeMutableRawBufferPointer(rebasing: q.dataBuffer(slot)[..<(1 << 20)]).initializeMemory(as: UInt8.self, repeating: UInt8(slot))
        }
        let rssBefore = residentBytes()
        for i in 0..<depth {
            _ = try #require(q.submit(opcode: .write, nodeID: created.entry.nodeID,
                                      argument: FUSEWriteIn(fh: created.open.fh, offset: UInt64(i) << 20, size: 1 << 20),
                                      writeLength: 1 << 20, replyArgumentSize: 8))
        }
        // The queue is full and the backend holds the first write; Ferry reads the rest
        // from guest memory only when it gets to them, so nothing is copied meanwhile.
        #expect(FerryDaemon.eventually { stalling.arrived.load(ordering: .relaxed) == 1 })
        usleep(300_000)
        let growth = residentBytes() - rssBefore
        print("LimitTests: \(depth) × 1 MiB WRITEs queued against a stalled backend: RSS +\(growth >> 10) KiB")
        #expect(growth < 16 << 20, "queued writes cost \(growth >> 20) MiB")
        #expect(stalling.arrived.load(ordering: .relaxed) == 1, "one request at a time per queue")
        for _ in 0..<depth { stalling.gate.signal() }
        var completed = 0
        while completed < depth {
            try q.waitAndReap { c in
                if c.header?.error == 0 { completed += 1 }
            }
        }
        #expect(completed == depth)
        var st = stat()
        #expect(stat(top + "/export/big", &st) == 0 && st.st_size == off_t(depth) << 20)
    }
}
