import FerryCore
#if canImport(Glibc)
import Glibc
#endif

/// The server's state for one inode: its record as last written (or about to be written),
/// and for directories a cache of names. Every field is guarded by the driver's metadata
/// lock; the single-writer lease is what makes the cache authoritative.
/// @unchecked Sendable: every mutable field is guarded by the driver's `meta` lock (data I/O by `dataLock`).
public final class RADOSInode: @unchecked Sendable {
    public let ino: UInt64
    var record: InodeRecord
    /// The record changed in memory (size/mtime after writes, a parent's mtime) and is not
    /// yet in RADOS: written back at fsync, close, lease renewal and shutdown.
    var dirty = false
    /// Open files; an unlinked inode is removed only when this drops to zero.
    var openCount = 0
    /// The inode object is gone (last link removed and closed).
    var removed = false
    /// Directories: names looked up so far (`nil` value: known not to exist).
    var names: [[UInt8]: Dentry?] = [:]
    /// Symlinks: the target, once read.
    var target: [UInt8]?
    /// Regular files: blocks known to be in the object map (a cache: a block missing here is
    /// recorded again, idempotently, before its first write by this server).
    var mappedBlocks = Set<UInt64>()
    /// Writes hold it shared for their whole span (map update and data); truncate, hole
    /// punching and purge hold it exclusive, so a write can never create an object after a
    /// truncate removed its block from the map. Taken before `meta`, never inside it.
    let dataLock = ReadWriteLock()

    init(ino: UInt64, record: InodeRecord) { self.ino = ino; self.record = record }
}

/// An open regular file.
public final class RADOSFile: Sendable {
    let inode: RADOSInode
    /// The OPEN (or CREATE) flags: what a migration reopens it with.
    let flags: Int32
    init(_ inode: RADOSInode, flags: Int32) { self.inode = inode; self.flags = flags }
}

/// An open directory: the snapshot READDIR pages through (taken at offset 0).
/// @unchecked Sendable: `snapshot` is touched only with `lock` held.
public final class RADOSDirectory: @unchecked Sendable {
    let inode: RADOSInode
    let lock = Lock()
    /// Names with a NUL after each (READDIRPLUS looks them up as C strings).
    var snapshot: [(name: [UInt8], ino: UInt64, type: UInt8)]?
    init(_ inode: RADOSInode) { self.inode = inode }
}

/// A plain mutex whose critical sections may throw `Errno`.
/// @unchecked Sendable: a pthread mutex is made to be shared between threads; the pointer never changes.
final class Lock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    init() { pthread_mutex_init(mutex, nil) }
    deinit { pthread_mutex_destroy(mutex); mutex.deallocate() }

    @inline(__always)
    func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    @inline(__always)
    func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }
}

/// A readers-writer lock.
/// @unchecked Sendable: a pthread rwlock is made to be shared between threads; the pointer never changes.
final class ReadWriteLock: @unchecked Sendable {
    private let lock = UnsafeMutablePointer<pthread_rwlock_t>.allocate(capacity: 1)
    init() { pthread_rwlock_init(lock, nil) }
    deinit { pthread_rwlock_destroy(lock); lock.deallocate() }

    func shared<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_rwlock_rdlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    func exclusive<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }
}

struct WeakInode { weak var inode: RADOSInode? }
