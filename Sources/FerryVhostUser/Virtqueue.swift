import CFerry
import FerryVirtio
#if canImport(Glibc)
import Glibc
#endif

/// Where one split virtqueue lives in this process: host pointers to its descriptor
/// table and rings, each checked to lie inside guest memory.
/// @unchecked Sendable: the pointers never change; the ring memory they point at is read and written only by
/// the queue's worker (or the control thread while the worker is stopped), see `Virtqueue`.
struct RingView: @unchecked Sendable {
    let size: UInt16
    let descriptors: UnsafeMutableRawPointer
    let available: UnsafeMutableRawPointer
    let used: UnsafeMutableRawPointer

    init(size: UInt16, descriptors: UnsafeMutableRawPointer, available: UnsafeMutableRawPointer, used: UnsafeMutableRawPointer) {
        self.size = size; self.descriptors = descriptors; self.available = available; self.used = used
    }

    /// The rings of SET_VRING_ADDR (front-end virtual addresses), or nil if any part lies
    /// outside mapped memory or is misaligned.
    static func translate(_ a: VringAddress, size: UInt16, memory: GuestMemory) -> RingView? {
        let n = Int(size)
        guard a.descriptorTable % 16 == 0, a.availableRing % 2 == 0, a.usedRing % 4 == 0 else { return nil }
        guard let d = memory.translate(a.descriptorTable, length: UInt64(SplitVirtqueue.descriptorTableBytes(size: n)), space: .frontEndVirtual),
              let av = memory.translate(a.availableRing, length: UInt64(SplitVirtqueue.availableRingBytes(size: n)), space: .frontEndVirtual),
              let u = memory.translate(a.usedRing, length: UInt64(SplitVirtqueue.usedRingBytes(size: n)), space: .frontEndVirtual)
        else { return nil }
        return RingView(size: size, descriptors: d, available: av, used: u)
    }

    /// The driver's avail idx (acquire: the entries it covers are visible after this load).
    @inline(__always) var availableIndex: UInt16 {
        UInt16(littleEndian: ferry_load_acquire_u16(available + SplitVirtqueue.availableIndexOffset))
    }
    @inline(__always) var availableFlags: UInt16 {
        UInt16(littleEndian: available.loadUnaligned(fromByteOffset: SplitVirtqueue.availableFlagsOffset, as: UInt16.self))
    }
    /// The head descriptor index in avail slot `index % size`.
    @inline(__always) func availableHead(at index: UInt16) -> UInt16 {
        let slot = Int(index % size)
        return UInt16(littleEndian: available.loadUnaligned(fromByteOffset: SplitVirtqueue.availableEntryOffset(slot), as: UInt16.self))
    }
    /// `used_event` (EVENT_IDX).
    @inline(__always) var usedEvent: UInt16 {
        UInt16(littleEndian: available.loadUnaligned(fromByteOffset: SplitVirtqueue.usedEventOffset(size: Int(size)), as: UInt16.self))
    }
    /// Sets `avail_event` (EVENT_IDX).
    @inline(__always) func setAvailableEvent(_ v: UInt16) {
        used.storeBytes(of: v.littleEndian, toByteOffset: SplitVirtqueue.availableEventOffset(size: Int(size)), as: UInt16.self)
    }
    /// The used idx currently in memory.
    var usedIndexInMemory: UInt16 {
        UInt16(littleEndian: ferry_load_acquire_u16(used + SplitVirtqueue.usedIndexOffset))
    }
    /// Writes used element `index % size`.
    @inline(__always) func putUsed(at index: UInt16, id: UInt16, length: UInt32) {
        let o = SplitVirtqueue.usedEntryOffset(Int(index % size))
        used.storeBytes(of: UInt32(id).littleEndian, toByteOffset: o, as: UInt32.self)
        used.storeBytes(of: length.littleEndian, toByteOffset: o + 4, as: UInt32.self)
    }
    /// Publishes used idx (release: the used elements are visible before it).
    @inline(__always) func publishUsedIndex(_ v: UInt16) {
        ferry_store_release_u16(used + SplitVirtqueue.usedIndexOffset, v.littleEndian)
    }
}

/// A guest descriptor chain that breaks the rules: the device is then broken.
struct ChainError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Preallocated iovecs for one descriptor chain (per worker thread): the readable
/// (driver → device) vectors first, then the writable ones.
final class ChainBuffers {
    let capacity: Int
    let vectors: UnsafeMutablePointer<iovec>
    private(set) var readableCount = 0
    private(set) var writableCount = 0
    private(set) var readableBytes = 0
    private(set) var writableBytes = 0

    init(capacity: Int) {
        self.capacity = capacity
        vectors = .allocate(capacity: capacity)
    }
    deinit { vectors.deallocate() }

    var readable: IOVectorsView { IOVectorsView(base: vectors, count: readableCount) }
    var writable: IOVectorsView { IOVectorsView(base: vectors + readableCount, count: writableCount) }

    func reset() { readableCount = 0; writableCount = 0; readableBytes = 0; writableBytes = 0 }

    fileprivate func append(_ p: UnsafeMutableRawPointer, length: Int, writable: Bool) throws(ChainError) {
        if length == 0 { return }
        guard readableCount + writableCount < capacity else { throw ChainError("chain has more than \(capacity) buffers") }
        vectors[readableCount + writableCount] = iovec(iov_base: p, iov_len: length)
        if writable { writableCount += 1; writableBytes += length } else { readableCount += 1; readableBytes += length }
    }
}

/// A plain (pointer, count) view of iovecs.
struct IOVectorsView {
    let base: UnsafeMutablePointer<iovec>
    let count: Int

    /// Writes into `destination` the vectors that remain after skipping `skip` bytes; returns their count.
    func sliced(skipping skip: Int, into destination: UnsafeMutablePointer<iovec>) -> Int {
        var skip = skip, n = 0
        for i in 0..<count {
            let v = base[i]
            if skip >= v.iov_len { skip -= v.iov_len; continue }
            destination[n] = iovec(iov_base: v.iov_base! + skip, iov_len: v.iov_len - skip)
            skip = 0; n += 1
        }
        return n
    }
}

enum DescriptorChain {
    /// Walks the chain starting at `head`, translating every buffer through `memory`, into
    /// `buffers`. Throws for anything a well-behaved driver never produces: a head or
    /// `next` out of range, a loop, an indirect table inside an indirect table (or
    /// without the feature, or of a bad length), a readable buffer after a writable
    /// one, or a buffer outside guest memory.
    static func walk(head: UInt16, ring: RingView, memory: GuestMemory, indirectAllowed: Bool,
                     into buffers: ChainBuffers) throws(ChainError) {
        buffers.reset()
        let queueSize = Int(ring.size)
        guard Int(head) < queueSize else { throw ChainError("head descriptor \(head) out of range (queue size \(queueSize))") }
        var table = ring.descriptors
        var tableSize = queueSize
        var index = Int(head)
        var inIndirect = false
        var visited = 0
        var sawWritable = false
        while true {
            visited += 1
            guard visited <= tableSize else {
                throw ChainError(inIndirect ? "indirect descriptor table loops" : "descriptor chain loops (longer than the queue)")
            }
            let d = VirtqueueDescriptor.load(from: table + index * SplitVirtqueue.Descriptor.size)
            if d.isIndirect {
                guard indirectAllowed else { throw ChainError("indirect descriptor without VIRTIO_F_RING_INDIRECT_DESC") }
                guard !inIndirect else { throw ChainError("indirect descriptor inside an indirect table") }
                guard !d.hasNext else { throw ChainError("indirect descriptor with NEXT set") }
                guard d.length > 0, d.length % UInt32(SplitVirtqueue.Descriptor.size) == 0 else {
                    throw ChainError("indirect table of \(d.length) bytes (not a non-zero multiple of 16)")
                }
                let count = Int(d.length) / SplitVirtqueue.Descriptor.size
                guard count <= queueSize else { throw ChainError("indirect table of \(count) descriptors exceeds the queue size \(queueSize)") }
                guard let t = memory.translate(d.address, length: UInt64(d.length)) else {
                    throw ChainError("indirect table at 0x\(String(d.address, radix: 16)) (+\(d.length)) outside guest memory")
                }
                table = t; tableSize = count; index = 0; visited = 0; inIndirect = true
                continue
            }
            if d.isWritable { sawWritable = true } else if sawWritable {
                throw ChainError("device-readable descriptor after a device-writable one")
            }
            guard let p = memory.translate(d.address, length: UInt64(d.length)) else {
                throw ChainError("buffer at 0x\(String(d.address, radix: 16)) (+\(d.length)) outside guest memory")
            }
            try buffers.append(p, length: Int(d.length), writable: d.isWritable)
            if !d.hasNext { return }
            guard Int(d.next) < tableSize else { throw ChainError("next descriptor \(d.next) out of range (table of \(tableSize))") }
            index = Int(d.next)
        }
    }
}
