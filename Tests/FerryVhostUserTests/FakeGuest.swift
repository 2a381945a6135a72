import CFerry
import FerryCore
@testable import FerryVhostUser
import FerryVirtio
import Foundation
import Synchronization

/// Guest memory made in-process: a memfd mapped as one region, with helpers to lay out
/// a split virtqueue and descriptor chains in it the way a guest driver would.
final class FakeGuest {
    static let guestBase: UInt64 = 0x10_0000
    static let userBase: UInt64 = 0x7f00_0000_0000
    let size: Int
    let fd: Int32
    let region: MappedRegion
    let memory: GuestMemory
    var host: UnsafeMutableRawPointer { region.host }

    // Ring layout (guest-physical offsets from guestBase).
    let queueSize: UInt16
    let descOffset = 0x0
    var availOffset: Int { descOffset + SplitVirtqueue.descriptorTableBytes(size: Int(queueSize)) }
    var usedOffset: Int { (availOffset + SplitVirtqueue.availableRingBytes(size: Int(queueSize)) + 3) & ~3 }
    /// Where buffers go: after the rings.
    let dataOffset = 0x1_0000
    private var nextData = 0

    init(size: Int = 1 << 20, queueSize: UInt16 = 8) throws {
        self.size = size
        self.queueSize = queueSize
        fd = ferry_memfd_create("fake-guest", UInt32(FERRY_MFD_CLOEXEC))
        precondition(fd >= 0 && ftruncate(fd, off_t(size)) == 0)
        region = try MappedRegion(fd: fd, description: MemoryRegionDescription(
            guestPhysicalAddress: Self.guestBase, size: UInt64(size), userAddress: Self.userBase, mmapOffset: 0))
        memory = GuestMemory(regions: [region])
    }

    deinit { close(fd) }

    var vringAddress: VringAddress {
        VringAddress(index: 0, descriptorTable: Self.userBase + UInt64(descOffset),
                     usedRing: Self.userBase + UInt64(usedOffset), availableRing: Self.userBase + UInt64(availOffset))
    }

    var ring: RingView { RingView.translate(vringAddress, size: queueSize, memory: memory)! }

    /// Guest-physical address of a new buffer holding `bytes` (or `count` zero bytes).
    func buffer(_ bytes: [UInt8]) -> UInt64 {
        let offset = dataOffset + nextData
        nextData += (bytes.count + 15) & ~15
        precondition(offset + bytes.count <= size)
        host.advanced(by: offset).copyMemory(from: bytes, byteCount: bytes.count)
        return Self.guestBase + UInt64(offset)
    }
    func buffer(count: Int) -> UInt64 { buffer([UInt8](repeating: 0, count: count)) }

    func bytes(at gpa: UInt64, count: Int) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: host + Int(gpa - Self.guestBase), count: count))
    }

    /// Writes descriptor `index` of the table at guest offset `tableOffset` (default: the ring's).
    func setDescriptor(_ index: Int, address: UInt64, length: UInt32, flags: UInt16 = 0, next: UInt16 = 0, tableAt table: UInt64? = nil) {
        let base = table.map { Int($0 - Self.guestBase) } ?? descOffset
        VirtqueueDescriptor(address: address, length: length, flags: flags, next: next)
            .store(to: host + base + index * SplitVirtqueue.Descriptor.size)
    }

    /// Makes `head` available and bumps avail idx.
    func makeAvailable(_ head: UInt16) {
        let a = host + availOffset
        let idx = a.loadUnaligned(fromByteOffset: 2, as: UInt16.self)
        a.storeBytes(of: head, toByteOffset: SplitVirtqueue.availableEntryOffset(Int(idx % queueSize)), as: UInt16.self)
        ferry_store_release_u16(a + 2, idx &+ 1)
    }

    var usedIndex: UInt16 { ferry_load_acquire_u16(host + usedOffset + 2) }
    func usedElement(_ i: UInt16) -> (id: UInt32, length: UInt32) {
        let o = usedOffset + SplitVirtqueue.usedEntryOffset(Int(i % queueSize))
        return (host.loadUnaligned(fromByteOffset: o, as: UInt32.self), host.loadUnaligned(fromByteOffset: o + 4, as: UInt32.self))
    }
    func setUsedEvent(_ v: UInt16) {
        (host + availOffset).storeBytes(of: v, toByteOffset: SplitVirtqueue.usedEventOffset(size: Int(queueSize)), as: UInt16.self)
    }
}

/// A FUSE request: header (40 bytes) + body.
func fuseRequest(opcode: UInt32, unique: UInt64, nodeid: UInt64 = 1, body: [UInt8] = []) -> [UInt8] {
    var b = [UInt8](repeating: 0, count: 40)
    b.withUnsafeMutableBytes { p in
        p.storeBytes(of: UInt32(40 + body.count), toByteOffset: 0, as: UInt32.self)
        p.storeBytes(of: opcode, toByteOffset: 4, as: UInt32.self)
        p.storeBytes(of: unique, toByteOffset: 8, as: UInt64.self)
        p.storeBytes(of: nodeid, toByteOffset: 16, as: UInt64.self)
    }
    return b + body
}

/// A handler that records what it is given and answers predictably:
/// READ (15): `.data` with `readData` written into readVectors; WRITE (16): records the
/// payload, answers a 24-byte reply; anything else: 16-byte header + `inlineExtra` bytes of 0xAB.
/// @unchecked Sendable: `readData` and `inlineExtra` are set by a test before it sends requests; what
/// the handler records goes into a Mutex and an Atomic.
final class RecordingHandler: FUSERequestHandler, @unchecked Sendable {
    struct Seen { var request: [UInt8]; var payload: [UInt8]?; var replyRoom: Int }
    let seen = Mutex<[Seen]>([])
    let lost = Atomic<Int>(0)
    var readData: [UInt8] = Array("read data!".utf8)
    var inlineExtra = 8

    func handle(request: UnsafeRawBufferPointer, reply: inout ReplyArea) -> ReplyDisposition {
        let r = Array(request)
        let room = reply.readVectors.totalLength
        seen.withLock { $0.append(Seen(request: r, payload: nil, replyRoom: room)) }
        let opcode = request.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
        let unique = request.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        if opcode == 15 {
            let n = readData.withUnsafeBytes { reply.readVectors.copyIn($0) }
            header(&reply, length: 16 + n, unique: unique)
            return .data(dataLength: n)
        }
        header(&reply, length: 16 + inlineExtra, unique: unique)
        for i in 0..<inlineExtra { reply.scratch[16 + i] = 0xAB }
        return .inline(length: 16 + inlineExtra)
    }

    func handle(request: UnsafeRawBufferPointer, payload: IOVectors, reply: inout ReplyArea) -> ReplyDisposition {
        var data = [UInt8](repeating: 0, count: payload.totalLength)
        data.withUnsafeMutableBytes { _ = payload.copyOut(into: $0) }
        let r = Array(request)
        seen.withLock { $0.append(Seen(request: r, payload: data, replyRoom: reply.readVectors.totalLength)) }
        let unique = request.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        header(&reply, length: 24, unique: unique)
        reply.scratch.storeBytes(of: UInt32(data.count), toByteOffset: 16, as: UInt32.self)
        reply.scratch.storeBytes(of: UInt32(0), toByteOffset: 20, as: UInt32.self)
        return .inline(length: 24)
    }

    func connectionLost() { lost.add(1, ordering: .relaxed) }

    private func header(_ reply: inout ReplyArea, length: Int, unique: UInt64) {
        reply.scratch.storeBytes(of: UInt32(length), toByteOffset: 0, as: UInt32.self)
        reply.scratch.storeBytes(of: Int32(0), toByteOffset: 4, as: Int32.self)
        reply.scratch.storeBytes(of: unique, toByteOffset: 8, as: UInt64.self)
    }
}
