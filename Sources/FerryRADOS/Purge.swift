import FerryCore
#if canImport(Glibc)
import Glibc
#endif

/// The purge queue (`ferry.purge`): an inode whose last name goes is queued before the
/// unlink returns, and a worker thread removes its objects in the background, so an unlink
/// costs three ops whatever the file holds. The queue is in RADOS, so a server that
/// crashes leaves it to the next holder of the lease, which resumes it when it starts.
extension RADOSDriver {
    func enqueuePurge(_ inode: RADOSInode) throws(Errno) {
        let key = Layout.purgeKey(inode.ino)
        let rc = pool.write(Layout.purgeObject) { op in op.omapSet([(key, [])]) }
        if rc < 0 {
            logger.error("queueing inode \(inode.ino) for removal: \(RADOSError(-rc, "omap set"))")
            throw radosErrno(rc)
        }
    }

    /// Purges every queued inode that no one has open here; returns how many. The worker
    /// runs it when woken; tests call it to wait for the queue to drain.
    @discardableResult
    public func drainPurges() throws(Errno) -> Int {
        try purgeLock.withLock { () throws(Errno) -> Int in
            // The writer purges; a standby or a server that handed the export over leaves
            // the queue to it.
            guard meta.locked({ lease != nil }) else { return 0 }
            let queued: [UInt64]
            switch RADOSObjectMap.queued(pool) {
            case .failure(let e):
                logger.error("\(e)")
                throw .io
            case .success(let q): queued = q
            }
            var purged = 0
            for ino in queued where try purge(ino) { purged += 1 }
            return purged
        }
    }

    /// Purges `ino` unless it is still open here (its last release wakes the worker again).
    private func purge(_ ino: UInt64) throws(Errno) -> Bool {
        let held = meta.locked { inodes[ino]?.inode }
        // Exclusive on the data, so no write of this server is between its map and its object.
        let body = { () throws(Errno) -> Bool in
            let proceed = try self.meta.withLock { () throws(Errno) -> Bool in
                try self.checkWritable()
                guard let inode = held ?? self.inodes[ino]?.inode else { return true }
                if inode.openCount > 0 { return false }
                inode.removed = true
                self.dirtyInodes[ino] = nil
                self.inodes[ino] = nil
                return true
            }
            if !proceed { return false }
            try RADOSObjectMap.purge(self.pool, ino, check: self.checkWritable)
            return true
        }
        if let held { return try held.dataLock.exclusive(body) }
        return try body()
    }
}

/// The purge worker's thread: sleeps until woken, then drains the queue.
/// @unchecked Sendable: `pending` and `stopping` are touched only with `mutex` held; `thread` only by the
/// driver's start and stop, which never run concurrently.
final class PurgeWorker: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var pending = false, stopping = false
    private var thread: pthread_t?

    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        stop()
        pthread_cond_destroy(condition); condition.deallocate()
        pthread_mutex_destroy(mutex); mutex.deallocate()
    }

    /// Starts the thread; `pass` runs once per wake-up (it holds the driver weakly).
    func start(_ pass: @escaping @Sendable () -> Void) {
        final class Box: Sendable {
            let worker: PurgeWorker, pass: @Sendable () -> Void
            init(_ worker: PurgeWorker, _ pass: @escaping @Sendable () -> Void) { self.worker = worker; self.pass = pass }
        }
        let box = Unmanaged.passRetained(Box(self, pass))
        var t = pthread_t()
        pthread_create(&t, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            while box.worker.next() { box.pass() }
            return nil
        }, box.toOpaque())
        thread = t
    }

    /// Waits for a wake-up; false when stopping.
    private func next() -> Bool {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while !pending && !stopping { pthread_cond_wait(condition, mutex) }
        pending = false
        return !stopping
    }

    func wake() {
        pthread_mutex_lock(mutex)
        pending = true
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    /// Stops the thread after the pass in progress (the rest stays queued in RADOS).
    func stop() {
        pthread_mutex_lock(mutex)
        stopping = true
        pthread_cond_signal(condition)
        let t = thread
        thread = nil
        pthread_mutex_unlock(mutex)
        if let t, !pthread_equal(t, pthread_self()).boolValue { pthread_join(t, nil) }
        else if let t { pthread_detach(t) }
    }
}

private extension Int32 { var boolValue: Bool { self != 0 } }
