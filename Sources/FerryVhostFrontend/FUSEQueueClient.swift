import FerryFUSE
import FerryVirtio

/// Where one request slot's buffers sit: an in area (request header and arguments),
/// an out area (reply header and fixed reply arguments), an indirect table, and a data
/// buffer (WRITE payload or READ/READDIR reply data).
public enum FUSESlotLayout {
    public static let inAreaSize = 4096
    public static let outAreaSize = 4096
    public static let indirectEntries = 16
}

/// An argument-less request (GETATTR without fh still has one; FORGET-less ops like
/// READLINK or STATFS have none).
public struct FUSENoArgument: FUSERequestEncodable {
    public static let size = 0
    public init() {}
    public func encode(to pointer: UnsafeMutableRawPointer) {}
}

/// A finished request: the slot it used, the bytes the device says it wrote, and the
/// decoded reply header (nil when fewer than 16 bytes were written).
public struct FUSECompletion: Sendable {
    public var slot: Int
    public var usedLength: UInt32
    public var header: FUSEOutHeader?
    /// The unique the request was sent with (the header's should match).
    public var unique: UInt64
    /// Whether the reply header is present, matches the request and fits `usedLength`.
    public var isWellFormed: Bool {
        guard let h = header else { return false }
        return h.unique == unique && h.length == usedLength
    }
}

/// The FUSE client of one virtqueue: `depth` request slots, each with buffers in guest
/// memory; requests are laid out as the Linux virtio-fs driver does (readable header,
/// arguments, write data; then writable reply header, reply arguments, read data),
/// directly or through an indirect table. Completions may come in any order.
///
/// Not thread-safe: one thread drives one queue.
/// @unchecked Sendable: not thread-safe, but only ever driven by one thread at a time: it is Sendable so it
/// can be handed to the thread that drives it.
public final class FUSEQueueClient: @unchecked Sendable {
    public let queue: DriverVirtqueue
    public let depth: Int
    public let dataBufferSize: Int
    public let indirect: Bool
    let memory: GuestMemory

    struct Slot {
        var inOffset: Int
        var outOffset: Int
        var indirectOffset: Int
        var dataOffset: Int
        var unique: UInt64 = 0
        var busy = false
    }
    /// Plain buffers rather than arrays: the request path then allocates nothing and
    /// needs no uniqueness or exclusivity checks.
    let slots: UnsafeMutablePointer<Slot>
    /// A stack of free slot numbers; `freeCount` of them are valid.
    private let freeSlots: UnsafeMutablePointer<Int>
    private var freeCount: Int
    private let headToSlot: UnsafeMutablePointer<Int>
    private var nextUnique: UInt64 = 1
    /// The chain being built before posting.
    private let chain: UnsafeMutablePointer<VirtqueueDescriptor>
    private var chainCount = 0
    private let chainCapacity: Int

    public init(queue: DriverVirtqueue, depth: Int, dataBufferSize: Int, indirect: Bool) throws {
        self.queue = queue; self.depth = depth; self.dataBufferSize = dataBufferSize
        self.indirect = indirect; self.memory = queue.memory
        let layout = try (0..<depth).map { _ in
            let m = queue.memory
            return Slot(inOffset: try m.allocate(FUSESlotLayout.inAreaSize, alignment: 4096),
                        outOffset: try m.allocate(FUSESlotLayout.outAreaSize, alignment: 4096),
                        indirectOffset: try m.allocate(FUSESlotLayout.indirectEntries * 16, alignment: 4096),
                        dataOffset: try m.allocate(max(dataBufferSize, 1), alignment: 4096))
        }
        slots = .allocate(capacity: max(depth, 1))
        slots.initialize(from: layout, count: depth)
        freeSlots = .allocate(capacity: max(depth, 1))
        for i in 0..<depth { freeSlots[i] = depth - 1 - i }
        freeCount = depth
        headToSlot = .allocate(capacity: queue.size)
        headToSlot.initialize(repeating: -1, count: queue.size)
        chainCapacity = max(queue.size, FUSESlotLayout.indirectEntries)
        chain = .allocate(capacity: chainCapacity)
    }

    deinit {
        slots.deinitialize(count: depth)
        slots.deallocate(); freeSlots.deallocate(); headToSlot.deallocate(); chain.deallocate()
    }

    public var freeSlotCount: Int { freeCount }
    /// The slot the next `submit` will use, so its data buffer can be filled first.
    public var nextFreeSlot: Int? { freeCount > 0 ? freeSlots[freeCount - 1] : nil }
    public var inFlight: Int { depth - freeCount }

    private func popFreeSlot() -> Int? {
        guard freeCount > 0 else { return nil }
        freeCount -= 1
        return freeSlots[freeCount]
    }

    private func pushFreeSlot(_ slot: Int) {
        freeSlots[freeCount] = slot
        freeCount += 1
    }

    private func appendChain(_ d: VirtqueueDescriptor) {
        precondition(chainCount < chainCapacity, "chain longer than the queue")
        chain[chainCount] = d
        chainCount += 1
    }

    /// The slot's data buffer: fill it before a WRITE, read it after a READ.
    public func dataBuffer(_ slot: Int) -> UnsafeMutableRawBufferPointer {
        // Sound: the buffer was allocated with dataBufferSize bytes for this slot.
        UnsafeMutableRawBufferPointer(start: memory.pointer(slots[slot].dataOffset), count: dataBufferSize)
    }

    /// The reply's fixed arguments (after the 16-byte header) in the out area.
    public func replyArguments(_ slot: Int, count: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: memory.pointer(slots[slot].outOffset + FUSEOutHeader.size),
                               count: min(count, FUSESlotLayout.outAreaSize - FUSEOutHeader.size))
    }

    /// Builds and posts one request; returns its slot, or nil when no slot is free.
    /// The request is not kicked unless `kick` (batch submissions kick once).
    public func submit<A: FUSERequestEncodable>(
        opcode: FUSEOpcode, nodeID: UInt64, argument: A, name: String? = nil, secondName: String? = nil,
        writeLength: Int = 0, replyArgumentSize: Int = 0, readLength: Int = 0,
        expectsReply: Bool = true, kick: Bool = true
    ) -> Int? {
        precondition(writeLength == 0 || readLength == 0, "a request carries data one way")
        precondition(writeLength <= dataBufferSize && readLength <= dataBufferSize)
        guard let slot = popFreeSlot() else { return nil }
        let s = slots[slot]
        let p = memory.pointer(s.inOffset)
        chainCount = 0

        // Request header and arguments are contiguous in the in area, one descriptor each.
        var at = FUSEInHeader.size
        appendChain(descriptor(s.inOffset, FUSEInHeader.size, writable: false))
        if A.size > 0 {
            argument.encode(to: p + at)
            appendChain(descriptor(s.inOffset + at, A.size, writable: false))
            at += A.size
        }
        func appendName(_ n: String?) {
            guard let n else { return }
            let start = at
            for byte in n.utf8 {
                precondition(at < FUSESlotLayout.inAreaSize, "name too long for the slot")
                p.storeBytes(of: byte, toByteOffset: at, as: UInt8.self); at += 1
            }
            precondition(at < FUSESlotLayout.inAreaSize, "name too long for the slot")
            p.storeBytes(of: 0, toByteOffset: at, as: UInt8.self); at += 1
            appendChain(descriptor(s.inOffset + start, at - start, writable: false))
        }
        appendName(name)
        appendName(secondName)
        if writeLength > 0 { appendChain(descriptor(s.dataOffset, writeLength, writable: false)) }
        if expectsReply {
            appendChain(descriptor(s.outOffset, FUSEOutHeader.size, writable: true))
            if replyArgumentSize > 0 {
                appendChain(descriptor(s.outOffset + FUSEOutHeader.size, replyArgumentSize, writable: true))
            }
            if readLength > 0 { appendChain(descriptor(s.dataOffset, readLength, writable: true)) }
        }
        let unique = nextUnique << 8 | UInt64(queue.index & 0xff)
        nextUnique &+= 1
        FUSEInHeader(length: UInt32(at + writeLength), opcode: opcode.rawValue, unique: unique, nodeID: nodeID,
                     uid: 0, gid: 0, pid: 1).encode(to: p)
        return post(slot: slot, unique: unique, kick: kick)
    }

    /// Posts request bytes verbatim (one readable descriptor per segment, in the in area
    /// then the data buffer) with writable buffers of the given sizes (out area first,
    /// then the data buffer). For malformed-input tests. Returns the slot and the unique
    /// read from the bytes (0 when shorter than a header).
    public func submitRaw(readable: [[UInt8]], writableSizes: [Int], kick: Bool = true) -> (slot: Int, unique: UInt64)? {
        guard let slot = popFreeSlot() else { return nil }
        let s = slots[slot]
        chainCount = 0
        var inAt = 0, dataAt = 0
        var unique: UInt64 = 0
        let joined = readable.flatMap { $0 }
        if joined.count >= 16 { unique = joined.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) } }
        for segment in readable {
            let offset: Int
            if inAt + segment.count <= FUSESlotLayout.inAreaSize { offset = s.inOffset + inAt; inAt += segment.count }
            else { precondition(dataAt + segment.count <= dataBufferSize); offset = s.dataOffset + dataAt; dataAt += segment.count }
            segment.withUnsafeBytes { if $0.count > 0 { memory.pointer(offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
            appendChain(descriptor(offset, segment.count, writable: false))
        }
        var outAt = 0
        for size in writableSizes {
            let offset: Int
            if outAt == 0 && size <= FUSESlotLayout.outAreaSize { offset = s.outOffset; outAt = size }
            else { precondition(dataAt + size <= dataBufferSize); offset = s.dataOffset + dataAt; dataAt += size }
            memory.pointer(offset).initializeMemory(as: UInt8.self, repeating: 0, count: size)
            appendChain(descriptor(offset, size, writable: true))
        }
        guard let posted = post(slot: slot, unique: unique, kick: kick) else { return nil }
        return (posted, unique)
    }

    /// The bytes the device wrote for a raw request, gathered from its writable buffers.
    public func rawReply(_ completion: FUSECompletion, writableSizes: [Int]) -> [UInt8] {
        var out: [UInt8] = []
        var remaining = Int(completion.usedLength)
        let s = slots[completion.slot]
        var dataAt = 0, first = true
        for size in writableSizes where remaining > 0 {
            let offset: Int
            if first && size <= FUSESlotLayout.outAreaSize { offset = s.outOffset } else { offset = s.dataOffset + dataAt; dataAt += size }
            first = false
            let n = min(size, remaining)
            out += UnsafeRawBufferPointer(start: memory.pointer(offset), count: n)
            remaining -= n
        }
        return out
    }

    private func descriptor(_ offset: Int, _ length: Int, writable: Bool) -> VirtqueueDescriptor {
        VirtqueueDescriptor(address: memory.guestAddress(offset), length: UInt32(length),
                            flags: writable ? SplitVirtqueue.Descriptor.write : 0, next: 0)
    }

    private func post(slot: Int, unique: UInt64, kick: Bool) -> Int? {
        let head: UInt16?
        let count = chainCount
        if indirect && count > 1 {
            precondition(count <= FUSESlotLayout.indirectEntries)
            let table = memory.pointer(slots[slot].indirectOffset)
            for i in 0..<count {
                var d = chain[i]
                if i + 1 < count { d.flags |= SplitVirtqueue.Descriptor.next; d.next = UInt16(i + 1) }
                d.store(to: table + i * SplitVirtqueue.Descriptor.size)
            }
            var one = VirtqueueDescriptor(address: memory.guestAddress(slots[slot].indirectOffset),
                                          length: UInt32(count * SplitVirtqueue.Descriptor.size),
                                          flags: SplitVirtqueue.Descriptor.indirect, next: 0)
            head = withUnsafePointer(to: &one) { queue.post(UnsafeBufferPointer(start: $0, count: 1)) }
        } else {
            head = queue.post(UnsafeBufferPointer(start: chain, count: count))
        }
        guard let head else { pushFreeSlot(slot); return nil }
        headToSlot[Int(head)] = slot
        slots[slot].unique = unique
        slots[slot].busy = true
        if kick { queue.kickIfNeeded() }
        return slot
    }

    /// Reaps completed requests without waiting; calls `body` for each.
    @discardableResult
    public func reap(_ body: (FUSECompletion) -> Void) -> Int {
        queue.reap { head, length in
            let slot = headToSlot[Int(head)]
            guard slot >= 0 else { return }   // a raw head that never was a slot's
            headToSlot[Int(head)] = -1
            let s = slots[slot]
            slots[slot].busy = false
            pushFreeSlot(slot)
            let header = length >= UInt32(FUSEOutHeader.size)
                ? FUSEClientDecoder.outHeader(UnsafeRawBufferPointer(start: memory.pointer(s.outOffset), count: FUSEOutHeader.size))
                : nil
            body(FUSECompletion(slot: slot, usedLength: length, header: header, unique: s.unique))
        }
    }

    /// Waits (up to the timeout) for at least one completion, then reaps all there are.
    public func waitAndReap(timeoutMilliseconds: Int32 = 10_000, _ body: (FUSECompletion) -> Void) throws {
        guard queue.waitForUsed(timeoutMilliseconds: timeoutMilliseconds) else {
            throw FrontendError.timeout("no completion on queue \(queue.index) within \(timeoutMilliseconds) ms")
        }
        reap(body)
    }

    /// Waits for the completion of `slot`; other completions that arrive meanwhile are
    /// handed to `others` (a synchronous caller normally has none in flight).
    public func wait(for slot: Int, timeoutMilliseconds: Int32 = 10_000,
                     others: (FUSECompletion) -> Void = { _ in }) throws -> FUSECompletion {
        var mine: FUSECompletion?
        while mine == nil {
            try waitAndReap(timeoutMilliseconds: timeoutMilliseconds) { c in
                if c.slot == slot && mine == nil { mine = c } else { others(c) }
            }
        }
        return mine!
    }
}
