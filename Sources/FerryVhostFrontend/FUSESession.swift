import FerryFUSE
import Foundation

/// A FUSE session over a vhost-user-fs front-end: one `FUSEQueueClient` per request
/// queue (each for one driving thread), and the hiprio queue shared behind a lock for
/// FORGET, as the guest driver shares it.
/// @unchecked Sendable: `initReply` is written once in init; the shared hiprio queue is used only with
/// `hiprioLock` held; each request queue is driven by one thread at a time.
public final class FUSESession: @unchecked Sendable {
    public static let rootNodeID: UInt64 = 1
    /// Hiprio carries only FORGETs (and INTERRUPTs in a guest); a few slots suffice.
    public static let hiprioDepth = 16
    /// The INIT flags a Linux virtio-fs guest typically offers.
    public static let guestInitFlags: FUSEInitFlags = [
        .asyncRead, .posixLocks, .atomicOTrunc, .exportSupport, .bigWrites, .dontMask, .flockLocks,
        .autoInvalData, .doReaddirplus, .readdirplusAuto, .asyncDio, .parallelDirops, .handleKillpriv,
        .posixACL, .abortError, .maxPages, .cacheSymlinks, .explicitInvalData, .submounts, .initExt,
    ]

    public let frontend: VhostUserFrontend
    public let hiprio: FUSEQueueClient
    public let requestQueues: [FUSEQueueClient]
    private let hiprioLock = NSLock()
    public private(set) var initReply: FUSEInitOut?

    /// Connects to `socketPath`, starts the queues, and (unless told not to) sends INIT.
    public convenience init(socketPath: String, configuration: FrontendConfiguration = FrontendConfiguration(),
                            sendInit: Bool = true) throws {
        try self.init(frontend: VhostUserFrontend(socketPath: socketPath, configuration: configuration), sendInit: sendInit)
    }

    public init(frontend: VhostUserFrontend, sendInit: Bool = true) throws {
        self.frontend = frontend
        let c = frontend.configuration
        let indirect = frontend.usesIndirectDescriptors
        hiprio = try FUSEQueueClient(queue: frontend.queues[0], depth: Self.hiprioDepth, dataBufferSize: 0, indirect: indirect)
        requestQueues = try frontend.queues.dropFirst().map {
            try FUSEQueueClient(queue: $0, depth: c.depth, dataBufferSize: c.dataBufferSize, indirect: indirect)
        }
        if sendInit { initReply = try requestQueues[0].initialize() }
    }

    /// The first request queue, for synchronous single-threaded use.
    public var queue: FUSEQueueClient { requestQueues[0] }

    /// FORGET on the hiprio queue. There is no reply; the device returns the buffers with
    /// a used length of 0, and those are reaped here. Safe from any thread.
    public func forget(nodeID: UInt64, nlookup: UInt64) throws {
        hiprioLock.lock(); defer { hiprioLock.unlock() }
        hiprio.reap { _ in }
        while hiprio.freeSlotCount == 0 { try hiprio.waitAndReap { _ in } }
        _ = hiprio.submit(opcode: .forget, nodeID: nodeID, argument: FUSEForgetIn(nlookup: nlookup), expectsReply: false)
    }

    /// Waits until every FORGET posted so far has been consumed. Returns the used
    /// lengths the device reported for them (0 each, for a correct device).
    @discardableResult
    public func drainHiprio(timeoutMilliseconds: Int32 = 10_000) throws -> [UInt32] {
        hiprioLock.lock(); defer { hiprioLock.unlock() }
        var lengths: [UInt32] = []
        hiprio.reap { lengths.append($0.usedLength) }
        while hiprio.inFlight > 0 { try hiprio.waitAndReap(timeoutMilliseconds: timeoutMilliseconds) { lengths.append($0.usedLength) } }
        return lengths
    }
}
