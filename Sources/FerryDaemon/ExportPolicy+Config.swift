import FerryConfig
import FerryCore

extension ExportConfig {
    /// What the server core enforces for this export.
    public var policy: ExportPolicy {
        var policy = ExportPolicy(
            cache: cache, xattr: xattr, readOnly: readOnly,
            maxNodes: limits.inodes.map { Int(clamping: $0) } ?? 1_000_000,
            maxOpenHandles: limits.openFiles.map { Int(clamping: $0) } ?? 65_536,
            maxWrite: maxWrite, allowMmap: allowMmap)
        policy.idMap = idMap
        policy.posixLocks = locks
        policy.flockLocks = locks
        policy.quota = QuotaLimits(bytes: quota.bytes, inodes: quota.inodes)
        policy.qos = QoSLimits(iops: qos.iops, bytesPerSecond: qos.bandwidth)
        return policy
    }

    /// Threads each request queue hands its requests to (0: the queue's own thread runs
    /// them, one at a time): `threads_per_queue`, or what suits the backend.
    public var requestThreads: Int { threadsPerQueue ?? backend.defaultRequestThreads }

    /// Requests one export serves at once: one per queue, or one per thread of each queue.
    public var requestsInFlight: Int { max(queues, 1) * max(requestThreads, 1) }

    /// Each request being served reads and writes guest memory directly, so what the host
    /// holds in flight is at most one WRITE or READ payload per request in flight:
    /// `inflight_bytes` caps it by lowering the largest payload the guest may send.
    public var maxWrite: UInt32 {
        let ceiling: UInt64 = 1 << 20
        guard let budget = limits.inflightBytes else { return UInt32(ceiling) }
        let perRequest = budget / UInt64(requestsInFlight)
        return UInt32(max(4096, min(ceiling, perRequest & ~4095)))
    }

    public var idMap: IDMap { idMapping }
}

/// Everything that makes an export what it is, to tell on reload whether it changed: two
/// configurations of an export are the same export when these are equal. Where it was
/// written does not count, nor `[export.migration]`: that is read only when a migration's
/// state moves, so a reload changes it in place (`DaemonExport.updateMigration`) instead of
/// restarting the export under its guest. Threads per queue count as the export would run
/// them (an explicit value equal to the backend's default is no change).
struct ExportIdentity: Equatable {
    /// The configuration with what does not count set to one fixed value: any field added to
    /// `ExportConfig` later counts unless it is cleared here.
    private let served: ExportConfig
    private let requestThreads: Int

    init(_ config: ExportConfig) {
        requestThreads = config.requestThreads
        var served = config
        let nowhere = SourceLocation(file: "", line: 0)
        served.location = nowhere
        served.nameLocation = nowhere
        served.tagLocation = nowhere
        served.socketLocation = nowhere
        served.migration = MigrationOptions()
        served.threadsPerQueue = nil
        self.served = served
    }
}
