import CFerry
import FerryFUSE
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The waiting record locks (F_SETLKW) of one export. A queue thread never waits for a
/// lock: it tries once, and on a conflict hands the request here with the transport's
/// reply sink. One thread per export (`ferry-lockwait`, started with the first waiter)
/// tries each waiter again with a backoff of 1 ms doubling to 50 ms, and answers it:
/// granted, or the backend's error; INTERRUPT of that request and FLUSH or RELEASE of its
/// open file answer EINTR; the end of the session (DESTROY, a lost connection, the
/// export's stop) answers ENOLCK, as no lock held elsewhere may hold those back.
///
/// Trying again is the backend's own non-waiting attempt (`attempt`), so a lock held by
/// another client of the same storage (another daemon, another guest, the host) is seen as
/// soon as it goes. Attempts run without the lock held (a remote backend's takes a round
/// trip), and whatever ends waits (INTERRUPT, FLUSH, the session's end) first waits for a
/// round of attempts under way: a lock is never granted to a request already answered.
/// @unchecked Sendable: every mutable field is touched only with `mutex` held.
public final class LockWaits: @unchecked Sendable {
    /// One waiting request. `attempt` returns nil when the lock was granted, EAGAIN while it
    /// is still held elsewhere, any other errno as the answer.
    struct Waiter {
        let unique: UInt64
        let fh: UInt64
        let sink: any DeferredReply
        let attempt: () -> Errno?
        var delay: UInt64
        var due: UInt64
    }

    static let firstDelay: UInt64 = 1_000_000
    static let longestDelay: UInt64 = 50_000_000
    /// INTERRUPTs for requests not (yet) waiting, remembered so one that overtook its
    /// request on another queue still ends it. A ring: old ones are forgotten.
    static let rememberedInterrupts = 64

    /// Most waiters at once; one more is answered ENOLCK.
    public let limit: Int
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    /// Signalled when a round of attempts ends.
    private let idle = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var waiters: [Waiter] = [] {
        didSet { waiting.store(waiters.count, ordering: .releasing) }
    }
    /// `waiters.count`, read without the mutex: FLUSH and RELEASE (every close) skip the
    /// mutex when nothing waits, as is almost always so.
    private let waiting = Atomic<Int>(0)
    /// The lock-wait thread is trying waiters (without the mutex).
    private var attempting = false
    private var interrupts: [UInt64]
    private var nextInterrupt = 0
    private var thread: pthread_t?
    private var stopping = false
    /// Waiters granted their lock so far.
    private var granted = 0

    public init(limit: Int = 256) {
        self.limit = limit
        interrupts = Array(repeating: 0, count: Self.rememberedInterrupts)
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
        pthread_cond_init(idle, nil)
    }

    deinit {
        stop()
        pthread_mutex_destroy(mutex); pthread_cond_destroy(condition); pthread_cond_destroy(idle)
        mutex.deallocate(); condition.deallocate(); idle.deallocate()
    }

    @inline(__always) private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex); defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    /// As `locked`, once no attempt is under way: for what answers waiters other than the
    /// lock-wait thread, so none is answered while its lock may be being granted.
    private func lockedIdle<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex); defer { pthread_mutex_unlock(mutex) }
        while attempting { pthread_cond_wait(idle, mutex) }
        return body()
    }

    /// Requests waiting now.
    public var count: Int { locked { waiters.count } }
    /// Waiters granted their lock so far.
    public var grantedCount: Int { locked { granted } }

    /// Takes a request whose first attempt met a conflict. Answers it at once (EINTR) when
    /// its INTERRUPT came first. False when the waiters are at the limit (or the export is
    /// stopping): the caller answers ENOLCK itself, the sink untouched.
    public func add(unique: UInt64, fh: UInt64, sink: any DeferredReply, attempt: @escaping () -> Errno?) -> Bool {
        locked {
            guard !stopping, waiters.count < limit else { return false }
            if let i = interrupts.firstIndex(of: unique), unique != 0 {
                interrupts[i] = 0
                answer(sink, unique, Errno(EINTR))
                return true
            }
            if thread == nil && !startThread() { return false }
            let now = ferry_monotonic_ns()
            waiters.append(Waiter(unique: unique, fh: fh, sink: sink, attempt: attempt,
                                  delay: Self.firstDelay, due: now &+ Self.firstDelay))
            pthread_cond_signal(condition)
            return true
        }
    }

    /// INTERRUPT: the waiter for `unique` is answered EINTR; one not seen yet is remembered.
    public func interrupt(_ unique: UInt64) {
        lockedIdle {
            if let i = waiters.firstIndex(where: { $0.unique == unique }) {
                let w = waiters.remove(at: i)
                answer(w.sink, w.unique, Errno(EINTR))
                return
            }
            guard unique != 0 else { return }
            interrupts[nextInterrupt] = unique
            nextInterrupt = (nextInterrupt + 1) % interrupts.count
        }
    }

    /// FLUSH or RELEASE of open file `fh`: its waiters are answered EINTR (the process closed
    /// the descriptor it waits through, or is gone).
    public func cancel(fh: UInt64) {
        guard waiting.load(ordering: .acquiring) > 0 else { return }
        lockedIdle { removeAll(Errno(EINTR)) { $0.fh == fh } }
    }

    /// The session ended (DESTROY, lost connection): every waiter is answered ENOLCK, and
    /// no INTERRUPT of the old session is remembered.
    public func cancelAll() {
        lockedIdle {
            removeAll(Errno(ENOLCK)) { _ in true }
            for i in interrupts.indices { interrupts[i] = 0 }
        }
    }

    /// The export stops for good: every waiter is answered ENOLCK and the thread ends.
    public func stop() {
        let running: pthread_t? = lockedIdle {
            removeAll(Errno(ENOLCK)) { _ in true }
            stopping = true
            pthread_cond_signal(condition)
            defer { thread = nil }
            return thread
        }
        if let running { pthread_join(running, nil) }
    }

    /// Under `mutex`.
    private func removeAll(_ error: Errno, where matches: (Waiter) -> Bool) {
        var kept: [Waiter] = []
        for w in waiters {
            if matches(w) { answer(w.sink, w.unique, error) } else { kept.append(w) }
        }
        waiters = kept
    }

    /// Under `mutex`, so no answer goes out after the session that asked ended.
    private func answer(_ sink: any DeferredReply, _ unique: UInt64, _ error: Errno?) {
        withUnsafeTemporaryAllocation(byteCount: FUSEOutHeader.size, alignment: 8) { buffer in
            FUSEReply.writeHeader(to: buffer.baseAddress!, length: FUSEOutHeader.size, error: -(error?.rawValue ?? 0), unique: unique)
            sink.send(UnsafeRawBufferPointer(buffer))
        }
    }

    /// Under `mutex`.
    private func startThread() -> Bool {
        // Unretained: `deinit` stops and joins the thread, which never outlives this object.
        let box = Unmanaged.passUnretained(self)
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { raw in
            let waits = Unmanaged<LockWaits>.fromOpaque(raw!).takeUnretainedValue()
            _ = ferry_set_thread_name("ferry-lockwait")
            waits.run()
            return nil
        }, box.toOpaque())
        guard rc == 0 else { return false }
        thread = t
        return true
    }

    private func run() {
        pthread_mutex_lock(mutex); defer { pthread_mutex_unlock(mutex) }
        while !stopping {
            guard let earliest = waiters.map(\.due).min() else {
                pthread_cond_wait(condition, mutex)
                continue
            }
            let now = ferry_monotonic_ns()
            if earliest > now {
                var deadline = timespec()
                clock_gettime(CLOCK_MONOTONIC, &deadline)
                let wake = UInt64(deadline.tv_sec) * 1_000_000_000 + UInt64(deadline.tv_nsec) + (earliest - now)
                deadline.tv_sec = Int(wake / 1_000_000_000); deadline.tv_nsec = Int(wake % 1_000_000_000)
                pthread_cond_timedwait(condition, mutex, &deadline)
                continue
            }
            // The due waiters are tried without the mutex; a waiter added meanwhile is
            // appended after them and kept as it is.
            let due = waiters.filter { $0.due <= now }
            attempting = true
            pthread_mutex_unlock(mutex)
            let results = due.map { $0.attempt() }
            pthread_mutex_lock(mutex)
            attempting = false
            pthread_cond_broadcast(idle)
            var kept: [Waiter] = []
            var tried = 0
            for var w in waiters {
                guard w.due <= now, tried < due.count, due[tried].unique == w.unique else { kept.append(w); continue }
                let result = results[tried]
                tried += 1
                switch result {
                case nil:
                    granted += 1
                    answer(w.sink, w.unique, nil)
                case Errno.again?:
                    w.delay = min(w.delay * 2, Self.longestDelay)
                    w.due = ferry_monotonic_ns() &+ w.delay
                    kept.append(w)
                case let error?:
                    answer(w.sink, w.unique, error)
                }
            }
            waiters = kept
        }
    }
}
