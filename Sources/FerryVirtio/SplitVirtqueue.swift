/// The split virtqueue's memory layout (virtio 1.x, section 2.7), as pure arithmetic:
/// where each field of the descriptor table and the two rings lives. Transports and the
/// test front-end both use this, so they can never disagree on a byte.
public enum SplitVirtqueue {
    /// Largest queue a device accepts (and the bound on any descriptor chain).
    public static let maximumSize: UInt16 = 32768

    /// `struct vring_desc`.
    public enum Descriptor {
        public static let size = 16
        /// Continues via `next`.
        public static let next: UInt16 = 1
        /// Device-writable (the reply side).
        public static let write: UInt16 = 2
        /// Points to a table of further descriptors.
        public static let indirect: UInt16 = 4
    }

    public static let availableNoInterrupt: UInt16 = 1     // VRING_AVAIL_F_NO_INTERRUPT
    public static let usedNoNotify: UInt16 = 1             // VRING_USED_F_NO_NOTIFY

    /// Bytes of the descriptor table for `size` entries.
    public static func descriptorTableBytes(size: Int) -> Int { Descriptor.size * size }
    /// Bytes of the available ring: flags, idx, ring[size], used_event.
    public static func availableRingBytes(size: Int) -> Int { 4 + 2 * size + 2 }
    /// Bytes of the used ring: flags, idx, ring[size] of (id, len), avail_event.
    public static func usedRingBytes(size: Int) -> Int { 4 + 8 * size + 2 }

    /// Offsets within the available ring.
    public static let availableFlagsOffset = 0
    public static let availableIndexOffset = 2
    public static func availableEntryOffset(_ slot: Int) -> Int { 4 + 2 * slot }
    /// `used_event`: with EVENT_IDX, the driver wants an interrupt when used idx passes it.
    public static func usedEventOffset(size: Int) -> Int { 4 + 2 * size }

    /// Offsets within the used ring.
    public static let usedFlagsOffset = 0
    public static let usedIndexOffset = 2
    public static func usedEntryOffset(_ slot: Int) -> Int { 4 + 8 * slot }
    /// `avail_event`: with EVENT_IDX, the device wants a kick when avail idx passes it.
    public static func availableEventOffset(size: Int) -> Int { 4 + 8 * size }

    /// `vring_need_event`: must the other side be notified, having moved its index from
    /// `old` to `new`, when the peer asked to hear about `event`?
    @inline(__always)
    public static func needsEvent(event: UInt16, new: UInt16, old: UInt16) -> Bool {
        (new &- event &- 1) < (new &- old)
    }

    /// A queue size must be a power of two between 1 and `maximumSize`.
    public static func isValidSize(_ size: UInt32) -> Bool {
        size >= 1 && size <= UInt32(maximumSize) && size & (size - 1) == 0
    }
}

/// One decoded descriptor.
public struct VirtqueueDescriptor: Sendable, Equatable {
    public var address: UInt64
    public var length: UInt32
    public var flags: UInt16
    public var next: UInt16
    public init(address: UInt64, length: UInt32, flags: UInt16, next: UInt16) {
        self.address = address; self.length = length; self.flags = flags; self.next = next
    }
    public var hasNext: Bool { flags & SplitVirtqueue.Descriptor.next != 0 }
    public var isWritable: Bool { flags & SplitVirtqueue.Descriptor.write != 0 }
    public var isIndirect: Bool { flags & SplitVirtqueue.Descriptor.indirect != 0 }

    @inline(__always)
    public static func load(from p: UnsafeRawPointer) -> VirtqueueDescriptor {
        VirtqueueDescriptor(address: UInt64(littleEndian: p.loadUnaligned(as: UInt64.self)),
                            length: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)),
                            flags: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt16.self)),
                            next: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 14, as: UInt16.self)))
    }

    public func store(to p: UnsafeMutableRawPointer) {
        p.storeLE64(address, at: 0); p.storeLE32(length, at: 8); p.storeLE16(flags, at: 12); p.storeLE16(next, at: 14)
    }
}
