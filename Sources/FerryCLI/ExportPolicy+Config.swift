import FerryConfig
import FerryCore
import FerryPOSIX

extension ExportConfig {
    /// What the server core enforces for this export.
    var policy: ExportPolicy {
        var policy = ExportPolicy(
            cache: cache, xattr: xattr, readOnly: readOnly,
            maxNodes: limits.inodes.map { Int(clamping: $0) } ?? 1_000_000,
            maxOpenHandles: limits.openFiles.map { Int(clamping: $0) } ?? 65_536,
            maxWrite: maxWrite, allowMmap: allowMmap)
        policy.idMap = idMap
        policy.quota = QuotaLimits(bytes: quota.bytes, inodes: quota.inodes)
        policy.qos = QoSLimits(iops: qos.iops, bytesPerSecond: qos.bandwidth)
        return policy
    }

    /// Threads each request queue hands its requests to (0: the queue's own thread runs
    /// them, one at a time): `threads_per_queue`, or what suits the backend.
    var requestThreads: Int { threadsPerQueue ?? Source(backend: backend).defaultRequestThreads }

    /// Requests one export serves at once: one per queue, or one per thread of each queue.
    var requestsInFlight: Int { max(queues, 1) * max(requestThreads, 1) }

    /// Each request being served reads and writes guest memory directly, so what the host
    /// holds in flight is at most one WRITE or READ payload per request in flight:
    /// `inflight_bytes` caps it by lowering the largest payload the guest may send.
    var maxWrite: UInt32 {
        let ceiling: UInt64 = 1 << 20
        guard let budget = limits.inflightBytes else { return UInt32(ceiling) }
        let perRequest = budget / UInt64(requestsInFlight)
        return UInt32(max(4096, min(ceiling, perRequest & ~4095)))
    }

    var idMap: IDMap { idMapping }

    /// With ids mapped or squashed the guest's identity is no longer the host's, so the
    /// host re-checks permissions as the mapped caller rather than trusting the guest kernel.
    var posixOptions: POSIXOptions {
        POSIXOptions(readOnly: readOnly, trustClientPermissions: idMap.isIdentity)
    }

    /// Everything that makes an export what it is, to tell on reload whether it changed
    /// (where it was written does not count). `[export.migration]` is left out: it is read
    /// only when a migration's state moves, so a reload changes it in place
    /// (`DaemonExport.updateMigration`) instead of restarting the export under its guest.
    var fingerprint: String {
        [tag, socket, "\(queues)", "\(requestThreads)", "\(readOnly)", cache.rawValue, "\(allowMmap)", "\(xattr)", "\(idMapping)", "\(limits)",
         "\(quota)", "\(qos)", "\(backend)"].joined(separator: "\u{1F}")
    }
}
