import FerryCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The single-writer lease: an exclusive RADOS lock on `ferry.super` that expires unless
/// renewed. Holding it is what makes the server's caches authoritative.
/// @unchecked Sendable: the held/lost state is a Mutex; `fencing` is set in init; `onTick` and `threads` are
/// set and joined by the owner's `start`/`stop`, before and after the renewing threads run.
public final class Lease: @unchecked Sendable {
    let pool: RADOSPool
    public let seconds: Int
    let cookie: String
    private let state = Mutex(State())
    private var threads: [pthread_t] = []
    /// Runs every third of the lease's duration on a thread of its own (the driver writes
    /// back dirty inodes).
    var onTick: (@Sendable () -> Void)?

    struct State { var held = false; var lost = false; var stopping = false; var lastRenewal = 0.0 }

    /// Takes the lease or throws saying who holds it.
    public init(pool: RADOSPool, seconds: Int = 30, purpose: String) throws(RADOSError) {
        self.pool = pool
        self.seconds = max(3, seconds)
        let host = hostName()
        cookie = "ferry.\(host).\(getpid()).\(pool.instanceID)"
        let rc = pool.lockExclusive(Layout.superObject, name: Layout.leaseName, cookie: cookie,
                                    description: "\(purpose) pid \(getpid()) on \(host)",
                                    seconds: self.seconds, renew: false)
        if rc == -EBUSY || rc == -EEXIST {
            let holder = pool.lockOwner(Layout.superObject, name: Layout.leaseName).map { "\($0.client) at \($0.address)" } ?? "another client"
            throw RADOSError(EBUSY, explanation: "\(pool.target) is being served by another ferry (\(holder) holds the lease; "
                + "it expires \(self.seconds) s after its holder stops renewing it). Serve it read-only with --readonly, "
                + "or wait for the holder to stop")
        }
        if rc < 0 { throw RADOSError(-rc, "taking the lease on \(pool.target)") }
        state.withLock { $0.held = true }
        fencing = fencePreviousHolder()
    }

    /// What taking the lease did about the previous holder, for the log.
    public private(set) var fencing: String?

    /// The previous holder's lease expired or was broken, but it may still be alive (paused,
    /// partitioned) with ops in flight: blocklist its address on the OSDs before this holder
    /// writes anything, as RBD's exclusive lock does. Then record our own address for the
    /// next holder. A holder that stops cleanly removes its address.
    private func fencePreviousHolder() -> String? {
        var message: String?
        let own = pool.address ?? ""
        if case .success(let previous?) = pool.xattr(Layout.superObject, Layout.holderXattr) {
            let address = String(decoding: previous, as: UTF8.self)
            if !address.isEmpty && address != own {
                let rc = pool.blocklist(address, seconds: 3600)
                message = rc == 0
                    ? "fenced the previous holder \(address) (blocklisted for an hour)"
                    : "could not blocklist the previous holder \(address): \(String(cString: strerror(-rc)))"
            }
        }
        let value = Array(own.utf8)
        _ = pool.write(Layout.superObject) { op in op.setxattr(Layout.holderXattr, value) }
        return message
    }

    /// Starts renewing every third of the lease's duration, and calling `onTick` as often
    /// on a thread of its own: a write-back that takes long (thousands of dirty inodes on a
    /// loaded cluster) must not delay the renewal past the lease's end.
    public func startRenewing() {
        let interval = max(1, seconds / 3)
        state.withLock { $0.lastRenewal = monotonicSeconds() }
        threads.append(repeating(every: interval) { [self] in
            let rc = pool.lockExclusive(Layout.superObject, name: Layout.leaseName, cookie: cookie,
                                        description: "ferry", seconds: seconds, renew: true)
            let now = monotonicSeconds()
            state.withLock { s in
                // Failed, or too late: someone else may hold it now; stop writing rather than race them.
                if rc < 0 || now - s.lastRenewal >= Double(seconds) { s.lost = true } else { s.lastRenewal = now }
            }
        })
        if let onTick { threads.append(repeating(every: interval, onTick)) }
    }

    /// A thread that runs `body` every `interval` seconds until the lease is released.
    private func repeating(every interval: Int, _ body: @escaping @Sendable () -> Void) -> pthread_t {
        final class Loop: Sendable {
            let lease: Lease, interval: Int, body: @Sendable () -> Void
            init(_ lease: Lease, _ interval: Int, _ body: @escaping @Sendable () -> Void) { self.lease = lease; self.interval = interval; self.body = body }
        }
        let box = Unmanaged.passRetained(Loop(self, interval, body))
        var t = pthread_t()
        pthread_create(&t, nil, { raw in
            let loop = Unmanaged<Loop>.fromOpaque(raw!).takeRetainedValue()
            while true {
                for _ in 0..<(loop.interval * 10) {
                    if loop.lease.state.withLock({ $0.stopping }) { return nil }
                    usleep(100_000)
                }
                loop.body()
            }
        }, box.toOpaque())
        return t
    }

    /// False once a renewal failed or came too late.
    public var isValid: Bool { state.withLock { $0.held && !$0.lost } }

    /// Stops renewing and gives the lease back.
    public func release() {
        let wasHeld = state.withLock { s -> Bool in
            s.stopping = true
            defer { s.held = false }
            return s.held
        }
        for thread in threads { pthread_join(thread, nil) }
        threads.removeAll()
        if wasHeld && isStillOurs() {
            _ = pool.write(Layout.superObject) { op in op.rmxattr(Layout.holderXattr) }
            _ = pool.unlock(Layout.superObject, name: Layout.leaseName, cookie: cookie)
        }
    }

    /// Whether the lock still carries our cookie (a lost lease may be someone else's now).
    private func isStillOurs() -> Bool {
        pool.lockOwner(Layout.superObject, name: Layout.leaseName)?.cookie == cookie
    }

    /// Breaks the lease of a holder the operator says is dead (fsck --break-lease).
    public static func breakLease(_ pool: RADOSPool) -> Bool {
        guard let owner = pool.lockOwner(Layout.superObject, name: Layout.leaseName) else { return false }
        return pool.breakLock(Layout.superObject, name: Layout.leaseName, client: owner.client, cookie: owner.cookie) == 0
    }
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
