import CFerry
import FerryCore
import FerryVirtio
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One virtqueue of the device and its worker thread.
///
/// Configuration (`size`, `address`, `base`, fds) is changed by the control thread: while
/// the worker is stopped, or under the device's write lock. The worker reads it only under
/// the read lock. `lastAvail`, `usedIndex` and the signalling state belong to the worker
/// while it runs, and to the control thread once it has joined it.
/// @unchecked Sendable: the ownership rules above: configuration under the device's write lock or while the
/// worker is stopped, ring progress by the worker alone (or after join), `usedLock` in pool mode.
final class Virtqueue: @unchecked Sendable {
    let index: Int
    var size: UInt16 = 0
    var address: VringAddress?
    /// Where the used ring is logged (SET_VRING_ADDR's log address with VHOST_VRING_F_LOG),
    /// nil when the front-end did not ask for ring logging.
    var usedLogAddress: UInt64?
    var ring: RingView?
    var base: UInt16 = 0
    var kickFD: Int32 = -1
    var callFD: Int32 = -1
    var errFD: Int32 = -1
    let enabled = Atomic<Bool>(false)
    let stopRequested = Atomic<Bool>(false)
    /// Wakes the worker: stop requested, or the ring was enabled.
    let wakeFD: Int32
    var thread: pthread_t?
    /// Pool mode (`threadPoolSize > 0`): the heads handed to the pool, the pool's threads,
    /// and the lock that serializes used-ring pushes and notifications.
    var work: HeadQueue?
    var poolThreads: [pthread_t] = []
    let usedLock = PlainMutex()

    /// Changes whenever the ring stops for good (GET_VRING_BASE, a reset, a new connection):
    /// a deferred reply from before belongs to a ring that is gone and is dropped.
    let generation = Atomic<UInt64>(0)
    /// Deferred replies waiting for the worker to put their chains in the used ring: only
    /// the worker touches the ring, and it checks the guest's buffers again when it does.
    let completions = Mutex<[DeferredCompletion]>([])
    /// `completions` is not empty (read by the worker without taking the lock).
    let hasCompletions = Atomic<Bool>(false)
    /// The chains whose replies are deferred (head → request unique): out of the used ring
    /// until their reply comes, or until the ring stops (`settleDeferred`).
    let deferredHeads = Mutex<[UInt16: UInt64]>([:])

    // Worker state.
    var lastAvail: UInt16 = 0
    var usedIndex: UInt16 = 0
    var signalledUsed: UInt16 = 0
    var signalledUsedValid = false

    init(index: Int) {
        self.index = index
        wakeFD = ferry_eventfd(0, Int32(FERRY_EFD_CLOEXEC | FERRY_EFD_NONBLOCK))
        precondition(wakeFD >= 0, "eventfd failed: \(errno)")
    }

    deinit {
        closeDescriptors()
        close(wakeFD)
    }

    var isRunning: Bool { thread != nil }

    func wake() {
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    func closeDescriptors() {
        if kickFD >= 0 { close(kickFD); kickFD = -1 }
        if callFD >= 0 { close(callFD); callFD = -1 }
        if errFD >= 0 { close(errFD); errFD = -1 }
    }

    /// Back to the state of a new connection (worker already stopped).
    func resetConfiguration() {
        closeDescriptors()
        size = 0; address = nil; ring = nil; base = 0; usedLogAddress = nil
        enabled.store(false, ordering: .relaxed)
        lastAvail = 0; usedIndex = 0; signalledUsedValid = false
    }
}

/// One reply that was deferred (a waiting lock) and is now ready.
struct DeferredCompletion {
    let head: UInt16
    let generation: UInt64
    let reply: [UInt8]
}

/// The sink a deferred request's reply goes to: hands it to the queue's worker, which
/// completes the chain; dropped when the queue stopped since.
final class DeferredChainReply: DeferredReply {
    let queue: Virtqueue
    let head: UInt16
    let generation: UInt64

    init(queue: Virtqueue, head: UInt16, generation: UInt64) {
        self.queue = queue; self.head = head; self.generation = generation
    }

    func send(_ reply: UnsafeRawBufferPointer) {
        guard queue.generation.load(ordering: .acquiring) == generation else { return }
        let completion = DeferredCompletion(head: head, generation: generation, reply: Array(reply))
        queue.completions.withLock { $0.append(completion) }
        queue.hasCompletions.store(true, ordering: .releasing)
        queue.wake()
    }
}

/// Signals an eventfd; ignores a full counter (EAGAIN) and a closed fd.
@inline(__always)
func signalEventFD(_ fd: Int32) {
    guard fd >= 0 else { return }
    var one: UInt64 = 1
    _ = write(fd, &one, 8)
}

/// A bounded FIFO of chain heads from a queue's thread to its pool threads. Its capacity
/// is the ring size, which bounds the chains in flight, so `push` never waits (the queue
/// thread must not block while it holds the device's read lock).
/// @unchecked Sendable: `head`, `count`, `closed` and the slots are only touched with `mutex` held.
final class HeadQueue: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let slots: UnsafeMutablePointer<UInt16>
    private let capacity: Int
    private var head = 0, count = 0
    private var closed = false

    init(capacity: Int) {
        self.capacity = capacity
        slots = .allocate(capacity: capacity)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex); pthread_cond_destroy(condition)
        mutex.deallocate(); condition.deallocate(); slots.deallocate()
    }

    /// False if full (a driver with more chains in flight than the ring holds: broken).
    func push(_ value: UInt16) -> Bool {
        pthread_mutex_lock(mutex); defer { pthread_mutex_unlock(mutex) }
        guard count < capacity else { return false }
        slots[(head + count) % capacity] = value
        count += 1
        pthread_cond_signal(condition)
        return true
    }

    /// The next head; nil once closed and empty.
    func pop() -> UInt16? {
        pthread_mutex_lock(mutex); defer { pthread_mutex_unlock(mutex) }
        while count == 0 && !closed { pthread_cond_wait(condition, mutex) }
        guard count > 0 else { return nil }
        let v = slots[head]
        head = (head + 1) % capacity; count -= 1
        return v
    }

    /// Pool threads finish what is queued, then `pop` returns nil.
    func close() {
        pthread_mutex_lock(mutex); closed = true
        pthread_cond_broadcast(condition); pthread_mutex_unlock(mutex)
    }
}

/// A plain pthread mutex (the used ring's lock in pool mode).
/// @unchecked Sendable: a pthread mutex is made to be shared between threads; the pointer never changes.
final class PlainMutex: @unchecked Sendable {
    private let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    init() { pthread_mutex_init(m, nil) }
    deinit { pthread_mutex_destroy(m); m.deallocate() }
    @inline(__always) func lock() { pthread_mutex_lock(m) }
    @inline(__always) func unlock() { pthread_mutex_unlock(m) }
}
