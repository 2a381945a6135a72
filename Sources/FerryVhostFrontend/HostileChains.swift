import FerryVirtio

/// Malformed descriptor chains a hostile or buggy guest could post. A sound back-end
/// must refuse each (drop it, or answer without touching memory it does not own) and
/// keep serving the queue.
public enum HostileChain: Sendable, CaseIterable {
    /// A readable descriptor whose address lies past the end of guest memory.
    case addressOutsideMemory
    /// A buffer that starts inside memory and runs past its end.
    case lengthPastEndOfMemory
    /// Two descriptors whose `next` point at each other, forever.
    case loopingNext
    /// A readable descriptor after a writable one.
    case readableAfterWritable
    /// More descriptors than the queue size (linked through the table, in a loop-free
    /// way that only a length bound catches): a chain as long as the whole table.
    case chainAsLongAsTheQueue
    /// Descriptors of length zero only.
    case zeroLengths
    /// An indirect table whose entry is itself indirect.
    case nestedIndirect
    /// An indirect descriptor with a length that is not a multiple of 16.
    case indirectBadLength
    /// An indirect descriptor that also has NEXT set.
    case indirectWithNext
    /// `next` pointing past the table.
    case nextOutOfRange
}

extension VhostUserFrontend {
    /// Posts `kind` on `queueIndex` using buffers in the scratch area, and kicks.
    /// Returns the head id, or nil when the chain did not fit the free descriptors.
    /// Whatever the back-end does with it, the chain's descriptors are reclaimed only if
    /// it is ever marked used.
    @discardableResult
    public func postHostile(_ kind: HostileChain, on queueIndex: Int) throws -> UInt16? {
        let queue = queues[queueIndex]
        let buffer = try memory.allocate(4096, alignment: 4096)
        let gpa = memory.guestAddress(buffer)
        let end = memory.guestAddress(memory.size)
        typealias D = VirtqueueDescriptor
        let next = SplitVirtqueue.Descriptor.next, write = SplitVirtqueue.Descriptor.write
        let indirect = SplitVirtqueue.Descriptor.indirect
        // A plausible request header first, so the back-end gets as far as parsing.
        let header = D(address: gpa, length: 40, flags: next, next: 1)
        let reply = D(address: gpa + 2048, length: 16, flags: write, next: 0)
        let chain: [D]
        switch kind {
        case .addressOutsideMemory:
            chain = [D(address: end + 4096, length: 40, flags: next, next: 1), reply]
        case .lengthPastEndOfMemory:
            chain = [D(address: end - 16, length: 4096, flags: next, next: 1), reply]
        case .loopingNext:
            chain = [D(address: gpa, length: 40, flags: next, next: 1), D(address: gpa, length: 40, flags: next, next: 0)]
        case .readableAfterWritable:
            chain = [header, D(address: gpa + 2048, length: 16, flags: write | next, next: 2), D(address: gpa + 64, length: 40, flags: 0, next: 0)]
        case .chainAsLongAsTheQueue:
            let n = queue.freeCount
            chain = (0..<n).map { i in D(address: gpa, length: 8, flags: i + 1 < n ? next : write, next: UInt16(min(i + 1, n - 1))) }
        case .zeroLengths:
            chain = [D(address: gpa, length: 0, flags: next, next: 1), D(address: gpa + 2048, length: 0, flags: write, next: 0)]
        case .nestedIndirect, .indirectBadLength, .indirectWithNext:
            let table = memory.pointer(buffer + 1024)
            D(address: gpa + 1024, length: 16, flags: indirect, next: 0).store(to: table)
            let tableAddress = gpa + 1024
            switch kind {
            case .nestedIndirect: chain = [D(address: tableAddress, length: 16, flags: indirect, next: 0)]
            case .indirectBadLength: chain = [D(address: tableAddress, length: 20, flags: indirect, next: 0)]
            default: chain = [D(address: tableAddress, length: 16, flags: indirect | next, next: 1), reply]
            }
        case .nextOutOfRange:
            chain = [D(address: gpa, length: 40, flags: next, next: UInt16(queue.size + 5))]
        }
        let head = queue.postRaw(chain)
        queue.forceKick()
        return head
    }

    /// Sends a vhost-user message with any request code, flags and payload (and fds),
    /// for protocol-fuzzing tests. Reads nothing back.
    public func sendGarbage(request: UInt32, flags: UInt32 = VhostUserHeader.version, payload: [UInt8], fds: [Int32] = []) throws {
        try channel.send(request, payload: payload, fds: fds, flags: flags)
    }
}
