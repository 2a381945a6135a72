import CFerry
import FerrySystem
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Per-export QoS: requests per second and bytes per second.
public struct QoSLimits: Sendable, Equatable {
    public var iops: UInt64?
    public var bytesPerSecond: UInt64?
    public init(iops: UInt64? = nil, bytesPerSecond: UInt64? = nil) { self.iops = iops; self.bytesPerSecond = bytesPerSecond }
    public var isUnlimited: Bool { iops == nil && bytesPerSecond == nil }
}

/// A token bucket that refills at `rate` per second and holds at most one second's worth.
/// A request takes what it needs and, when the bucket is short, sleeps on its own thread
/// until the debt is paid: only that export's queue slows down, never another's.
final class TokenBucket: Sendable {
    private struct State {
        var tokens: Double
        var updated: UInt64
    }
    private let rate: Double
    private let capacity: Double
    private let state: Mutex<State>

    init(rate: UInt64) {
        self.rate = Double(rate)
        self.capacity = Double(rate)
        state = Mutex(State(tokens: Double(rate), updated: ferry_monotonic_ns()))
    }

    /// Takes `amount` tokens (going into debt if need be) and answers how long the caller
    /// must wait for the bucket to be back at zero, in nanoseconds.
    func take(_ amount: Double) -> UInt64 {
        state.withLock { s in
            let now = ferry_monotonic_ns()
            let elapsed = Double(now &- s.updated) / 1e9
            s.tokens = min(capacity, s.tokens + elapsed * rate)
            s.updated = now
            s.tokens -= amount
            return s.tokens >= 0 ? 0 : UInt64(-s.tokens / rate * 1e9)
        }
    }
}

/// The QoS of one export: every request takes one operation token, READ and WRITE also
/// their size in bytes.
public final class Throttle: Sendable {
    public let limits: QoSLimits
    private let operations: TokenBucket?
    private let bytes: TokenBucket?

    public init(limits: QoSLimits) {
        self.limits = limits
        operations = limits.iops.map { TokenBucket(rate: max($0, 1)) }
        bytes = limits.bytesPerSecond.map { TokenBucket(rate: max($0, 1)) }
    }

    /// Waits until the request may run; answers how long it waited, in nanoseconds.
    func admit(bytes count: Int) -> UInt64 {
        var wait: UInt64 = 0
        if let operations { wait = operations.take(1) }
        if let bytes, count > 0 { wait = max(wait, bytes.take(Double(count))) }
        if wait > 0 {
            var time = timespec(tv_sec: Int(wait / 1_000_000_000), tv_nsec: Int(wait % 1_000_000_000))
            var left = timespec()
            _ = try? systemCall {
                defer { time = left }   // an interrupted sleep goes on for what is left of it
                return nanosleep(&time, &left)
            }
        }
        return wait
    }
}
