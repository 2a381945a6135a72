import FerryFUSE
import FerryVhostFrontend
import FerryVirtio
import Testing

/// Front-end pieces that need no back-end: the driver ring (with the test playing the
/// device), the latency histogram, and FUSE client encoding round trips.
@Suite struct FrontendUnitTests {
    /// Plays the device: marks `head` used with `length` bytes written.
    func complete(_ q: DriverVirtqueue, head: UInt16, length: UInt32, usedIndex: inout UInt16) {
        let used = q.memory.pointer(q.usedOffset)
        let entry = used + SplitVirtqueue.usedEntryOffset(Int(usedIndex) & (q.size - 1))
        entry.storeBytes(of: UInt32(head).littleEndian, as: UInt32.self)
        entry.storeBytes(of: length.littleEndian, toByteOffset: 4, as: UInt32.self)
        usedIndex &+= 1
        used.storeBytes(of: usedIndex.littleEndian, toByteOffset: SplitVirtqueue.usedIndexOffset, as: UInt16.self)
    }

    @Test func chainsAreLinkedAndDescriptorsReclaimedOutOfOrder() throws {
        let memory = try GuestMemory(size: 1 << 20)
        let q = try DriverVirtqueue(index: 1, size: 64, memory: memory, eventIndex: true)
        let d = VirtqueueDescriptor(address: 0x1000, length: 40, flags: 0, next: 0)
        let a = try #require([d, d, d].withUnsafeBufferPointer { q.post($0) })
        let b = try #require([d, d].withUnsafeBufferPointer { q.post($0) })
        #expect(q.freeCount == 59)
        // The first chain's descriptors are linked with NEXT, the last one without.
        let table = memory.pointer(q.descriptorOffset)
        let first = VirtqueueDescriptor.load(from: table + Int(a) * 16)
        #expect(first.hasNext)
        let last = VirtqueueDescriptor.load(from: table + Int(VirtqueueDescriptor.load(from: table + Int(first.next) * 16).next) * 16)
        #expect(!last.hasNext)
        var usedIndex: UInt16 = 0
        complete(q, head: b, length: 16, usedIndex: &usedIndex)
        complete(q, head: a, length: 0, usedIndex: &usedIndex)
        var seen: [(UInt16, UInt32)] = []
        #expect(q.reap { seen.append(($0, $1)) } == 2)
        #expect(seen.map(\.0) == [b, a])
        #expect(q.freeCount == 64)
        #expect(q.inFlight == 0)
    }

    @Test func rawChainsKeepTheirLoopsAndHeadsNeverPostedFreeNothing() throws {
        let memory = try GuestMemory(size: 1 << 20)
        let q = try DriverVirtqueue(index: 1, size: 64, memory: memory, eventIndex: false)
        let next = SplitVirtqueue.Descriptor.next
        let head = try #require(q.postRaw([VirtqueueDescriptor(address: 0, length: 8, flags: next, next: 1),
                                           VirtqueueDescriptor(address: 0, length: 8, flags: next, next: 0)]))
        let table = memory.pointer(q.descriptorOffset)
        let second = VirtqueueDescriptor.load(from: table + Int(head) * 16).next
        #expect(VirtqueueDescriptor.load(from: table + Int(second) * 16).next == head)
        var usedIndex: UInt16 = 0
        complete(q, head: 999, length: 0, usedIndex: &usedIndex)   // a confused device
        q.reap { _, _ in }
        #expect(q.freeCount == 62)
        complete(q, head: head, length: 0, usedIndex: &usedIndex)
        q.reap { _, _ in }
        #expect(q.freeCount == 64)
    }

    @Test func kicksHonourTheDevicesAvailEvent() throws {
        let memory = try GuestMemory(size: 1 << 20)
        let q = try DriverVirtqueue(index: 1, size: 64, memory: memory, eventIndex: true)
        let d = VirtqueueDescriptor(address: 0, length: 8, flags: 0, next: 0)
        // avail_event = 0: the device wants to hear when index 0 is published.
        _ = [d].withUnsafeBufferPointer { q.post($0) }
        #expect(q.kickIfNeeded())
        // Still 0 (the device has not moved it): no kick for index 1.
        _ = [d].withUnsafeBufferPointer { q.post($0) }
        #expect(!q.kickIfNeeded())
    }

    @Test func histogramQuantilesAreWithinBucketResolution() {
        var h = LatencyHistogram()
        for v in 1...100_000 { h.record(nanoseconds: UInt64(v) * 1000) }
        for (q, expected) in [(0.5, 50_000_000.0), (0.9, 90_000_000.0), (0.99, 99_000_000.0)] {
            let got = Double(h.quantile(q))
            #expect(abs(got - expected) / expected < 0.04, "q\(q): \(got)")
        }
        #expect(h.quantile(1) <= 100_000_000)
        #expect(LatencyHistogram().quantile(0.5) == 0)
    }

    @Test func requestEncodingRoundTripsThroughTheServerDecoder() throws {
        var bytes = [UInt8](repeating: 0, count: FUSEInHeader.size + FUSEReadIn.size)
        bytes.withUnsafeMutableBytes { b in
            FUSEInHeader(length: UInt32(b.count), opcode: FUSEOpcode.read.rawValue, unique: 9, nodeID: 5, uid: 1, gid: 2, pid: 3).encode(to: b.baseAddress!)
            FUSEReadIn(fh: 77, offset: 4096, size: 512).encode(to: b.baseAddress! + FUSEInHeader.size)
        }
        let decoded = try bytes.withUnsafeBytes { try FUSEDecoder.decode($0, options: FUSEDecodeOptions()) }
        #expect(decoded.header.unique == 9 && decoded.header.nodeID == 5)
        guard case .read(let read) = decoded.request else { Issue.record("decoded \(decoded.request)"); return }
        #expect(read.fh == 77 && read.offset == 4096 && read.size == 512)
    }

    @Test func replyDecodingInvertsTheServerEncoder() throws {
        var entry = FUSEEntryOut()
        entry.nodeID = 42; entry.attr.size = 123; entry.attr.mode = 0o100644
        var buffer = [UInt8](repeating: 0, count: 128)
        buffer.withUnsafeMutableBytes { entry.encode(to: $0.baseAddress!) }
        #expect(buffer.withUnsafeBytes { FUSEClientDecoder.entryOut($0) } == entry)
        #expect(buffer.withUnsafeBytes { FUSEClientDecoder.entryOut(UnsafeRawBufferPointer(rebasing: $0[..<100])) } == nil)
    }
}
