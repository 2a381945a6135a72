import FerryVirtio
import Testing

@Suite struct VirtioLayoutTests {
    @Test func splitRingOffsetsMatchTheVirtioSpec() {
        // virtio 1.1, 2.6.6/2.6.8: a 256-entry queue.
        #expect(SplitVirtqueue.descriptorTableBytes(size: 256) == 4096)
        #expect(SplitVirtqueue.availableRingBytes(size: 256) == 518)
        #expect(SplitVirtqueue.usedRingBytes(size: 256) == 2054)
        #expect(SplitVirtqueue.usedEventOffset(size: 256) == 516)
        #expect(SplitVirtqueue.availableEventOffset(size: 256) == 2052)
        #expect(SplitVirtqueue.usedEntryOffset(3) == 28)
    }

    @Test func needsEventFollowsVringNeedEvent() {
        #expect(SplitVirtqueue.needsEvent(event: 5, new: 6, old: 5))
        #expect(!SplitVirtqueue.needsEvent(event: 10, new: 6, old: 5))
        #expect(SplitVirtqueue.needsEvent(event: 65535, new: 1, old: 65534))   // wraps
    }

    @Test func queueSizesArePowersOfTwo() {
        #expect(SplitVirtqueue.isValidSize(1) && SplitVirtqueue.isValidSize(1024) && SplitVirtqueue.isValidSize(32768))
        #expect(!SplitVirtqueue.isValidSize(0) && !SplitVirtqueue.isValidSize(3) && !SplitVirtqueue.isValidSize(65536))
    }

    @Test func descriptorsRoundTripTheirSixteenBytes() {
        let d = VirtqueueDescriptor(address: 0x1122_3344_5566_7788, length: 0x99AA_BBCC, flags: 3, next: 0xDDEE)
        var bytes = [UInt8](repeating: 0, count: 16)
        bytes.withUnsafeMutableBytes { d.store(to: $0.baseAddress!) }
        #expect(bytes == [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0xCC, 0xBB, 0xAA, 0x99, 3, 0, 0xEE, 0xDD])
        #expect(bytes.withUnsafeBytes { VirtqueueDescriptor.load(from: $0.baseAddress!) } == d)
    }

    @Test func messageStructsRoundTrip() throws {
        var buffer = [UInt8](repeating: 0, count: 512)
        let address = VringAddress(index: 2, flags: 1, descriptorTable: 0x1000, usedRing: 0x3000, availableRing: 0x2000, log: 7)
        buffer.withUnsafeMutableBytes { address.encode(to: $0.baseAddress!) }
        #expect(buffer.withUnsafeBytes { VringAddress.decode($0) } == address)
        #expect(Array(buffer[8..<16]) == [0, 0x10, 0, 0, 0, 0, 0, 0])           // descriptor table at offset 8

        let regions = [MemoryRegionDescription(guestPhysicalAddress: 0, size: 1 << 30, userAddress: 0x7f00_0000_0000, mmapOffset: 0),
                       MemoryRegionDescription(guestPhysicalAddress: 1 << 32, size: 1 << 20, userAddress: 0x7f10_0000_0000, mmapOffset: 4096)]
        let n = buffer.withUnsafeMutableBytes { MemoryTable.encode(regions, to: $0.baseAddress!) }
        #expect(n == 8 + 64)
        #expect(try buffer.withUnsafeBytes { try MemoryTable.decode(UnsafeRawBufferPointer(rebasing: $0[0..<n])) } == regions)
    }

    @Test func memoryTablesThatLieAreRefused() {
        var buffer = [UInt8](repeating: 0, count: 16)
        buffer[0] = 9          // more regions than the protocol allows
        #expect(throws: VhostUserMessageError.tooManyRegions(9)) { try buffer.withUnsafeBytes { try MemoryTable.decode($0) } }
        buffer[0] = 2          // two regions promised, none present
        #expect(throws: VhostUserMessageError.self) { try buffer.withUnsafeBytes { try MemoryTable.decode($0) } }
    }

    @Test func headerFlagsAreDecoded() {
        let bytes: [UInt8] = [5, 0, 0, 0, 0x09, 0, 0, 0, 72, 0, 0, 0]
        let h = bytes.withUnsafeBytes { VhostUserHeader.decode($0) }!
        #expect(h.request == VhostUserRequest.setMemTable.rawValue && h.size == 72)
        #expect(h.needsReply && !h.isReply && h.flags & VhostUserHeader.versionMask == 1)
    }
}
