import CFerry
import FerryCore
import FerryFUSE
import FerryVhostFrontend
import FerryVhostUser
import FerryVirtio
import Foundation
import Glibc
import Testing

/// vhost-user control-message garbage: each is answered (a failure ack or a reply) or
/// the connection is closed; the daemon survives and the next connection works.
extension FerryFrontendAndHostileTests {
@Suite(.serialized) struct HostileMessageTests {
    static let need = VhostUserHeader.version | VhostUserHeader.needReplyFlag

    static func state(_ index: UInt32, _ num: UInt32) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: VringState.size)
        b.withUnsafeMutableBytes { VringState(index: index, num: num).encode(to: $0.baseAddress!) }
        return b
    }

    static func u64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

    static func value(_ payload: [UInt8]) -> UInt64? {
        payload.count == 8 ? payload.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) } : nil
    }

    /// Sends `request` with NEED_REPLY on `channel` and returns the ack's value (0 = success).
    static func ack(_ channel: VhostUserChannel, _ request: VhostUserRequest, _ payload: [UInt8], fds: [Int32] = []) throws -> UInt64? {
        try channel.send(request.rawValue, payload: payload, fds: fds, flags: need)
        return value(try channel.receiveReply(to: request.rawValue, timeoutMilliseconds: 30_000))
    }

    /// Bytes of a memory table with `regions` descriptions (count field as given).
    static func memoryTable(count: UInt32, regions: [MemoryRegionDescription]) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 8 + regions.count * MemoryRegionDescription.size)
        b.withUnsafeMutableBytes { p in
            p.storeBytes(of: count.littleEndian, toByteOffset: 0, as: UInt32.self)
            for (i, r) in regions.enumerated() { r.encode(to: p.baseAddress! + 8 + i * MemoryRegionDescription.size) }
        }
        return b
    }

    /// A connection closed by the back-end (within 30 s: other suites may be loading the machine).
    /// (EOF, or a reset when the back-end closed with our bytes still unread.)
    static func closes(_ channel: VhostUserChannel) -> Bool {
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            guard ferry_fe_wait_readable(channel.fd, 100) > 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = recv(channel.fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            if n == 0 { return true }
            if n < 0 { return errno == ECONNRESET || errno == EPIPE }
            // A reply (a failure ack) before closing is fine; keep reading.
        }
        return false
    }

    // MARK: - Framing

    @Test func badVersionClosesTheConnection() throws {
        let daemon = try FerryDaemon()
        for flags: UInt32 in [0, 2, 3, 0xFFFF_FFFF] {
            let channel = try VhostUserChannel(path: daemon.socketPath)
            try channel.send(VhostUserRequest.getFeatures.rawValue, flags: flags)
            #expect(Self.closes(channel), "flags \(flags)")
            #expect(daemon.waitUntilListening())
        }
        daemon.newConnectionWorks()
    }

    @Test func oversizedPayloadSizeClosesTheConnection() throws {
        let daemon = try FerryDaemon()
        for size: UInt32 in [4097, 1 << 20, UInt32.max] {
            let channel = try VhostUserChannel(path: daemon.socketPath)
            var header = [UInt8](repeating: 0, count: VhostUserHeader.size)
            header.withUnsafeMutableBytes { VhostUserHeader(request: VhostUserRequest.setMemTable.rawValue, flags: 1, size: size).encode(to: $0.baseAddress!) }
            try channel.sendRaw(header + [UInt8](repeating: 0xAB, count: 256))
            #expect(Self.closes(channel), "size \(size)")
        }
        daemon.newConnectionWorks()
    }

    @Test func truncatedPayloadsCloseTheConnectionOrAreRefused() throws {
        let daemon = try FerryDaemon()
        // Payloads too short for their message.
        let short: [(VhostUserRequest, Int)] = [(.setFeatures, 4), (.setProtocolFeatures, 7), (.setVringNum, 4), (.setVringAddr, 20),
                                              (.setVringBase, 0), (.getVringBase, 3), (.setVringKick, 2), (.setVringCall, 0),
                                              (.setVringEnable, 5), (.setMemTable, 4), (.addMemReg, 16), (.remMemReg, 0)]
        for (request, n) in short {
            let channel = try VhostUserChannel(path: daemon.socketPath)
            try channel.send(request.rawValue, payload: [UInt8](repeating: 0, count: n), flags: Self.need)
            // Closed, or (at most) answered with a failure.
            if !Self.closes(channel) {
                Issue.record("\(request) with \(n) bytes: connection neither closed nor answered")
            }
            #expect(daemon.waitUntilListening(), "\(request)")
            #expect(daemon.isAlive, "\(request)")
        }
        // A header announcing 8 bytes, only 4 sent, then the front-end goes away.
        do {
            let channel = try VhostUserChannel(path: daemon.socketPath)
            var header = [UInt8](repeating: 0, count: VhostUserHeader.size)
            header.withUnsafeMutableBytes { VhostUserHeader(request: VhostUserRequest.setFeatures.rawValue, flags: 1, size: 8).encode(to: $0.baseAddress!) }
            try channel.sendRaw(header + [1, 2, 3, 4])
            shutdown(channel.fd, Int32(SHUT_WR))
            #expect(Self.closes(channel))
        }
        // Half a header.
        do {
            let channel = try VhostUserChannel(path: daemon.socketPath)
            try channel.sendRaw([1, 0, 0, 0, 1])
            shutdown(channel.fd, Int32(SHUT_WR))
            #expect(Self.closes(channel))
        }
        daemon.newConnectionWorks()
    }

    @Test func unknownRequestWithNeedReplyIsRefusedAndTheConnectionGoesOn() throws {
        let daemon = try FerryDaemon()
        do {
        let channel = try VhostUserChannel(path: daemon.socketPath)
        for code: UInt32 in [0, 41, 99, 1000, 0xFFFF_FFFF] {
            try channel.send(code, payload: [1, 2, 3, 4, 5, 6, 7, 8], flags: Self.need)
            let reply = try channel.receiveReply(to: code, timeoutMilliseconds: 30_000)
            #expect(Self.value(reply).map { $0 != 0 } == true, "request \(code): \(reply)")
        }
        // Known but meaningless for virtio-fs, with fds attached (which must be closed).
        // (SET_LOG_FD is meaningful since dirty-page logging: DirtyLogTests.)
        for request: VhostUserRequest in [.setBackendReqFD, .setVringEndian, .sendRARP, .gpuSetSocket] {
            let e = try EventFD()
            #expect(try Self.ack(channel, request, Self.u64(0), fds: [e.fd]).map { $0 != 0 } == true, "\(request)")
        }
        // Still talking.
        #expect(Self.value(try channel.call(.getQueueNum)) == 17)
        #expect(daemon.backend.state == .connected)
        }
        daemon.newConnectionWorks()
    }

    // MARK: - Memory tables

    @Test func memTableWithNineRegionsIsRefusedOrCloses() async {
        relay(await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) { try FerryFrontendAndHostileTests.HostileMessageTests.memTableWithNineRegionsIsRefusedOrClosesHere() })
    }
    static func memTableWithNineRegionsIsRefusedOrClosesHere() throws {
        let daemon = try FerryDaemon()
        let memory = try GuestMemory(size: 9 << 16)
        let regions = (0..<9).map { i in
            MemoryRegionDescription(guestPhysicalAddress: UInt64(i) << 16, size: 1 << 16,
                                    userAddress: memory.userAddress(i << 16), mmapOffset: UInt64(i) << 16)
        }
        var given = GivenDescriptors()
        given.add(memory.fd)
        let before = given.open()
        do {
            let channel = try VhostUserChannel(path: daemon.socketPath)
            // (At most 8 fds fit one message: 9 regions with 8 fds.)
            let fds = (0..<8).map { _ in dup(memory.fd) }
            defer { for f in fds { close(f) } }
            try channel.send(VhostUserRequest.setMemTable.rawValue, payload: Self.memoryTable(count: 9, regions: regions), fds: fds, flags: Self.need)
            if !Self.closes(channel) {
                Issue.record("SET_MEM_TABLE with 9 regions neither refused nor closed")
            }
        }
        // A count of 9 (or a huge one) over a payload holding only 1 region.
        for count: UInt32 in [9, 0xFFFF_FFFF] {
            let channel = try VhostUserChannel(path: daemon.socketPath)
            try channel.send(VhostUserRequest.setMemTable.rawValue, payload: Self.memoryTable(count: count, regions: [regions[0]]),
                             fds: [memory.fd], flags: Self.need)
            #expect(Self.closes(channel), "count \(count)")
        }
        #expect(daemon.waitUntilListening())
        // The back-end closed every fd it was given, and every connection (the test holds
        // `memory.fd`, counted in `before`).
        #expect(FerryDaemon.eventually { given.noMoreOpen(than: before) }, "left open: \(given.added(since: before))")
        daemon.newConnectionWorks()
    }

    @Test func memTableWithFewerFdsThanRegionsIsRefused() throws {
        let daemon = try FerryDaemon()
        let memory = try GuestMemory(size: 2 << 16)
        let regions = (0..<2).map { i in
            MemoryRegionDescription(guestPhysicalAddress: UInt64(i) << 16, size: 1 << 16,
                                    userAddress: memory.userAddress(i << 16), mmapOffset: UInt64(i) << 16)
        }
        do {
        let channel = try VhostUserChannel(path: daemon.socketPath)
        #expect(try Self.ack(channel, .setMemTable, Self.memoryTable(count: 2, regions: regions), fds: [memory.fd]) != 0)
        #expect(try Self.ack(channel, .setMemTable, Self.memoryTable(count: 2, regions: regions), fds: []) != 0)
        #expect(try Self.ack(channel, .setMemTable, Self.memoryTable(count: 1, regions: [regions[0]]), fds: [memory.fd, memory.fd]) != 0)
        // Overlapping regions, a region wrapping the address space, a region bigger than its file.
        let overlap = [regions[0], MemoryRegionDescription(guestPhysicalAddress: 1 << 15, size: 1 << 16,
                                                           userAddress: memory.userAddress(0) + (1 << 20), mmapOffset: 0)]
        #expect(try Self.ack(channel, .setMemTable, Self.memoryTable(count: 2, regions: overlap), fds: [memory.fd, memory.fd]) != 0)
        let wrap = MemoryRegionDescription(guestPhysicalAddress: UInt64.max - 4095, size: 1 << 16, userAddress: memory.userAddress(0), mmapOffset: 0)
        #expect(try Self.ack(channel, .setMemTable, Self.memoryTable(count: 1, regions: [wrap]), fds: [memory.fd]) != 0)
        // The channel still works, and so does a proper table.
        #expect(try Self.ack(channel, .setMemTable, Self.memoryTable(count: 1, regions: [memory.regionDescription]), fds: [memory.fd]) == 0)
        #expect(daemon.backend.state == .connected)
        }
        daemon.newConnectionWorks()
    }

    // MARK: - Rings

    @Test func setVringNumWithBadSizesIsRefused() throws {
        let daemon = try FerryDaemon()
        do {
        let channel = try VhostUserChannel(path: daemon.socketPath)
        for num: UInt32 in [0, 3, 100, 2048, 65536, UInt32.max] {
            #expect(try Self.ack(channel, .setVringNum, Self.state(1, num)) != 0, "num \(num)")
        }
        for index: UInt32 in [17, 255, 256, UInt32.max] {
            #expect(try Self.ack(channel, .setVringNum, Self.state(index, 64)) != 0, "index \(index)")
        }
        #expect(try Self.ack(channel, .setVringNum, Self.state(1, 64)) == 0)
        }
        daemon.newConnectionWorks()
    }

    @Test func setVringAddrOutsideMemoryIsRefusedAndTheRunningRingIsUnharmed() throws {
        let daemon = try FerryDaemon()
        do {
            let session = try FUSESession(socketPath: daemon.socketPath)
            let channel = session.frontend.channel
            let good = session.frontend.queues[1].address
            let base = session.frontend.memory.userAddress(0)
            let end = session.frontend.memory.userAddress(session.frontend.memory.size)
            let bad: [VringAddress] = [
                VringAddress(index: 1, descriptorTable: end + 4096, usedRing: good.usedRing, availableRing: good.availableRing),
                VringAddress(index: 1, descriptorTable: good.descriptorTable, usedRing: end - 8, availableRing: good.availableRing),
                VringAddress(index: 1, descriptorTable: good.descriptorTable, usedRing: good.usedRing, availableRing: 0),
                VringAddress(index: 1, descriptorTable: UInt64.max - 15, usedRing: good.usedRing, availableRing: good.availableRing),
                VringAddress(index: 1, descriptorTable: base + 8, usedRing: good.usedRing, availableRing: good.availableRing),   // misaligned
                VringAddress(index: 99, descriptorTable: good.descriptorTable, usedRing: good.usedRing, availableRing: good.availableRing),
            ]
            for a in bad {
                var payload = [UInt8](repeating: 0, count: VringAddress.size)
                payload.withUnsafeMutableBytes { a.encode(to: $0.baseAddress!) }
                #expect(try Self.ack(channel, .setVringAddr, payload) != 0, "\(a)")
            }
            // The queue still runs on its old rings.
            #expect(try session.queue.getattr(nodeID: FUSESession.rootNodeID).attr.mode & 0o170000 == 0o040000)
            #expect(daemon.backend.state == .connected)
        }
        daemon.newConnectionWorks()
    }

    @Test func setVringKickWithTheInvalidFdFlagIsRefused() throws {
        let daemon = try FerryDaemon()
        do {
            let session = try FUSESession(socketPath: daemon.socketPath)
            let channel = session.frontend.channel
            // Polling mode is not supported: refused.
            #expect(try Self.ack(channel, .setVringKick, Self.u64(0x100 | 1)) != 0)
            // The flag with an fd anyway, a kick for a queue out of range, no fd without the flag.
            let e = try EventFD()
            #expect(try Self.ack(channel, .setVringKick, Self.u64(0x100 | 1), fds: [e.fd]) != 0)
            #expect(try Self.ack(channel, .setVringKick, Self.u64(200), fds: [e.fd]) != 0)
            #expect(try Self.ack(channel, .setVringKick, Self.u64(1)) != 0)
            #expect(try Self.ack(channel, .setVringCall, Self.u64(200), fds: [e.fd]) != 0)
            #expect(try Self.ack(channel, .setVringErr, Self.u64(200), fds: [e.fd]) != 0)
            #expect(daemon.backend.state == .connected)
            #expect(daemon.isAlive)
        }
        daemon.newConnectionWorks()
    }

    @Test func getVringBaseOutOfRangeIsAnswered() throws {
        let daemon = try FerryDaemon()
        do {
            let session = try FUSESession(socketPath: daemon.socketPath)
            let channel = session.frontend.channel
            for index: UInt32 in [17, 200, 0xFFFF_FFFF] {
                try channel.send(VhostUserRequest.getVringBase.rawValue, payload: Self.state(index, 0))
                let reply = try channel.receiveReply(to: VhostUserRequest.getVringBase.rawValue, timeoutMilliseconds: 30_000)
                #expect(reply.count == VringState.size, "index \(index)")
            }
            // Other queues were not stopped by it.
            #expect(try session.queue.getattr(nodeID: FUSESession.rootNodeID).attr.ino != 0)
            for index: UInt32 in [17, 300] {
                #expect(try Self.ack(channel, .setVringEnable, Self.state(index, 1)) != 0)
                #expect(try Self.ack(channel, .setVringBase, Self.state(index, 0)) != 0)
            }
            #expect(try Self.ack(channel, .setVringEnable, Self.state(1, 7)) != 0)
            #expect(try Self.ack(channel, .setVringBase, Self.state(1, 0x10000)) != 0)
            #expect(daemon.backend.state == .connected)
        }
        daemon.newConnectionWorks()
    }

    /// A burst of random messages (random codes, flags with the right version, random
    /// payloads up to the limit, sometimes an fd): the daemon survives, every fd it was
    /// given is closed, and the next connection works.
    @Test func randomMessagesNeverKillTheDaemonNorLeakFds() async {
        relay(await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) { try FerryFrontendAndHostileTests.HostileMessageTests.randomMessagesNeverKillTheDaemonNorLeakFdsHere() })
    }
    static func randomMessagesNeverKillTheDaemonNorLeakFdsHere() throws {
        let daemon = try FerryDaemon()
        var seed: UInt64 = 0xDEAD_BEEF_CAFE_F00D
        func next() -> UInt64 { seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17; return seed }
        var given = GivenDescriptors()
        var held: [EventFD] = []
        let before = given.open()
        var channel: VhostUserChannel? = try VhostUserChannel(path: daemon.socketPath)
        for _ in 0..<400 {
            let code = UInt32(next() % 45)
            let payload = (0..<Int(next() % 64)).map { _ in UInt8(truncatingIfNeeded: next()) }
            let e = next() % 4 == 0 ? try EventFD() : nil
            if let e { given.add(e.fd); held.append(e) }
            let flags = VhostUserHeader.version | (next() % 2 == 0 ? VhostUserHeader.needReplyFlag : 0)
            if channel == nil { channel = try VhostUserChannel(path: daemon.socketPath) }
            let c = channel!
            do { try c.send(code, payload: payload, fds: e.map { [$0.fd] } ?? [], flags: flags) } catch { channel = nil; continue }
            // Drain whatever comes back; reconnect when closed.
            while ferry_fe_wait_readable(c.fd, 20) > 0 {
                var buffer = [UInt8](repeating: 0, count: 8192)
                if read(c.fd, &buffer, buffer.count) <= 0 { channel = nil; break }
            }
        }
        channel = nil
        #expect(daemon.isAlive)
        #expect(daemon.waitUntilListening())
        #expect(FerryDaemon.eventually { given.noMoreOpen(than: before, held: held.count) },
                "left open beside the test's own \(held.count): \(given.added(since: before))")
        daemon.newConnectionWorks()
    }
}
}
