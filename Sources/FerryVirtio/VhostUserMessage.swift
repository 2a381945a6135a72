/// The 12-byte header of every vhost-user message: request, flags, payload size.
public struct VhostUserHeader: Sendable, Equatable {
    public static let size = 12
    /// Payloads are small structs; anything larger than this is a broken front-end.
    public static let maximumPayload = 4096

    public static let versionMask: UInt32 = 0x3
    public static let version: UInt32 = 0x1
    public static let replyFlag: UInt32 = 1 << 2
    public static let needReplyFlag: UInt32 = 1 << 3

    public var request: UInt32
    public var flags: UInt32
    public var size: UInt32

    public init(request: UInt32, flags: UInt32, size: UInt32) {
        self.request = request; self.flags = flags; self.size = size
    }

    public var needsReply: Bool { flags & Self.needReplyFlag != 0 }
    public var isReply: Bool { flags & Self.replyFlag != 0 }

    public static func decode(_ bytes: UnsafeRawBufferPointer) -> VhostUserHeader? {
        guard bytes.count >= size else { return nil }
        return VhostUserHeader(request: bytes.le32(0), flags: bytes.le32(4), size: bytes.le32(8))
    }

    public func encode(to p: UnsafeMutableRawPointer) {
        p.storeLE32(request, at: 0); p.storeLE32(flags, at: 4); p.storeLE32(size, at: 8)
    }
}

/// Why a vhost-user message was refused. The connection is then closed (the spec gives a
/// back-end no other way to report a protocol error).
public enum VhostUserMessageError: Error, Sendable, Equatable {
    case badVersion(flags: UInt32)
    case payloadTooLarge(UInt32)
    case wrongPayloadSize(request: UInt32, expected: Int, actual: Int)
    case tooManyRegions(UInt32)
}

/// `struct vhost_vring_state`: a queue index and a number (size, base, enable flag).
public struct VringState: Sendable, Equatable {
    public static let size = 8
    public var index: UInt32
    public var num: UInt32
    public init(index: UInt32, num: UInt32) { self.index = index; self.num = num }
    public static func decode(_ b: UnsafeRawBufferPointer) -> VringState { VringState(index: b.le32(0), num: b.le32(4)) }
    public func encode(to p: UnsafeMutableRawPointer) { p.storeLE32(index, at: 0); p.storeLE32(num, at: 4) }
}

/// `struct vhost_vring_addr`: where a queue's rings live, as front-end (QEMU) virtual addresses.
public struct VringAddress: Sendable, Equatable {
    public static let size = 40
    public static let logFlag: UInt32 = 1
    public var index: UInt32
    public var flags: UInt32
    public var descriptorTable: UInt64
    public var usedRing: UInt64
    public var availableRing: UInt64
    public var log: UInt64
    public init(index: UInt32, flags: UInt32 = 0, descriptorTable: UInt64, usedRing: UInt64, availableRing: UInt64, log: UInt64 = 0) {
        self.index = index; self.flags = flags; self.descriptorTable = descriptorTable
        self.usedRing = usedRing; self.availableRing = availableRing; self.log = log
    }
    public static func decode(_ b: UnsafeRawBufferPointer) -> VringAddress {
        VringAddress(index: b.le32(0), flags: b.le32(4), descriptorTable: b.le64(8), usedRing: b.le64(16),
                     availableRing: b.le64(24), log: b.le64(32))
    }
    public func encode(to p: UnsafeMutableRawPointer) {
        p.storeLE32(index, at: 0); p.storeLE32(flags, at: 4); p.storeLE64(descriptorTable, at: 8)
        p.storeLE64(usedRing, at: 16); p.storeLE64(availableRing, at: 24); p.storeLE64(log, at: 32)
    }
}

/// One guest memory region (`VhostUserMemoryRegion`): guest-physical range, where the
/// front-end mapped it, and the offset into the fd that comes with the message.
public struct MemoryRegionDescription: Sendable, Equatable {
    public static let size = 32
    public var guestPhysicalAddress: UInt64
    public var size: UInt64
    public var userAddress: UInt64
    public var mmapOffset: UInt64
    public init(guestPhysicalAddress: UInt64, size: UInt64, userAddress: UInt64, mmapOffset: UInt64) {
        self.guestPhysicalAddress = guestPhysicalAddress; self.size = size
        self.userAddress = userAddress; self.mmapOffset = mmapOffset
    }
    public static func decode(_ b: UnsafeRawBufferPointer, at o: Int = 0) -> MemoryRegionDescription {
        MemoryRegionDescription(guestPhysicalAddress: b.le64(o), size: b.le64(o + 8), userAddress: b.le64(o + 16), mmapOffset: b.le64(o + 24))
    }
    public func encode(to p: UnsafeMutableRawPointer) {
        p.storeLE64(guestPhysicalAddress, at: 0); p.storeLE64(size, at: 8)
        p.storeLE64(userAddress, at: 16); p.storeLE64(mmapOffset, at: 24)
    }
}

/// SET_MEM_TABLE's payload: a count, padding, then that many regions (one fd each).
public enum MemoryTable {
    /// VHOST_MEMORY_BASELINE_NREGIONS: the most regions one SET_MEM_TABLE may carry.
    public static let maximumRegions = 8

    public static func decode(_ b: UnsafeRawBufferPointer) throws(VhostUserMessageError) -> [MemoryRegionDescription] {
        guard b.count >= 8 else { throw .wrongPayloadSize(request: 5, expected: 8, actual: b.count) }
        let count = b.le32(0)
        guard count <= UInt32(maximumRegions) else { throw .tooManyRegions(count) }
        let needed = 8 + Int(count) * MemoryRegionDescription.size
        guard b.count >= needed else { throw .wrongPayloadSize(request: 5, expected: needed, actual: b.count) }
        return (0..<Int(count)).map { MemoryRegionDescription.decode(b, at: 8 + $0 * MemoryRegionDescription.size) }
    }

    public static func encode(_ regions: [MemoryRegionDescription], to p: UnsafeMutableRawPointer) -> Int {
        p.storeLE32(UInt32(regions.count), at: 0); p.storeLE32(0, at: 4)
        for (i, r) in regions.enumerated() { r.encode(to: p + 8 + i * MemoryRegionDescription.size) }
        return 8 + regions.count * MemoryRegionDescription.size
    }
}

/// ADD_MEM_REG / REM_MEM_REG payload: 8 bytes of padding, then one region.
public enum SingleMemoryRegion {
    public static let size = 8 + MemoryRegionDescription.size
    public static func decode(_ b: UnsafeRawBufferPointer) throws(VhostUserMessageError) -> MemoryRegionDescription {
        guard b.count >= size else { throw .wrongPayloadSize(request: 37, expected: size, actual: b.count) }
        return MemoryRegionDescription.decode(b, at: 8)
    }
    public static func encode(_ region: MemoryRegionDescription, to p: UnsafeMutableRawPointer) -> Int {
        p.storeLE64(0, at: 0)
        region.encode(to: p + 8)
        return size
    }
}

/// GET/SET_CONFIG payload header: offset, size, flags, then `size` bytes of config space.
public struct DeviceConfigHeader: Sendable, Equatable {
    public static let size = 12
    public var offset: UInt32
    public var size: UInt32
    public var flags: UInt32
    public init(offset: UInt32, size: UInt32, flags: UInt32) { self.offset = offset; self.size = size; self.flags = flags }
    public static func decode(_ b: UnsafeRawBufferPointer) -> DeviceConfigHeader? {
        guard b.count >= Self.size else { return nil }
        return DeviceConfigHeader(offset: b.le32(0), size: b.le32(4), flags: b.le32(8))
    }
    public func encode(to p: UnsafeMutableRawPointer) { p.storeLE32(offset, at: 0); p.storeLE32(size, at: 4); p.storeLE32(flags, at: 8) }
}

/// GET/SET_INFLIGHT_FD payload (`VhostUserInflight`).
public struct InflightDescription: Sendable, Equatable {
    public static let size = 24
    public var mmapSize: UInt64
    public var mmapOffset: UInt64
    public var queueCount: UInt16
    public var queueSize: UInt16
    public init(mmapSize: UInt64, mmapOffset: UInt64, queueCount: UInt16, queueSize: UInt16) {
        self.mmapSize = mmapSize; self.mmapOffset = mmapOffset; self.queueCount = queueCount; self.queueSize = queueSize
    }
    public static func decode(_ b: UnsafeRawBufferPointer) -> InflightDescription {
        InflightDescription(mmapSize: b.le64(0), mmapOffset: b.le64(8), queueCount: b.le16(16), queueSize: b.le16(18))
    }
    public func encode(to p: UnsafeMutableRawPointer) {
        p.storeLE64(mmapSize, at: 0); p.storeLE64(mmapOffset, at: 8)
        p.storeLE16(queueCount, at: 16); p.storeLE16(queueSize, at: 18); p.storeLE32(0, at: 20)
    }
}

/// SET_LOG_BASE's payload (`VhostUserLog`): the dirty-page bitmap is `size` bytes of the
/// fd that comes with the message, starting at `offset` (where guest address 0 is logged).
public struct LogDescription: Sendable, Equatable {
    public static let size = 16
    /// VHOST_LOG_PAGE: one bit of the log covers this many bytes of guest memory.
    public static let pageSize: UInt64 = 0x1000
    public var size: UInt64
    public var offset: UInt64
    public init(size: UInt64, offset: UInt64) { self.size = size; self.offset = offset }
    public static func decode(_ b: UnsafeRawBufferPointer) -> LogDescription { LogDescription(size: b.le64(0), offset: b.le64(8)) }
    public func encode(to p: UnsafeMutableRawPointer) { p.storeLE64(size, at: 0); p.storeLE64(offset, at: 8) }
}

/// SET_DEVICE_STATE_FD's payload: which way the back-end's state goes, and in which phase.
public struct DeviceStateTransfer: Sendable, Equatable {
    public static let size = 8
    public enum Direction: UInt32, Sendable { case save = 0, load = 1 }
    /// The only phase the protocol has: the guest stopped, every ring stopped.
    public static let phaseStopped: UInt32 = 0
    /// Bit 8 of the reply: no fd comes back (the front-end's channel is used).
    public static let replyNoFD: UInt64 = 0x100
    public var direction: UInt32
    public var phase: UInt32
    public init(direction: UInt32, phase: UInt32) { self.direction = direction; self.phase = phase }
    public static func decode(_ b: UnsafeRawBufferPointer) -> DeviceStateTransfer { DeviceStateTransfer(direction: b.le32(0), phase: b.le32(4)) }
    public func encode(to p: UnsafeMutableRawPointer) { p.storeLE32(direction, at: 0); p.storeLE32(phase, at: 4) }
}

/// The virtio-fs device's config space (`struct virtio_fs_config`): tag and queue count.
public struct VirtioFSConfig: Sendable, Equatable {
    public static let size = 40
    public static let tagLength = 36
    public var tag: [UInt8]
    public var requestQueues: UInt32
    public init(tag: String, requestQueues: UInt32) {
        var bytes = Array(tag.utf8.prefix(Self.tagLength))
        bytes += [UInt8](repeating: 0, count: Self.tagLength - bytes.count)
        self.tag = bytes; self.requestQueues = requestQueues
    }
    public func encode(to p: UnsafeMutableRawPointer) {
        for (i, b) in tag.enumerated() { p.storeBytes(of: b, toByteOffset: i, as: UInt8.self) }
        p.storeLE32(requestQueues, at: Self.tagLength)
    }
}

extension UnsafeRawBufferPointer {
    @inline(__always) func le16(_ o: Int) -> UInt16 { UInt16(littleEndian: loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
    @inline(__always) func le32(_ o: Int) -> UInt32 { UInt32(littleEndian: loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
    @inline(__always) func le64(_ o: Int) -> UInt64 { UInt64(littleEndian: loadUnaligned(fromByteOffset: o, as: UInt64.self)) }
}

extension UnsafeMutableRawPointer {
    @inline(__always) func storeLE16(_ v: UInt16, at o: Int) { storeBytes(of: v.littleEndian, toByteOffset: o, as: UInt16.self) }
    @inline(__always) func storeLE32(_ v: UInt32, at o: Int) { storeBytes(of: v.littleEndian, toByteOffset: o, as: UInt32.self) }
    @inline(__always) func storeLE64(_ v: UInt64, at o: Int) { storeBytes(of: v.littleEndian, toByteOffset: o, as: UInt64.self) }
}
