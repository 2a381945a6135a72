import FerryConfig
import FerryCore
import FerrySandbox
import Logging
import Synchronization

/// `ferry serve`'s state: the configuration in force and one `DaemonExport` per export of
/// every tenant. Reloads and reports are serialised by one lock; requests never take it.
public final class Daemon: Sendable {
    private struct State {
        var configuration: Configuration
        var exports: [String: DaemonExport] = [:]
        var order: [String] = []
    }

    public let directory: String
    /// The sandbox's private root, when the daemon pivoted into one: what a reload can add.
    public let root: PrivateRoot?
    public let logger: Logger
    private let state: Mutex<State>

    public init(configuration: Configuration, root: PrivateRoot? = nil, logger: Logger) {
        directory = configuration.directory
        self.root = root
        self.logger = logger
        state = Mutex(State(configuration: configuration))
    }

    public var configuration: Configuration { state.withLock { $0.configuration } }

    /// Starts every configured export.
    public func start() {
        state.withLock { s in
            for (tenant, export) in s.configuration.exports {
                let running = DaemonExport(tenant: tenant.name, config: export, root: root, logger: logger)
                running.start()
                s.exports[running.key] = running
                s.order.append(running.key)
            }
        }
    }

    /// What a reload did.
    public struct ReloadOutcome: Codable, Equatable {
        public var accepted: Bool
        /// Every problem of a rejected configuration, as check-config prints them.
        public var problems: [String] = []
        public var added: [String] = []
        public var changed: [String] = []
        public var removed: [String] = []
        /// Unchanged exports that were in error and were started again.
        public var retried: [String] = []
        /// Exports changed in place, their guests untouched: only `[export.migration]` changed.
        public var updated: [String] = []
        public var unchanged: [String] = []
    }

    /// Reads the configuration directory again. A configuration with any problem is
    /// rejected whole and the running one stays; otherwise exports that are new start,
    /// removed ones stop (after their in-flight requests), changed ones restart, and every
    /// other export, with its guest, is left alone. `[export.migration]` is not part of what
    /// restarts an export (its `ExportIdentity`): it is changed in place, for the next migration.
    public func reload() -> ReloadOutcome {
        state.withLock { s in
            let loaded: Configuration
            // What the sandbox's root does not show cannot be checked from in here: such an
            // export is accepted, and its start says why it cannot be served.
            let root = self.root
            switch ConfigLoader.load(directory: directory, unverifiable: { path in root.map { !$0.shows(path) } ?? false }) {
            case .failure(let problems):
                logger.error("reload rejected: the configuration has problems; the running one stays in force",
                             metadata: ["problems": "\(problems.problems.count)"])
                for problem in problems.problems { logger.error("\(problem)") }
                return ReloadOutcome(accepted: false, problems: problems.problems.map(\.description))
            case .success(let configuration):
                loaded = configuration
            }
            var outcome = ReloadOutcome(accepted: true)
            let wanted = loaded.exports.map { (key: "\($0.tenant.name)/\($0.export.name)", tenant: $0.tenant.name, export: $0.export) }
            let wantedKeys = Set(wanted.map(\.key))
            // Stop removed and changed exports first: a changed one may keep its socket path,
            // and a new one may take over a removed one's.
            for key in s.order where !wantedKeys.contains(key) {
                s.exports[key]?.stop()
                s.exports[key] = nil
                outcome.removed.append(key)
            }
            var restart: Set<String> = []
            var retry: Set<String> = []
            for w in wanted {
                guard let running = s.exports[w.key] else { continue }
                if running.identity != ExportIdentity(w.export) {
                    running.stop()
                    restart.insert(w.key)
                } else if running.failure != nil {
                    running.stop()
                    retry.insert(w.key)
                }
            }
            var order: [String] = []
            for w in wanted {
                order.append(w.key)
                if let running = s.exports[w.key], !restart.contains(w.key), !retry.contains(w.key) {
                    if running.migration != w.export.migration {
                        running.updateMigration(w.export.migration)
                        outcome.updated.append(w.key)
                    } else {
                        outcome.unchanged.append(w.key)
                    }
                    continue
                }
                let fresh = DaemonExport(tenant: w.tenant, config: w.export, root: root, logger: logger)
                fresh.start()
                if s.exports[w.key] == nil {
                    outcome.added.append(w.key)
                } else if retry.contains(w.key) {
                    outcome.retried.append(w.key)
                } else {
                    outcome.changed.append(w.key)
                }
                s.exports[w.key] = fresh
            }
            s.order = order
            if loaded.daemon.controlSocket != s.configuration.daemon.controlSocket
                || loaded.daemon.metricsAddress != s.configuration.daemon.metricsAddress {
                logger.warning("control_socket and metrics changes take effect when the daemon restarts")
            }
            s.configuration = loaded
            logger.info("configuration reloaded", metadata: [
                "added": "\(outcome.added)", "changed": "\(outcome.changed)", "removed": "\(outcome.removed)",
                "updated": "\(outcome.updated)",
                "unchanged": "\(outcome.unchanged.count)",
            ])
            return outcome
        }
    }

    /// Starts again every export whose backend could not be opened, once its back-off
    /// (15 s, doubling up to 5 min) has passed: an NFS server or Ceph cluster that comes
    /// back is served without an operator's reload.
    public func retryFailed() {
        state.withLock { s in
            for key in s.order {
                guard let running = s.exports[key], running.failure != nil, running.retryDue() else { continue }
                running.stop()   // its thread has ended: this only joins it
                let fresh = DaemonExport(tenant: running.tenant, config: running.config, root: root, logger: logger, retryDelay: running.nextRetryDelay)
                logger.info("retrying an export in error", metadata: ["export": "\(key)"])
                fresh.start()
                s.exports[key] = fresh
            }
        }
    }

    /// Stops every export, draining each; used on SIGTERM.
    public func stop() {
        state.withLock { s in
            for key in s.order { s.exports[key]?.stop() }
            s.exports = [:]
            s.order = []
        }
    }

    /// The status of every export (of one tenant), in configuration order. Read outside the
    /// daemon's lock: a RADOS standby asks its cluster who holds the lease, and a cluster
    /// that is slow to answer must not hold up a reload or the other exports' reports.
    public func statuses(tenant: String? = nil, withOperations: Bool = false) -> [ExportStatus] {
        let exports = state.withLock { s in
            s.order.compactMap { s.exports[$0] }.filter { tenant == nil || $0.tenant == tenant }
        }
        return exports.map { $0.status(withOperations: withOperations) }
    }
}
