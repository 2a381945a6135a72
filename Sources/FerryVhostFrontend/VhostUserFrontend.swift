import FerryVirtio

/// What the front-end sets up: how many request queues, how deep, and which ring
/// features to take when offered.
public struct FrontendConfiguration: Sendable {
    /// Request queues wanted (the hiprio queue comes on top).
    public var requestQueues: Int = 1
    /// Requests in flight per request queue (slots with their own buffers).
    public var depth: Int = 8
    /// Bytes of READ/WRITE/READDIR data buffer per slot.
    public var dataBufferSize: Int = 1 << 20
    /// Descriptors per queue; nil: the smallest power of two that fits `depth` chains
    /// (at most 1024, what libvhost-user accepts).
    public var queueSize: Int?
    public var useIndirectDescriptors = true
    public var useEventIndex = true
    /// Unallocated guest memory left for raw tests to place buffers in.
    public var scratchBytes: Int = 1 << 20
    /// A migration destination: this back-end state (from `saveBackendState()` on the
    /// source) is loaded before the rings start, as QEMU loads an incoming migration.
    public var incomingState: [UInt8]?
    /// A migration stream that stalls: given a duplicate of the state pipe's write end
    /// before CHECK_DEVICE_STATE is sent, so the back-end sees no end of the state until
    /// whoever holds it closes it (tests of a back-end stopped meanwhile).
    public var holdIncomingStateOpen: (@Sendable (Int32) -> Void)?

    public init(requestQueues: Int = 1, depth: Int = 8, dataBufferSize: Int = 1 << 20) {
        self.requestQueues = requestQueues; self.depth = depth; self.dataBufferSize = dataBufferSize
    }
}

/// A vhost-user-fs front-end: what QEMU does for a virtio-fs device. It connects to a
/// back-end socket, negotiates features, shares one memfd as guest memory and starts
/// queue 0 (hiprio) and the request queues 1…N, each with kick and call eventfds.
public final class VhostUserFrontend: Sendable {
    public let channel: VhostUserChannel
    public let memory: GuestMemory
    /// Index 0 is hiprio; 1… are request queues.
    public let queues: [DriverVirtqueue]
    public let offeredFeatures: UInt64
    public let features: UInt64
    public let protocolFeatures: UInt64
    /// Queues the back-end said it has (GET_QUEUE_NUM), hiprio included.
    public let backendQueueCount: Int
    public let configuration: FrontendConfiguration

    /// Most descriptors one request chain uses: header, two args, data; out header,
    /// out args, data.
    public static let maximumChainLength = 8

    public static let wantedFeatures = VirtioFeature.version1 | VirtioFeature.ringEventIndex
        | VirtioFeature.ringIndirectDescriptors | VirtioFeature.protocolFeatures
    public static let wantedProtocolFeatures = VhostUserProtocolFeature.replyAck
        | VhostUserProtocolFeature.multiqueue | VhostUserProtocolFeature.configureMemSlots
        | VhostUserProtocolFeature.deviceState

    public var usesIndirectDescriptors: Bool { features & VirtioFeature.ringIndirectDescriptors != 0 }
    public var usesEventIndex: Bool { features & VirtioFeature.ringEventIndex != 0 }

    /// Connects and performs the whole handshake; the queues are ready on return.
    public init(socketPath: String, configuration: FrontendConfiguration = FrontendConfiguration()) throws {
        self.configuration = configuration
        let channel = try VhostUserChannel(path: socketPath)
        self.channel = channel
        try channel.call(.setOwner)

        let offered = try channel.callU64(.getFeatures)
        offeredFeatures = offered
        guard offered & VirtioFeature.version1 != 0 else { throw FrontendError.unsupported("VIRTIO_F_VERSION_1") }
        var wanted = Self.wantedFeatures
        if !configuration.useIndirectDescriptors { wanted &= ~VirtioFeature.ringIndirectDescriptors }
        if !configuration.useEventIndex { wanted &= ~VirtioFeature.ringEventIndex }
        features = offered & wanted
        try channel.call(.setFeatures, payload: .u64(features))

        var agreedProtocol: UInt64 = 0
        if features & VirtioFeature.protocolFeatures != 0 {
            agreedProtocol = try channel.callU64(.getProtocolFeatures) & Self.wantedProtocolFeatures
            try channel.call(.setProtocolFeatures, payload: .u64(agreedProtocol))
            channel.replyAck = agreedProtocol & VhostUserProtocolFeature.replyAck != 0
        }
        protocolFeatures = agreedProtocol

        // Without MQ the device has the two queues every virtio-fs device has.
        backendQueueCount = agreedProtocol & VhostUserProtocolFeature.multiqueue != 0
            ? Int(try channel.callU64(.getQueueNum)) : 2
        guard configuration.requestQueues >= 1, configuration.requestQueues <= backendQueueCount - 1 else {
            throw FrontendError.unsupported("\(configuration.requestQueues) request queues (it has \(backendQueueCount - 1))")
        }

        if let state = configuration.incomingState {
            guard agreedProtocol & VhostUserProtocolFeature.deviceState != 0 else {
                throw FrontendError.unsupported("VHOST_USER_PROTOCOL_F_DEVICE_STATE (migration)")
            }
            try Self.loadBackendState(state, channel: channel, holdOpen: configuration.holdIncomingStateOpen)
        }

        let indirect = features & VirtioFeature.ringIndirectDescriptors != 0
        let eventIndex = features & VirtioFeature.ringEventIndex != 0
        let size = try Self.queueSize(configuration, indirect: indirect)
        let hiprioSize = 64
        memory = try GuestMemory(size: Self.memoryBytes(configuration, queueSize: size, hiprioSize: hiprioSize))
        var queues: [DriverVirtqueue] = []
        for q in 0...configuration.requestQueues {
            queues.append(try DriverVirtqueue(index: UInt32(q), size: q == 0 ? hiprioSize : size, memory: memory, eventIndex: eventIndex))
        }
        self.queues = queues

        var table = [UInt8](repeating: 0, count: 8 + MemoryRegionDescription.size)
        table.withUnsafeMutableBytes { _ = MemoryTable.encode([memory.regionDescription], to: $0.baseAddress!) }
        try channel.call(.setMemTable, payload: table, fds: [memory.fd])

        for queue in queues { try start(queue) }
    }

    private func start(_ queue: DriverVirtqueue) throws {
        func state(_ num: UInt32) -> [UInt8] {
            var b = [UInt8](repeating: 0, count: VringState.size)
            b.withUnsafeMutableBytes { VringState(index: queue.index, num: num).encode(to: $0.baseAddress!) }
            return b
        }
        try channel.call(.setVringNum, payload: state(UInt32(queue.size)))
        try channel.call(.setVringBase, payload: state(0))
        var address = [UInt8](repeating: 0, count: VringAddress.size)
        address.withUnsafeMutableBytes { queue.address.encode(to: $0.baseAddress!) }
        try channel.call(.setVringAddr, payload: address)
        // Call before kick: once kicked, the back-end may complete requests and must
        // have somewhere to signal.
        try channel.call(.setVringCall, payload: .u64(UInt64(queue.index)), fds: [queue.call.fd])
        try channel.call(.setVringKick, payload: .u64(UInt64(queue.index)), fds: [queue.kick.fd])
        if features & VirtioFeature.protocolFeatures != 0 {
            try channel.call(.setVringEnable, payload: state(1))
        }
    }

    static func queueSize(_ c: FrontendConfiguration, indirect: Bool) throws -> Int {
        let needed = c.depth * (indirect ? 1 : maximumChainLength)
        if let s = c.queueSize {
            guard SplitVirtqueue.isValidSize(UInt32(s)), s >= needed else {
                throw FrontendError.unsupported("queue size \(s) for depth \(c.depth)")
            }
            return s
        }
        var s = 64
        while s < needed { s *= 2 }
        guard s <= 1024 else { throw FrontendError.unsupported("depth \(c.depth) needs more than 1024 descriptors") }
        return s
    }

    /// Per-slot bytes: in area, out area, indirect table, data buffer (page-aligned parts).
    static func slotBytes(dataBufferSize: Int) -> Int {
        FUSESlotLayout.inAreaSize + FUSESlotLayout.outAreaSize + 4096 + ((dataBufferSize + 4095) & ~4095) + 4096
    }

    static func memoryBytes(_ c: FrontendConfiguration, queueSize: Int, hiprioSize: Int) -> Int {
        func rings(_ n: Int) -> Int { 3 * 4096 + 26 * n + 4096 }
        let requestQueues = c.requestQueues * (rings(queueSize) + c.depth * slotBytes(dataBufferSize: c.dataBufferSize))
        let hiprio = rings(hiprioSize) + FUSESession.hiprioDepth * slotBytes(dataBufferSize: 0)
        return (requestQueues + hiprio + c.scratchBytes + 4095) & ~4095
    }
}
