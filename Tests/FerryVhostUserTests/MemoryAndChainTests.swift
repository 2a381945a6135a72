import CFerry
import FerryCore
@testable import FerryVhostUser
import FerryVirtio
import Foundation
import Logging
import Testing

@Suite struct GuestMemoryTests {
    @Test func translatesInsideOneRegionOnly() throws {
        let g = try FakeGuest(size: 64 * 1024)
        let m = g.memory
        let base = FakeGuest.guestBase
        #expect(m.translate(base, length: 1) == g.host)
        #expect(m.translate(base + 100, length: 50) == g.host + 100)
        #expect(m.translate(base, length: 64 * 1024) == g.host)                      // the whole region
        #expect(m.translate(base + 64 * 1024 - 1, length: 1) == g.host + 64 * 1024 - 1)
        #expect(m.translate(base + 64 * 1024 - 1, length: 2) == nil)                 // one byte past the end
        #expect(m.translate(base + 64 * 1024, length: 1) == nil)
        #expect(m.translate(base - 1, length: 2) == nil)                             // starts before
        #expect(m.translate(0, length: 16) == nil)
        #expect(m.translate(UInt64.max - 4, length: 16) == nil)                      // wraps around
        #expect(m.translate(base, length: UInt64.max) == nil)
        // The other address space.
        #expect(m.translate(FakeGuest.userBase + 8, length: 8, space: .frontEndVirtual) == g.host + 8)
        #expect(m.translate(base, length: 8, space: .frontEndVirtual) == nil)
        #expect(m.translate(FakeGuest.userBase, length: 8) == nil)
    }

    @Test func refusesRangesAcrossAdjacentRegions() throws {
        let fd = ferry_memfd_create("two-regions", UInt32(FERRY_MFD_CLOEXEC))
        defer { close(fd) }
        #expect(ftruncate(fd, 3 * 4096) == 0)
        // Two regions back to back in guest-physical space, from the same fd at different offsets.
        let a = try MappedRegion(fd: fd, description: .init(guestPhysicalAddress: 0x1000, size: 4096, userAddress: 0x10_0000, mmapOffset: 0))
        let b = try MappedRegion(fd: fd, description: .init(guestPhysicalAddress: 0x2000, size: 4096, userAddress: 0x20_0000, mmapOffset: 8192))
        let m = try GuestMemory.empty.adding(a).adding(b)
        #expect(m.translate(0x1ff0, length: 16) == a.host + 0xff0)
        #expect(m.translate(0x2000, length: 16) == b.host)
        #expect(m.translate(0x1ff8, length: 16) == nil)                              // straddles the boundary
        #expect(m.translate(0x1000, length: 8192) == nil)
        // The mmap offset is honoured: b's first byte is byte 8192 of the fd.
        var v: UInt8 = 0x5a
        #expect(pwrite(fd, &v, 1, 8192) == 1)
        #expect(b.host.load(as: UInt8.self) == 0x5a)
        // Overlaps are refused; removal needs an exact match.
        let c = try MappedRegion(fd: fd, description: .init(guestPhysicalAddress: 0x1800, size: 4096, userAddress: 0x30_0000, mmapOffset: 0))
        #expect(throws: VhostUserError.self) { try m.adding(c) }
        #expect(m.removing(.init(guestPhysicalAddress: 0x2000, size: 4096, userAddress: 0x20_0000, mmapOffset: 0))?.regions.count == 1)
        #expect(m.removing(.init(guestPhysicalAddress: 0x2000, size: 8192, userAddress: 0x20_0000, mmapOffset: 0)) == nil)
    }

    @Test func mapsANonPageAlignedOffset() throws {
        let fd = ferry_memfd_create("offset", UInt32(FERRY_MFD_CLOEXEC))
        defer { close(fd) }
        #expect(ftruncate(fd, 3 * 4096) == 0)
        var v: UInt8 = 0x77
        #expect(pwrite(fd, &v, 1, 4096 + 100) == 1)
        let r = try MappedRegion(fd: fd, description: .init(guestPhysicalAddress: 0, size: 4096, userAddress: 0, mmapOffset: 4096 + 100))
        #expect(r.host.load(as: UInt8.self) == 0x77)
    }

    @Test func refusesWrappingRegions() {
        #expect(throws: VhostUserError.self) {
            _ = try MappedRegion(fd: -1, description: .init(guestPhysicalAddress: UInt64.max - 10, size: 4096, userAddress: 0, mmapOffset: 0))
        }
    }
}

@Suite struct ChainWalkTests {
    let g: FakeGuest
    let buffers = ChainBuffers(capacity: 32)
    init() throws { g = try FakeGuest() }

    func walk(_ head: UInt16, indirect: Bool = true) throws(ChainError) {
        try DescriptorChain.walk(head: head, ring: g.ring, memory: g.memory, indirectAllowed: indirect, into: buffers)
    }

    @Test func normalChain() throws {
        let a = g.buffer(count: 40), b = g.buffer(count: 24), c = g.buffer(count: 16), d = g.buffer(count: 100)
        g.setDescriptor(3, address: a, length: 40, flags: SplitVirtqueue.Descriptor.next, next: 5)
        g.setDescriptor(5, address: b, length: 24, flags: SplitVirtqueue.Descriptor.next, next: 0)
        g.setDescriptor(0, address: c, length: 16, flags: SplitVirtqueue.Descriptor.next | SplitVirtqueue.Descriptor.write, next: 7)
        g.setDescriptor(7, address: d, length: 100, flags: SplitVirtqueue.Descriptor.write)
        try walk(3)
        #expect(buffers.readableCount == 2 && buffers.readableBytes == 64)
        #expect(buffers.writableCount == 2 && buffers.writableBytes == 116)
        #expect(buffers.vectors[0].iov_base == g.host + Int(a - FakeGuest.guestBase))
        #expect(buffers.vectors[3].iov_len == 100)
    }

    @Test func indirectChain() throws {
        let table = g.buffer(count: 3 * 16)
        let a = g.buffer(count: 48), b = g.buffer(count: 16), c = g.buffer(count: 4096)
        g.setDescriptor(0, address: a, length: 48, flags: SplitVirtqueue.Descriptor.next, next: 1, tableAt: table)
        g.setDescriptor(1, address: b, length: 16, flags: SplitVirtqueue.Descriptor.next | SplitVirtqueue.Descriptor.write, next: 2, tableAt: table)
        g.setDescriptor(2, address: c, length: 4096, flags: SplitVirtqueue.Descriptor.write, tableAt: table)
        g.setDescriptor(4, address: table, length: 48, flags: SplitVirtqueue.Descriptor.indirect)
        try walk(4)
        #expect(buffers.readableBytes == 48 && buffers.writableBytes == 4112 && buffers.writableCount == 2)
        // Without the feature it is refused.
        #expect(throws: ChainError.self) { try walk(4, indirect: false) }
    }

    @Test func loopIsBroken() {
        let a = g.buffer(count: 16)
        g.setDescriptor(1, address: a, length: 16, flags: SplitVirtqueue.Descriptor.next, next: 2)
        g.setDescriptor(2, address: a, length: 16, flags: SplitVirtqueue.Descriptor.next, next: 1)
        #expect(throws: ChainError.self) { try walk(1) }
        // A self-loop too.
        g.setDescriptor(6, address: a, length: 16, flags: SplitVirtqueue.Descriptor.next, next: 6)
        #expect(throws: ChainError.self) { try walk(6) }
    }

    @Test func readableAfterWritableIsBroken() {
        let a = g.buffer(count: 16)
        g.setDescriptor(0, address: a, length: 16, flags: SplitVirtqueue.Descriptor.write | SplitVirtqueue.Descriptor.next, next: 1)
        g.setDescriptor(1, address: a, length: 16)
        #expect(throws: ChainError.self) { try walk(0) }
    }

    @Test func addressOutsideMemoryIsBroken() {
        g.setDescriptor(0, address: 0x1000, length: 16)                                        // below the region
        #expect(throws: ChainError.self) { try walk(0) }
        g.setDescriptor(0, address: FakeGuest.guestBase + UInt64(g.size) - 8, length: 16)     // runs off the end
        #expect(throws: ChainError.self) { try walk(0) }
        g.setDescriptor(0, address: UInt64.max - 7, length: 16)                               // wraps
        #expect(throws: ChainError.self) { try walk(0) }
    }

    @Test func badIndicesAndTablesAreBroken() {
        let a = g.buffer(count: 16)
        #expect(throws: ChainError.self) { try walk(8) }                                        // head ≥ queue size
        g.setDescriptor(0, address: a, length: 16, flags: SplitVirtqueue.Descriptor.next, next: 9)
        #expect(throws: ChainError.self) { try walk(0) }                                        // next ≥ queue size
        let table = g.buffer(count: 32)
        g.setDescriptor(0, address: table, length: 16, flags: SplitVirtqueue.Descriptor.indirect, tableAt: table)
        g.setDescriptor(1, address: table, length: 32, flags: SplitVirtqueue.Descriptor.indirect)
        #expect(throws: ChainError.self) { try walk(1) }                                        // indirect in indirect
        g.setDescriptor(1, address: table, length: 20, flags: SplitVirtqueue.Descriptor.indirect)
        #expect(throws: ChainError.self) { try walk(1) }                                        // not a multiple of 16
        g.setDescriptor(1, address: table, length: 0, flags: SplitVirtqueue.Descriptor.indirect)
        #expect(throws: ChainError.self) { try walk(1) }                                        // empty
        g.setDescriptor(1, address: table, length: 16 * 9, flags: SplitVirtqueue.Descriptor.indirect)
        #expect(throws: ChainError.self) { try walk(1) }                                        // larger than the queue
        let loop = g.buffer(count: 32)
        g.setDescriptor(0, address: a, length: 16, flags: SplitVirtqueue.Descriptor.next, next: 1, tableAt: loop)
        g.setDescriptor(1, address: a, length: 16, flags: SplitVirtqueue.Descriptor.next, next: 0, tableAt: loop)
        g.setDescriptor(1, address: loop, length: 32, flags: SplitVirtqueue.Descriptor.indirect)
        #expect(throws: ChainError.self) { try walk(1) }                                        // loop inside the table
    }

    @Test func ringsOutsideMemoryAreRefused() {
        var a = g.vringAddress
        a.usedRing = FakeGuest.userBase + UInt64(g.size) - 8
        #expect(RingView.translate(a, size: g.queueSize, memory: g.memory) == nil)
        a = g.vringAddress
        a.descriptorTable += 2                                                                  // misaligned
        #expect(RingView.translate(a, size: g.queueSize, memory: g.memory) == nil)
    }
}

@Suite struct ChainProcessorTests {
    let g: FakeGuest
    let handler = RecordingHandler()
    let processor: ChainProcessor
    init() throws {
        g = try FakeGuest()
        var logger = Logger(label: "test"); logger.logLevel = .critical
        processor = ChainProcessor(handler: handler, maxWrite: 64 * 1024, maxChain: 32, logger: logger)
    }

    func run(_ head: UInt16) throws -> UInt32 {
        try DescriptorChain.walk(head: head, ring: g.ring, memory: g.memory, indirectAllowed: true, into: processor.chain)
        return processor.process(queue: 1) ?? 0   // no deferral without a queue
    }

    @Test func writeDataStaysInGuestMemory() throws {
        // Header + write_in split oddly across two buffers, data in two more.
        let req = fuseRequest(opcode: 16, unique: 77, body: [UInt8](repeating: 1, count: 40))
        let a = g.buffer(Array(req[0..<30])), b = g.buffer(Array(req[30...]) + Array("hello ".utf8)), c = g.buffer(Array("world".utf8))
        let out = g.buffer(count: 24)
        g.setDescriptor(0, address: a, length: 30, flags: SplitVirtqueue.Descriptor.next, next: 1)
        g.setDescriptor(1, address: b, length: 56, flags: SplitVirtqueue.Descriptor.next, next: 2)
        g.setDescriptor(2, address: c, length: 5, flags: SplitVirtqueue.Descriptor.next, next: 3)
        g.setDescriptor(3, address: out, length: 24, flags: SplitVirtqueue.Descriptor.write)
        #expect(try run(0) == 24)
        let seen = handler.seen.withLock { $0 }
        #expect(seen.count == 1)
        #expect(seen[0].request == req)
        #expect(seen[0].payload == Array("hello world".utf8))
        let reply = g.bytes(at: out, count: 24)
        #expect(reply[0] == 24 && reply[8] == 77 && reply[16] == 11)
    }

    @Test func readDataGoesAfterTheHeader() throws {
        let req = fuseRequest(opcode: 15, unique: 5, body: [UInt8](repeating: 0, count: 40))
        let a = g.buffer(req), out1 = g.buffer(count: 20), out2 = g.buffer(count: 100)
        g.setDescriptor(0, address: a, length: UInt32(req.count), flags: SplitVirtqueue.Descriptor.next, next: 1)
        g.setDescriptor(1, address: out1, length: 20, flags: SplitVirtqueue.Descriptor.next | SplitVirtqueue.Descriptor.write, next: 2)
        g.setDescriptor(2, address: out2, length: 100, flags: SplitVirtqueue.Descriptor.write)
        #expect(try run(0) == 26)
        #expect(handler.seen.withLock { $0[0].replyRoom } == 104)
        #expect(g.bytes(at: out1, count: 1) == [26])
        #expect(g.bytes(at: out1 + 16, count: 4) + g.bytes(at: out2, count: 6) == Array("read data!".utf8))
    }

    @Test func inlineReplyAndTooSmallReplyArea() throws {
        let req = fuseRequest(opcode: 3, unique: 9)
        let a = g.buffer(req), out = g.buffer(count: 24), small = g.buffer(count: 20)
        g.setDescriptor(0, address: a, length: 40, flags: SplitVirtqueue.Descriptor.next, next: 1)
        g.setDescriptor(1, address: out, length: 24, flags: SplitVirtqueue.Descriptor.write)
        #expect(try run(0) == 24)
        #expect(g.bytes(at: out + 16, count: 8) == [UInt8](repeating: 0xAB, count: 8))
        g.setDescriptor(1, address: small, length: 20, flags: SplitVirtqueue.Descriptor.write)
        #expect(try run(0) == 0)                              // does not fit: pushed with length 0
        #expect(g.bytes(at: small, count: 20) == [UInt8](repeating: 0, count: 20))
    }

    @Test func shortAndOversizedRequests() throws {
        let a = g.buffer(count: 20), out = g.buffer(count: 16)
        g.setDescriptor(0, address: a, length: 20, flags: SplitVirtqueue.Descriptor.next, next: 1)
        g.setDescriptor(1, address: out, length: 16, flags: SplitVirtqueue.Descriptor.write)
        #expect(try run(0) == 0)
        #expect(handler.seen.withLock { $0.count } == 0)
        // A non-WRITE request larger than the request buffer: EINVAL to its unique.
        let big = fuseRequest(opcode: 21, unique: 0x1234, body: [UInt8](repeating: 0, count: 200 * 1024))
        let b = g.buffer(big)
        g.setDescriptor(0, address: b, length: UInt32(big.count), flags: SplitVirtqueue.Descriptor.next, next: 1)
        #expect(try run(0) == 16)
        let reply = g.bytes(at: out, count: 16)
        #expect(reply[0] == 16 && reply[4...7] == [0xea, 0xff, 0xff, 0xff] && reply[8] == 0x34 && reply[9] == 0x12)
    }
}
