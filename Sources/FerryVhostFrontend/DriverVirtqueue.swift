import CFerry
import FerryVirtio

/// The driver (guest) side of one split virtqueue living in `GuestMemory`: descriptor
/// allocation, publishing chains on the available ring, kicks that honour the device's
/// suppression (EVENT_IDX or NO_NOTIFY), and reaping the used ring.
///
/// Not thread-safe: one thread drives a queue, as one CPU drives a queue in a guest.
/// @unchecked Sendable: as `FUSEQueueClient`: one driving thread at a time, handed over, never shared.
public final class DriverVirtqueue: @unchecked Sendable {
    public let index: UInt32
    public let size: Int
    public let memory: GuestMemory
    public let kick: EventFD
    public let call: EventFD
    public let eventIndex: Bool
    /// Offsets of the three parts in guest memory.
    public let descriptorOffset: Int
    public let availableOffset: Int
    public let usedOffset: Int

    private let descriptors: UnsafeMutableRawPointer
    private let available: UnsafeMutableRawPointer
    private let used: UnsafeMutableRawPointer
    /// Our own record of each chain's descriptors (by head), because the table is shared
    /// memory a device could scribble on: freeing never trusts it.
    /// Plain buffers rather than arrays: the submit path then needs neither uniqueness nor
    /// exclusivity checks, nor an allocation per chain.
    private let shadowNext: UnsafeMutablePointer<UInt16>
    private let chainLength: UnsafeMutablePointer<UInt16>
    /// The descriptor ids of the chain being posted.
    private let chainIDs: UnsafeMutablePointer<UInt16>
    private var freeHead: UInt16
    public private(set) var freeCount: Int
    private var availableIndex: UInt16 = 0
    private var lastUsedIndex: UInt16 = 0

    /// Lays the rings out in `memory` (each on its own page, like a guest's allocator).
    public init(index: UInt32, size: Int, memory: GuestMemory, eventIndex: Bool) throws {
        precondition(SplitVirtqueue.isValidSize(UInt32(size)))
        self.index = index; self.size = size; self.memory = memory; self.eventIndex = eventIndex
        descriptorOffset = try memory.allocate(SplitVirtqueue.descriptorTableBytes(size: size), alignment: 4096)
        availableOffset = try memory.allocate(SplitVirtqueue.availableRingBytes(size: size), alignment: 4096)
        usedOffset = try memory.allocate(SplitVirtqueue.usedRingBytes(size: size), alignment: 4096)
        descriptors = memory.pointer(descriptorOffset)
        available = memory.pointer(availableOffset)
        used = memory.pointer(usedOffset)
        kick = try EventFD(); call = try EventFD()
        shadowNext = .allocate(capacity: size)
        for i in 0..<size { shadowNext[i] = UInt16((i + 1) % size) }
        chainLength = .allocate(capacity: size)
        chainLength.initialize(repeating: 0, count: size)
        chainIDs = .allocate(capacity: size)
        chainIDs.initialize(repeating: 0, count: size)
        freeHead = 0; freeCount = size
    }

    deinit {
        shadowNext.deallocate(); chainLength.deallocate(); chainIDs.deallocate()
    }

    /// SET_VRING_ADDR's payload: this process's virtual addresses of the rings.
    public var address: VringAddress {
        VringAddress(index: index, descriptorTable: memory.userAddress(descriptorOffset),
                     usedRing: memory.userAddress(usedOffset), availableRing: memory.userAddress(availableOffset))
    }

    /// Number of chains posted and not yet reaped.
    public var inFlight: Int { Int(availableIndex &- lastUsedIndex) }

    /// Posts a chain: takes `chain.count` free descriptors, writes them linked in order
    /// (NEXT set on all but the last; the caller's `next` is ignored) and publishes the
    /// head. Returns the head id, or nil when too few descriptors are free.
    public func post(_ chain: UnsafeBufferPointer<VirtqueueDescriptor>) -> UInt16? {
        postChain(count: chain.count) { i, ids in
            var d = chain[i]
            if i + 1 < chain.count { d.flags |= SplitVirtqueue.Descriptor.next; d.next = ids(i + 1) } else { d.flags &= ~SplitVirtqueue.Descriptor.next; d.next = 0 }
            return d
        }
    }

    /// Posts a chain exactly as given, for hostile tests: flags are untouched, and a
    /// `next` below `chain.count` means "the descriptor at that position of this chain"
    /// (so loops and backward links can be built); a larger `next` is written verbatim.
    public func postRaw(_ chain: [VirtqueueDescriptor]) -> UInt16? {
        postChain(count: chain.count) { i, ids in
            var d = chain[i]
            if Int(d.next) < chain.count { d.next = ids(Int(d.next)) }
            return d
        }
    }

    /// Publishes an arbitrary head id on the available ring without touching descriptors
    /// (an out-of-range or unallocated head). Nothing is reclaimed for it.
    public func publishRawHead(_ head: UInt16) {
        publish(head)
    }

    private func postChain(count: Int, _ make: (Int, (Int) -> UInt16) -> VirtqueueDescriptor) -> UInt16? {
        guard count > 0, count <= freeCount else { return nil }
        // Take `count` ids off the free list; their order is the shadow chain.
        let ids = chainIDs
        var id = freeHead
        for i in 0..<count { ids[i] = id; id = shadowNext[Int(id)] }
        freeHead = id; freeCount -= count
        for i in 0..<count {
            let d = make(i) { ids[$0] }
            // Sound: ids are < size and the table holds `size` 16-byte entries.
            d.store(to: descriptors + Int(ids[i]) * SplitVirtqueue.Descriptor.size)
            if i + 1 < count { shadowNext[Int(ids[i])] = ids[i + 1] }
        }
        chainLength[Int(ids[0])] = UInt16(count)
        publish(ids[0])
        return ids[0]
    }

    private func publish(_ head: UInt16) {
        let slot = Int(availableIndex) & (size - 1)
        available.storeBytes(of: head.littleEndian, toByteOffset: SplitVirtqueue.availableEntryOffset(slot), as: UInt16.self)
        availableIndex &+= 1
        // Release: the device must see the entry and descriptors before the new index.
        ferry_store_release_u16(available + SplitVirtqueue.availableIndexOffset, availableIndex.littleEndian)
        pendingKickFrom = pendingKickFrom ?? (availableIndex &- 1)
    }

    private var pendingKickFrom: UInt16?

    /// Notifies the device of everything published since the last kick, unless it asked
    /// not to be told. Returns whether the eventfd was written.
    @discardableResult
    public func kickIfNeeded() -> Bool {
        guard let old = pendingKickFrom else { return false }
        pendingKickFrom = nil
        // Full barrier: the index store must be visible before we read the device's wish.
        ferry_fence_seq_cst()
        let needed: Bool
        if eventIndex {
            let event = UInt16(littleEndian: ferry_load_acquire_u16(used + SplitVirtqueue.availableEventOffset(size: size)))
            needed = SplitVirtqueue.needsEvent(event: event, new: availableIndex, old: old)
        } else {
            let flags = UInt16(littleEndian: ferry_load_acquire_u16(used + SplitVirtqueue.usedFlagsOffset))
            needed = flags & SplitVirtqueue.usedNoNotify == 0
        }
        if needed { kick.signal() }
        return needed
    }

    /// Kicks regardless of suppression.
    public func forceKick() { pendingKickFrom = nil; kick.signal() }

    /// Reaps every used entry: calls `body(head, writtenLength)` and returns the chain's
    /// descriptors to the free list. Returns how many were reaped.
    @discardableResult
    public func reap(_ body: (UInt16, UInt32) -> Void) -> Int {
        let usedIndex = UInt16(littleEndian: ferry_load_acquire_u16(used + SplitVirtqueue.usedIndexOffset))
        var n = 0
        while lastUsedIndex != usedIndex {
            let entry = used + SplitVirtqueue.usedEntryOffset(Int(lastUsedIndex) & (size - 1))
            let head = UInt16(truncatingIfNeeded: UInt32(littleEndian: entry.loadUnaligned(as: UInt32.self)))
            let length = UInt32(littleEndian: entry.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
            lastUsedIndex &+= 1
            n += 1
            free(head)
            body(head, length)
        }
        return n
    }

    /// Asks for a call at the next completion (EVENT_IDX), then reports whether entries
    /// are already waiting, so a caller never sleeps past a completion that raced it.
    public func armInterrupt() -> Bool {
        if eventIndex {
            available.storeBytes(of: lastUsedIndex.littleEndian, toByteOffset: SplitVirtqueue.usedEventOffset(size: size), as: UInt16.self)
        }
        ferry_fence_seq_cst()
        return hasUsed
    }

    public var hasUsed: Bool {
        UInt16(littleEndian: ferry_load_acquire_u16(used + SplitVirtqueue.usedIndexOffset)) != lastUsedIndex
    }

    /// Waits until used entries are there (the call eventfd, re-checking the ring).
    /// Returns false on timeout.
    public func waitForUsed(timeoutMilliseconds: Int32) -> Bool {
        while !armInterrupt() {
            guard call.wait(timeoutMilliseconds: timeoutMilliseconds) else { return hasUsed }
        }
        return true
    }

    private func free(_ head: UInt16) {
        // A head we never posted (a confused device, or a raw head) frees nothing.
        guard Int(head) < size else { return }
        let count = Int(chainLength[Int(head)])
        guard count > 0 else { return }
        chainLength[Int(head)] = 0
        var last = head
        for _ in 1..<count { last = shadowNext[Int(last)] }
        shadowNext[Int(last)] = freeHead
        freeHead = head
        freeCount += count
    }
}
