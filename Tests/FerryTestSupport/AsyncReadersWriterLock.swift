import Synchronization

/// A readers-writer lock whose waiters suspend rather than block a thread; a waiting writer
/// goes before readers that come after it.
///
/// Swift Testing runs test bodies on the cooperative thread pool, which is as wide as the
/// machine has cores: two in CI. A test blocked in `pthread_rwlock_wrlock`, waiting for a
/// guest's five-minute run on NFS to end its shared hold, took one of those two threads while
/// the guest run took the other. Every other test in the process then waited: CI saw five
/// silent minutes, and tests that had started before failed their time limits.
public final class AsyncReadersWriterLock: Sendable {
    private struct State {
        var readers = 0
        var writing = false
        var waitingWriters: [CheckedContinuation<Void, Never>] = []
        var waitingReaders: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    public init() {}

    /// How many wait now, readers and writers (for tests of the lock).
    public var waiting: (readers: Int, writers: Int) {
        state.withLock { ($0.waitingReaders.count, $0.waitingWriters.count) }
    }

    /// Waits (suspended) until no writer holds or waits, then holds shared.
    public func lockShared() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let admitted = state.withLock { state in
                guard !state.writing, state.waitingWriters.isEmpty else {
                    state.waitingReaders.append(waiter)
                    return false
                }
                state.readers += 1
                return true
            }
            if admitted { waiter.resume() }
        }
    }

    public func unlockShared() {
        let writer = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.readers -= 1
            guard state.readers == 0, !state.waitingWriters.isEmpty else { return nil }
            state.writing = true
            return state.waitingWriters.removeFirst()
        }
        writer?.resume()
    }

    /// Waits (suspended) until nobody holds, then holds alone.
    public func lockExclusive() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let admitted = state.withLock { state in
                guard !state.writing, state.readers == 0 else {
                    state.waitingWriters.append(waiter)
                    return false
                }
                state.writing = true
                return true
            }
            if admitted { waiter.resume() }
        }
    }

    /// Hands the lock to the next waiting writer, or else to every waiting reader.
    public func unlockExclusive() {
        let (writer, readers) = state.withLock { state -> (CheckedContinuation<Void, Never>?, [CheckedContinuation<Void, Never>]) in
            if !state.waitingWriters.isEmpty { return (state.waitingWriters.removeFirst(), []) }
            state.writing = false
            let readers = state.waitingReaders
            state.waitingReaders = []
            state.readers += readers.count
            return (nil, readers)
        }
        writer?.resume()
        for reader in readers { reader.resume() }
    }

    public func shared<R>(_ body: () async throws -> R) async rethrows -> R {
        await lockShared()
        defer { unlockShared() }
        return try await body()
    }

    public func exclusive<R>(_ body: () async throws -> R) async rethrows -> R {
        await lockExclusive()
        defer { unlockExclusive() }
        return try await body()
    }
}
