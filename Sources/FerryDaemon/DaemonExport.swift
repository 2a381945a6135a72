import CFerry
import FerryBackend
import FerryConfig
import FerryCore
import FerryRADOSBackend
import FerrySandbox
import FerryVhostUser
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One export inside `ferry serve`: its backend and server core, its vhost-user socket, and
/// the thread that accepts the VMM on it. The back-end's queue threads are this export's
/// own, so a slow backend here never holds up another export's requests.
final class DaemonExport: @unchecked Sendable {
    // @unchecked: `thread` is the one field outside a Mutex or Atomic; it is set by `start`
    // and cleared by `stop`, which the Daemon calls under its own lock, one at a time.
    let tenant: String
    let config: ExportConfig
    /// What a reload compares (`ExportIdentity`).
    let identity: ExportIdentity
    let logger: Logger

    private struct Running {
        var served: (any ServedExport)?
        var backend: VhostUserFSBackend?
        /// Why the export is not serving, when it could not start.
        var failure: String?
        var stopRequested = false
        /// `[export.migration]` as last configured: a reload may change it in place.
        var migration: MigrationOptions
    }
    private let running: Mutex<Running>
    /// Opens the backend, then accepts the VMM on the socket, until `stop()`.
    private var thread: pthread_t?

    var key: String { "\(tenant)/\(config.name)" }

    static let firstRetryDelay: UInt64 = 15
    static let longestRetryDelay: UInt64 = 300
    /// Seconds before a failed start is tried again, and when that is (monotonic seconds).
    private let retryDelay: UInt64
    private let retryAt = Atomic<UInt64>(0)

    /// The daemon's private root, if it runs in one: what this export may use.
    private let root: PrivateRoot?

    init(tenant: String, config: ExportConfig, root: PrivateRoot? = nil, logger: Logger,
         retryDelay: UInt64 = DaemonExport.firstRetryDelay) {
        self.retryDelay = retryDelay
        self.root = root
        self.tenant = tenant
        self.config = config
        self.identity = ExportIdentity(config)
        running = Mutex(Running(migration: config.migration))
        var logger = logger
        logger[metadataKey: "tenant"] = "\(tenant)"
        logger[metadataKey: "export"] = "\(config.name)"
        self.logger = logger
    }

    var served: (any ServedExport)? { running.withLock { $0.served } }
    var failure: String? { running.withLock { $0.failure } }

    /// Starts the export on a thread of its own: opening a backend can take as long as its
    /// server takes to answer (or to time out), and must never hold up the daemon or the
    /// other exports. A failure leaves the export in `error` and is logged.
    func start() {
        thread = startThread { [self] in openAndServe() }
    }

    private func openAndServe() {
        // Added by a reload, but the sandbox's root (built at start) does not show it: a
        // retry would find the same, so there is none.
        if let problem = root?.problem(serving: config) {
            fail(problem, retry: false)
            return
        }
        let served: any ServedExport
        do {
            // A RADOS namespace another daemon holds: this export may be a live migration's
            // destination, which waits as a standby and takes the lease with the guest's
            // state (docs/migration.md), as `ferry virtiofsd` does.
            served = try openExport(config.backend, policy: config.policy, trustClientPermissions: config.idMap.isIdentity,
                                    logger: logger, migrationStandby: true)
        } catch {
            fail("cannot open the backend: \(error)")
            return
        }
        // Removed or changed while the backend was opening: the socket may belong to a
        // newer export by now, so do not touch it.
        if running.withLock({ $0.stopRequested }) {
            served.shutdown()
            return
        }
        let backend: VhostUserFSBackend
        do {
            try createParentDirectory(of: config.socket)
            var options = VhostUserFSOptions(maxRequestQueues: config.queues, threadPoolSize: config.requestThreads,
                                             maxWrite: config.maxWrite)
            options.migration = running.withLock { $0.migration }
            backend = try VhostUserFSBackend(socketPath: config.socket, handler: served, options: options, logger: logger)
        } catch {
            served.shutdown()
            fail("cannot listen on \(config.socket): \(error)")
            return
        }
        let stopRequested = running.withLock { r in
            if !r.stopRequested {
                r.served = served; r.backend = backend
                // A reload may have changed them while the backend opened.
                backend.migrationOptions = r.migration
            }
            return r.stopRequested
        }
        if stopRequested {
            // Stopped while opening: run() returns at once and removes the socket.
            backend.stop()
            backend.run()
            served.shutdown()
            return
        }
        logger.info("export serving", metadata: [
            "tag": "\(config.tag)", "socket": "\(config.socket)", "backend": "\(config.backend.kind) \(config.backend.summary)",
            "queues": "\(config.queues)", "threads_per_queue": "\(config.requestThreads)",
        ])
        backend.run()
    }

    /// Stops accepting, lets the requests in flight finish, closes the guest's connection
    /// and releases the backend. An export whose backend is still being opened (a server
    /// that does not answer) is not waited for: its thread sees the request when the open
    /// returns, releases what it opened and ends by itself.
    func stop() {
        let (backend, opening) = running.withLock { r -> (VhostUserFSBackend?, Bool) in
            r.stopRequested = true
            return (r.backend, r.backend == nil && r.failure == nil)
        }
        if opening {
            if let thread { pthread_detach(thread) }
            thread = nil
            logger.info("export stopped while its backend was still opening")
            return
        }
        backend?.stop()
        if let thread { pthread_join(thread, nil) }
        let served = running.withLock { r -> (any ServedExport)? in
            defer { r.served = nil; r.backend = nil }
            return r.served
        }
        served?.shutdown()
        thread = nil
        logger.info("export stopped")
    }

    private func fail(_ why: String, retry: Bool = true) {
        running.withLock { $0.failure = why }
        retryAt.store(retry ? ferry_monotonic_ns() / 1_000_000_000 + retryDelay : .max, ordering: .relaxed)
        logger.error("export not serving", metadata: ["reason": "\(why)", "retry-in": "\(retry ? "\(retryDelay)s" : "never")"])
    }

    /// `[export.migration]` changed by a reload: the next state transfer uses `options`.
    /// The guest's connection, its session and a transfer under way are left alone.
    func updateMigration(_ options: MigrationOptions) {
        running.withLock { r in
            r.migration = options
            r.backend?.migrationOptions = options
        }
        logger.info("export migration options changed in place", metadata: [
            "mode": "\(options.mode.rawValue)", "on_error": "\(options.onError.rawValue)",
            "verify_handles": "\(options.verifyHandles)", "confirm_paths": "\(options.confirmPaths)",
        ])
    }

    var migration: MigrationOptions { running.withLock { $0.migration } }

    func retryDue() -> Bool { ferry_monotonic_ns() / 1_000_000_000 >= retryAt.load(ordering: .relaxed) }
    var nextRetryDelay: UInt64 { min(retryDelay * 2, Self.longestRetryDelay) }

    var state: ExportState {
        let (failure, backend, stopped) = running.withLock { ($0.failure, $0.backend, $0.stopRequested) }
        if let failure { return .error(failure) }
        guard let backend else { return stopped ? .stopped : .starting }
        switch backend.state {
        case .listening: return .listening
        case .connected: return .guestConnected
        case .broken(let why): return .error("guest broke the virtqueue rules (\(why)); waiting for a device reset")
        case .stopped: return .stopped
        }
    }

    /// Where the guest's device is in a live migration; nil when none is under way (or no
    /// guest is connected).
    var migrationState: ExportMigrationState? {
        guard let backend = running.withLock({ $0.backend }), backend.state == .connected else { return nil }
        return ExportMigrationState(backend.migrationStatus)
    }

    /// What `exports list/show` and the metrics endpoint report.
    func status(withOperations: Bool) -> ExportStatus {
        var status = ExportStatus(tenant: tenant, export: config.name, state: state)
        status.migration = migrationState
        if let served {
            status.lease = (served as? any LeasedExport)?.lease
            let snapshot = served.statistics.snapshot()
            status.counters = LiveCounters(
                operations: snapshot.requests, errors: snapshot.errors, bytesRead: snapshot.bytesRead,
                bytesWritten: snapshot.bytesWritten, openFiles: UInt64(served.openHandleCount),
                inodes: UInt64(served.nodeCount), throttledRequests: snapshot.throttledRequests,
                throttledSeconds: Double(snapshot.throttledNanoseconds) / 1e9, quotaRefusals: snapshot.quotaRefusals,
                malformedRequests: snapshot.malformedRequests,
                quotaBytesUsed: served.quota?.bytesUsed, quotaInodesUsed: served.quota?.inodesUsed,
                backend: served.backendCounters)
            if withOperations { status.operations = snapshot.operations }
        }
        return status
    }
}

/// The live state of one export, as the daemon reports it over the control socket.
public struct ExportStatus: Codable, Equatable {
    public var tenant: String
    public var export: String
    public var state: ExportState
    /// Set while the guest is being live-migrated (`ExportMigrationState`).
    public var migration: ExportMigrationState?
    /// A RADOS export's part in its namespace's lease (writer, standby...).
    public var lease: ExportLease?
    public var counters: LiveCounters?
    public var operations: [ExportStatistics.OperationCounters]?
}

public struct LiveCounters: Codable, Equatable {
    public var operations: UInt64
    public var errors: UInt64
    public var bytesRead: UInt64
    public var bytesWritten: UInt64
    public var openFiles: UInt64
    public var inodes: UInt64
    public var throttledRequests: UInt64
    public var throttledSeconds: Double
    public var quotaRefusals: UInt64
    public var malformedRequests: UInt64
    public var quotaBytesUsed: UInt64?
    public var quotaInodesUsed: UInt64?
    public var backend: [BackendCounter]
}

/// `mkdir -p` of a socket's directory (0755), as for /run/ferry.
func createParentDirectory(of path: String) throws(CLIError) {
    guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return }
    let parent = String(path[..<slash])
    var st = stat()
    if stat(parent, &st) == 0 {
        guard st.st_mode & S_IFMT == S_IFDIR else { throw CLIError("\(parent) is not a directory") }
        return
    }
    try createParentDirectory(of: parent)
    if mkdir(parent, 0o755) != 0 && errno != EEXIST {
        throw CLIError("cannot create \(parent): \(String(cString: strerror(errno)))")
    }
}
