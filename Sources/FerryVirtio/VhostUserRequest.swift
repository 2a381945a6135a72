/// Front-end → back-end request codes of the vhost-user protocol
/// (`../shared/reference/vhost-user.rst`, "Front-end message types").
public enum VhostUserRequest: UInt32, Sendable, CaseIterable {
    case getFeatures = 1
    case setFeatures = 2
    case setOwner = 3
    case resetOwner = 4
    case setMemTable = 5
    case setLogBase = 6
    case setLogFD = 7
    case setVringNum = 8
    case setVringAddr = 9
    case setVringBase = 10
    case getVringBase = 11
    case setVringKick = 12
    case setVringCall = 13
    case setVringErr = 14
    case getProtocolFeatures = 15
    case setProtocolFeatures = 16
    case getQueueNum = 17
    case setVringEnable = 18
    case sendRARP = 19
    case netSetMTU = 20
    case setBackendReqFD = 21
    case iotlbMessage = 22
    case setVringEndian = 23
    case getConfig = 24
    case setConfig = 25
    case createCryptoSession = 26
    case closeCryptoSession = 27
    case postcopyAdvise = 28
    case postcopyListen = 29
    case postcopyEnd = 30
    case getInflightFD = 31
    case setInflightFD = 32
    case gpuSetSocket = 33
    case resetDevice = 34
    case vringKick = 35
    case getMaxMemSlots = 36
    case addMemReg = 37
    case remMemReg = 38
    case setStatus = 39
    case getStatus = 40
    case setDeviceStateFD = 42
    case checkDeviceState = 43

    /// Requests whose reply is part of the protocol (not only a REPLY_ACK). SET_LOG_BASE
    /// has one when LOG_SHMFD is agreed, the only way either side sends it.
    public var hasReply: Bool {
        switch self {
        case .setLogBase, .getFeatures, .getProtocolFeatures, .getVringBase, .getQueueNum, .getConfig,
             .getInflightFD, .getMaxMemSlots, .getStatus, .postcopyAdvise, .createCryptoSession,
             .setDeviceStateFD, .checkDeviceState:
            return true
        default:
            return false
        }
    }
}

/// Virtio device feature bits a virtio-fs back-end deals in.
public enum VirtioFeature {
    public static let ringIndirectDescriptors: UInt64 = 1 << 28
    public static let ringEventIndex: UInt64 = 1 << 29
    public static let version1: UInt64 = 1 << 32
    public static let accessPlatform: UInt64 = 1 << 33
    public static let ringPacked: UInt64 = 1 << 34
    public static let inOrder: UInt64 = 1 << 35
    /// Not a virtio bit: vhost-user's marker that the back-end speaks protocol features.
    public static let protocolFeatures: UInt64 = 1 << 30
    /// Dirty-page logging (live migration).
    public static let logAll: UInt64 = 1 << 26
}

/// `VHOST_USER_PROTOCOL_F_*` bits.
public enum VhostUserProtocolFeature {
    public static let multiqueue: UInt64 = 1 << 0
    public static let logSharedMemory: UInt64 = 1 << 1
    public static let replyAck: UInt64 = 1 << 3
    public static let backendRequest: UInt64 = 1 << 5
    public static let config: UInt64 = 1 << 9
    public static let backendSendFD: UInt64 = 1 << 10
    public static let hostNotifier: UInt64 = 1 << 11
    public static let inflightSharedMemory: UInt64 = 1 << 12
    public static let resetDevice: UInt64 = 1 << 13
    public static let inbandNotifications: UInt64 = 1 << 14
    public static let configureMemSlots: UInt64 = 1 << 15
    public static let status: UInt64 = 1 << 16
    /// SET_DEVICE_STATE_FD / CHECK_DEVICE_STATE: the back-end's state rides in the
    /// front-end's migration stream.
    public static let deviceState: UInt64 = 1 << 19
}
