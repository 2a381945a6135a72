import Foundation
import Synchronization
import Testing

/// Where tests that boot guests run: a guest run holds its test's thread for minutes, and the
/// pool Swift Testing runs tests on is as wide as the machine has cores (two in CI). With two
/// guest runs on it, nothing else in the process ran; tests caught half-way through (their
/// bodies queued behind the guests) failed their time limits although each took seconds.
///
/// `run` waits (suspended, holding no thread) for one of `width` slots, then runs the body on
/// threads of its own, so the pool stays free for every other test. The slots keep as many
/// guests at once as before.
public enum GuestSlots {
    /// Two, as the pool allowed before: more TCG guests at once on two cores only slow each.
    public static let width = 2

    private static let slots = Slots(width: width)

    /// `minutes` replaces the test's `.timeLimit` trait, which would also count the wait for a
    /// slot: it counts from when the slot is taken, and a body still running then is an issue.
    public static func run<T>(minutes: Int, _ body: () async throws -> T) async throws -> T {
        try await slots.run(limit: .seconds(60 * minutes), body)
    }
}

/// `width` slots; `run` waits for one (suspended), then runs its body on threads of its own
/// and records an issue if the body still runs `limit` after it started.
public final class Slots: Sendable {
    private let free: AsyncSemaphore
    private let threads = ThreadPerJobExecutor()

    public init(width: Int) { free = AsyncSemaphore(width) }

    public func run<T>(limit: Duration, _ body: () async throws -> T) async throws -> T {
        await free.wait()
        defer { free.signal() }
        return try await withTaskExecutorPreference(threads) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    try await Task.sleep(for: limit)
                    Issue.record("still running \(limit) after it got its slot")
                }
                defer { group.cancelAll() }
                return try await body()
            }
        }
    }

    /// How many wait for a slot now.
    public var waiting: Int { free.waiting }
}

/// A task executor that runs each job on a new thread: a test's blocking body, which is one
/// job until its next `await`, never holds a thread of the shared pool.
public final class ThreadPerJobExecutor: TaskExecutor, Sendable {
    public init() {}

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        let thread = Thread { job.runSynchronously(on: executor) }
        thread.stackSize = 8 << 20
        thread.start()
    }
}

/// A counting semaphore whose waiters suspend rather than block a thread; first come, first
/// served.
public final class AsyncSemaphore: Sendable {
    private struct State {
        var available: Int
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state: Mutex<State>

    public init(_ count: Int) { state = Mutex(State(available: count)) }

    public func wait() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let admitted = state.withLock { state in
                guard state.available > 0, state.waiters.isEmpty else {
                    state.waiters.append(waiter)
                    return false
                }
                state.available -= 1
                return true
            }
            if admitted { waiter.resume() }
        }
    }

    public func signal() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.waiters.isEmpty { state.available += 1; return nil }
            return state.waiters.removeFirst()
        }
        next?.resume()
    }

    public var waiting: Int { state.withLock { $0.waiters.count } }
}
