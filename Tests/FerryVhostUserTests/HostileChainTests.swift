import FerryCore
import FerryFUSE
import FerryVhostFrontend
import FerryVhostUser
import FerryVirtio
import Foundation
import Glibc
import Testing

/// Invalid descriptor chains from a hostile guest: Ferry marks the device broken with a
/// reason naming the problem, stops serving that connection's queues, keeps answering
/// on the control socket, and serves the next connection normally. The process is
/// never affected.
extension FerryFrontendAndHostileTests {
@Suite(.serialized) struct HostileChainTests {
    typealias D = VirtqueueDescriptor

    /// Posts something hostile on request queue 1 of a fresh, initialised session and
    /// checks the device breaks with a reason containing `reason`, then that a new
    /// connection works.
    func expectBroken(reason: String, sourceLocation: SourceLocation = #_sourceLocation,
                      _ post: (FUSESession) throws -> Void) throws {
        let daemon = try FerryDaemon()
        do {
            let session = try FUSESession(socketPath: daemon.socketPath)
            #expect(daemon.backend.state == .connected, sourceLocation: sourceLocation)
            try post(session)
            #expect(FerryDaemon.eventually(5) { daemon.isBroken }, "device not broken: \(daemon.backend.state)",
                    sourceLocation: sourceLocation)
            let why = daemon.brokenReason ?? ""
            #expect(why.contains("queue 1"), "reason \(why)", sourceLocation: sourceLocation)
            #expect(why.contains(reason), "reason \(why) does not name \(reason)", sourceLocation: sourceLocation)
            #expect(daemon.isAlive, sourceLocation: sourceLocation)
            // A broken device serves no queue any more, not even a valid request…
            let q = session.queue
            if let slot = q.submit(opcode: .getattr, nodeID: FUSESession.rootNodeID,
                                   argument: FUSEGetattrIn(getattrFlags: 0, fh: 0), replyArgumentSize: 104) {
                #expect(throws: FrontendError.self, sourceLocation: sourceLocation) {
                    _ = try q.wait(for: slot, timeoutMilliseconds: 300)
                }
            }
            // …but the control channel still answers.
            let queueNum = try session.frontend.channel.call(.getQueueNum)
            #expect(queueNum.count == 8, sourceLocation: sourceLocation)
            #expect(daemon.isBroken, sourceLocation: sourceLocation)
        }
        daemon.newConnectionWorks(sourceLocation: sourceLocation)
    }

    @Test func descriptorOutsideMemoryBreaksTheDeviceButNotTheDaemon() throws {
        try expectBroken(reason: "outside guest memory") { try $0.frontend.postHostile(.addressOutsideMemory, on: 1) }
    }

    @Test func bufferRunningPastTheEndOfMemoryBreaksTheDevice() throws {
        try expectBroken(reason: "outside guest memory") { try $0.frontend.postHostile(.lengthPastEndOfMemory, on: 1) }
    }

    @Test func hugeAddressThatWouldWrapBreaksTheDevice() throws {
        try expectBroken(reason: "outside guest memory") { s in
            let q = s.frontend.queues[1]
            _ = q.postRaw([D(address: UInt64.max - 8, length: 64, flags: SplitVirtqueue.Descriptor.next, next: 1),
                           D(address: 0, length: 16, flags: SplitVirtqueue.Descriptor.write, next: 0)])
            q.forceKick()
        }
    }

    @Test func nextLoopBreaksTheDevice() throws {
        try expectBroken(reason: "loops") { try $0.frontend.postHostile(.loopingNext, on: 1) }
    }

    @Test func loopThroughTheWholeTableBreaksTheDevice() throws {
        // Every descriptor of the table once, then back to the first: longer than the queue.
        try expectBroken(reason: "loops") { s in
            let m = s.frontend.memory
            let buffer = try m.allocate(64, alignment: 64)
            let q = s.frontend.queues[1]
            let n = q.freeCount
            #expect(n == q.size)
            let chain = (0..<n).map { i in
                D(address: m.guestAddress(buffer), length: 8, flags: SplitVirtqueue.Descriptor.next, next: UInt16((i + 1) % n))
            }
            #expect(q.postRaw(chain) != nil)
            q.forceKick()
        }
    }

    @Test func indirectTableLongerThanTheQueueBreaksTheDevice() throws {
        try expectBroken(reason: "exceeds the queue size") { s in
            let m = s.frontend.memory
            let q = s.frontend.queues[1]
            let entries = q.size + 1
            let buffer = try m.allocate(4096, alignment: 4096)
            let table = try m.allocate(entries * 16, alignment: 16)
            for i in 0..<entries {
                let last = i == entries - 1
                D(address: m.guestAddress(buffer) + (last ? 2048 : 0), length: last ? 64 : 8,
                  flags: last ? SplitVirtqueue.Descriptor.write : SplitVirtqueue.Descriptor.next, next: UInt16(last ? 0 : i + 1))
                    .store(to: m.pointer(table + i * 16))
            }
            _ = q.postRaw([D(address: m.guestAddress(table), length: UInt32(entries * 16), flags: SplitVirtqueue.Descriptor.indirect, next: 0)])
            q.forceKick()
        }
    }

    @Test func readableAfterWritableBreaksTheDevice() throws {
        try expectBroken(reason: "readable descriptor after a device-writable") { try $0.frontend.postHostile(.readableAfterWritable, on: 1) }
    }

    @Test func nestedIndirectTableBreaksTheDevice() throws {
        try expectBroken(reason: "indirect descriptor inside an indirect table") { try $0.frontend.postHostile(.nestedIndirect, on: 1) }
    }

    @Test func indirectTableWithABadLengthBreaksTheDevice() throws {
        try expectBroken(reason: "not a non-zero multiple of 16") { try $0.frontend.postHostile(.indirectBadLength, on: 1) }
    }

    @Test func indirectTableOfLengthZeroBreaksTheDevice() throws {
        try expectBroken(reason: "not a non-zero multiple of 16") { s in
            let q = s.frontend.queues[1]
            _ = q.postRaw([D(address: 0, length: 0, flags: SplitVirtqueue.Descriptor.indirect, next: 0)])
            q.forceKick()
        }
    }

    @Test func indirectTableOutsideMemoryBreaksTheDevice() throws {
        try expectBroken(reason: "outside guest memory") { s in
            let q = s.frontend.queues[1]
            let end = s.frontend.memory.guestAddress(s.frontend.memory.size)
            _ = q.postRaw([D(address: end + (1 << 20), length: 64, flags: SplitVirtqueue.Descriptor.indirect, next: 0)])
            q.forceKick()
        }
    }

    @Test func indirectWithNextBreaksTheDevice() throws {
        try expectBroken(reason: "NEXT set") { try $0.frontend.postHostile(.indirectWithNext, on: 1) }
    }

    @Test func nextOutOfRangeBreaksTheDevice() throws {
        try expectBroken(reason: "out of range") { try $0.frontend.postHostile(.nextOutOfRange, on: 1) }
    }

    @Test func headOutOfRangeBreaksTheDevice() throws {
        try expectBroken(reason: "head descriptor") { s in
            let q = s.frontend.queues[1]
            q.publishRawHead(UInt16(q.size + 3))
            q.forceKick()
        }
    }

    @Test func availIndexJumpingFarAheadBreaksTheDevice() throws {
        try expectBroken(reason: "more than the queue size ahead") { s in
            let q = s.frontend.queues[1]
            let idx = s.frontend.memory.pointer(q.availableOffset + SplitVirtqueue.availableIndexOffset)
            let now = UInt16(littleEndian: idx.load(as: UInt16.self))
            idx.storeBytes(of: (now &+ UInt16(q.size) &+ 100).littleEndian, as: UInt16.self)
            q.forceKick()
        }
    }

    @Test(arguments: [1, 2])
    func invalidChainBreaksAPooledDeviceButNotTheDaemon(poolThreads: Int) throws {
        let daemon = try FerryDaemon(options: VhostUserFSOptions(threadPoolSize: poolThreads))
        do {
            let session = try FUSESession(socketPath: daemon.socketPath)
            #expect(try session.queue.getattr(nodeID: FUSESession.rootNodeID).attr.ino != 0)
            try session.frontend.postHostile(.addressOutsideMemory, on: 1)
            #expect(FerryDaemon.eventually(5) { daemon.isBroken }, "\(daemon.backend.state)")
            #expect(daemon.brokenReason?.contains("outside guest memory") == true)
        }
        daemon.newConnectionWorks()
    }

    @Test func resetDeviceClearsTheBrokenState() throws {
        let daemon = try FerryDaemon()
        do {
            let session = try FUSESession(socketPath: daemon.socketPath)
            try session.frontend.postHostile(.loopingNext, on: 1)
            #expect(FerryDaemon.eventually(5) { daemon.isBroken })
            try session.frontend.channel.send(VhostUserRequest.resetDevice.rawValue,
                                              flags: VhostUserHeader.version | VhostUserHeader.needReplyFlag)
            let ack = try session.frontend.channel.receiveReply(to: VhostUserRequest.resetDevice.rawValue, timeoutMilliseconds: 30_000)
            #expect(ack == [0, 0, 0, 0, 0, 0, 0, 0])
            #expect(daemon.backend.state == .connected)
            #expect(daemon.server.nodeCount == 1)
        }
        daemon.newConnectionWorks()
    }

    @Test func invalidChainOnHiprioBreaksTheDeviceToo() throws {
        let daemon = try FerryDaemon()
        do {
            let session = try FUSESession(socketPath: daemon.socketPath)
            try session.frontend.postHostile(.loopingNext, on: 0)
            #expect(FerryDaemon.eventually(5) { daemon.isBroken })
            #expect(daemon.brokenReason?.contains("queue 0") == true, "\(String(describing: daemon.brokenReason))")
        }
        daemon.newConnectionWorks()
    }

    /// Zero-length descriptors are skipped, not an error: a chain of only those is a
    /// request shorter than a header, answered with a used length of 0.
    @Test func zeroLengthDescriptorsAreSkippedNotFatal() throws {
        let daemon = try FerryDaemon()
        do {
            let session = try FUSESession(socketPath: daemon.socketPath)
            let q = session.frontend.queues[1]
            let head = try #require(try session.frontend.postHostile(.zeroLengths, on: 1))
            #expect(q.waitForUsed(timeoutMilliseconds: 30_000))
            var used: [UInt16: UInt32] = [:]
            q.reap { used[$0] = $1 }
            #expect(used[head] == 0)
            #expect(daemon.backend.state == .connected)
            // A valid GETATTR with zero-length descriptors sprinkled through it is served.
            var body = RawFUSE(); body.u32(0); body.u32(0); body.u64(0)
            let header = RawFUSE.request(.getattr, unique: 0x77, body: body.bytes)
            let r = try session.frontend.guardedRoundTrip(readable: [[], Array(header[..<20]), [], Array(header[20...]), []],
                                                          writableSizes: [0, 16, 0, 104, 0])
            #expect(r.guardsIntact)
            #expect(r.usedLength == 120, "\(r)")
            #expect(r.header?.error == 0 && r.header?.unique == 0x77)
            #expect(try session.queue.getattr(nodeID: FUSESession.rootNodeID).attr.ino != 0)
        }
        daemon.newConnectionWorks()
    }

    /// A chain using every descriptor of the table, loop-free, is legal: it is served
    /// (here: a request of zeros, whose 8-byte reply room is too small) and the device
    /// stays healthy.
    @Test func chainAsLongAsTheQueueIsServedWithoutBreakingTheDevice() throws {
        let daemon = try FerryDaemon()
        do {
            let session = try FUSESession(socketPath: daemon.socketPath)
            let q = session.frontend.queues[1]
            let head = try #require(try session.frontend.postHostile(.chainAsLongAsTheQueue, on: 1))
            #expect(q.waitForUsed(timeoutMilliseconds: 30_000))
            var used: [UInt16: UInt32] = [:]
            q.reap { used[$0] = $1 }
            #expect(used[head] == 0)
            #expect(daemon.backend.state == .connected)
            #expect(try session.queue.getattr(nodeID: FUSESession.rootNodeID).attr.ino != 0)
        }
        daemon.newConnectionWorks()
    }

    /// Every hostile chain the front-end knows, one connection each, on one daemon: each
    /// breaks (or is harmlessly answered), and the daemon serves the next connection.
    @Test func everyHostileChainInTurnOnOneDaemon() throws {
        let daemon = try FerryDaemon()
        for kind in HostileChain.allCases {
            do {
                let session = try FUSESession(socketPath: daemon.socketPath)
                try session.frontend.postHostile(kind, on: 1)
                if kind != .zeroLengths && kind != .chainAsLongAsTheQueue {
                    #expect(FerryDaemon.eventually(5) { daemon.isBroken }, "\(kind): \(daemon.backend.state)")
                } else {
                    #expect(session.frontend.queues[1].waitForUsed(timeoutMilliseconds: 30_000), "\(kind)")
                }
            }
            #expect(daemon.waitUntilListening(), "\(kind)")
            #expect(daemon.isAlive, "\(kind)")
        }
        #expect(daemon.backend.connectionsServed == HostileChain.allCases.count)
        daemon.newConnectionWorks()
    }
}
}
