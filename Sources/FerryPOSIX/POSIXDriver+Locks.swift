#if canImport(Glibc)
import Glibc
#endif
import CFerry
import FerryCore
import Synchronization

/// The open file descriptions that hold a client's POSIX locks: one per (file, lock
/// owner), opened by the daemon on the same file and locked with OFD locks (F_OFD_SETLK),
/// as QEMU 7.2's virtiofsd did with `-o posix_lock`. A lock owner (one guest process) thus
/// holds its locks the way a process does: its own ranges merge and split, other owners
/// (in this export, in another daemon, on the host) conflict, and closing the description
/// (FLUSH with that owner) drops them all at once.
final class LockOwnerTable: Sendable {
    struct Key: Hashable {
        let device: UInt64
        let inode: UInt64
        let owner: UInt64
    }
    /// One owner's description, the process it last locked as, and the ranges it holds (as
    /// the host merges and splits them): GETLK names the holder's pid from these, since the
    /// host reports none for an OFD lock and the client's kernel checks the pid it is given.
    struct Holder {
        let fd: Int32
        var pid: UInt32 = 0
        var ranges: [RecordLock] = []
    }
    let limit: Int
    private let table = Mutex<[Key: Holder]>([:])

    init(limit: Int) { self.limit = limit }

    deinit { closeAll() }

    var count: Int { table.withLock { $0.count } }

    func existing(_ key: Key) -> Int32? { table.withLock { $0[key]?.fd } }

    /// The description of `key`, opened by `open` when there is none yet (under the lock,
    /// so two requests of one owner never open two); `created` says which. ENOLCK at the limit.
    func descriptor(_ key: Key, open: () throws(Errno) -> Int32) throws(Errno) -> (fd: Int32, created: Bool) {
        try table.withLock { (t: inout [Key: Holder]) throws(Errno) -> (fd: Int32, created: Bool) in
            if let holder = t[key] { return (holder.fd, false) }
            guard t.count < limit else { throw Errno(ENOLCK) }
            let fd = try open()
            t[key] = Holder(fd: fd)
            return (fd, true)
        }
    }

    /// Records a lock (or unlock) `key` was just granted on the host: its ranges as the
    /// host now holds them, and the process it locked as.
    func granted(_ key: Key, _ lock: RecordLock) {
        table.withLock { t in
            guard var holder = t[key] else { return }
            var kept: [RecordLock] = []
            for r in holder.ranges {
                if r.end < lock.start || r.start > lock.end { kept.append(r); continue }
                if r.start < lock.start { kept.append(RecordLock(start: r.start, end: lock.start - 1, type: r.type, pid: r.pid)) }
                if r.end > lock.end { kept.append(RecordLock(start: lock.end + 1, end: r.end, type: r.type, pid: r.pid)) }
            }
            if lock.type != F_UNLCK {
                kept.append(lock)
                if lock.pid != 0 { holder.pid = lock.pid }
            }
            holder.ranges = kept
            t[key] = holder
        }
    }

    /// The pid of an owner of this table, other than `requester`, holding a lock on the
    /// inode that overlaps `range` with `type`; 0 when the holder is not one of ours (another
    /// daemon, a host process), which the client's kernel takes as "not one of mine".
    func holderPID(device: UInt64, inode: UInt64, requester: UInt64, range: RecordLock) -> UInt32 {
        table.withLock { t in
            for (key, holder) in t where key.device == device && key.inode == inode && key.owner != requester {
                if holder.ranges.contains(where: { $0.type == range.type && $0.start <= range.end && $0.end >= range.start }) {
                    return holder.pid
                }
            }
            return 0
        }
    }

    /// Closes `key`'s description (dropping every lock it holds).
    func remove(_ key: Key) {
        if let holder = table.withLock({ $0.removeValue(forKey: key) }) { close(holder.fd) }
    }

    /// Closes a description `descriptor` just opened whose first lock failed: it holds none.
    func removeIfUnlocked(_ key: Key, _ fd: Int32) {
        table.withLock { t in
            if t[key]?.fd == fd { t.removeValue(forKey: key); close(fd) }
        }
    }

    func closeAll() {
        let all = table.withLock { t -> [Int32] in defer { t.removeAll() }; return t.values.map(\.fd) }
        for fd in all { close(fd) }
    }
}

extension POSIXDriver {
    /// Locks are kept by the host kernel, where every process and every other daemon on
    /// the same files sees them.
    public var supportsRecordLocks: Bool { true }

    /// The session's clients are gone: so are their lock owners and their locks.
    public func sessionEnded() {
        lockOwners.closeAll()
    }

    /// The POSIX locks the daemon currently holds for clients (open descriptions).
    public var lockOwnerCount: Int { lockOwners.count }

    static func flockFor(_ lock: RecordLock) throws(Errno) -> flock {
        guard lock.start <= UInt64(Int64.max), lock.end >= lock.start else { throw .invalid }
        var fl = flock()
        fl.l_type = Int16(truncatingIfNeeded: lock.type)
        fl.l_whence = Int16(SEEK_SET)
        fl.l_start = off_t(lock.start)
        if lock.end >= RecordLock.toEndOfFile {
            fl.l_len = 0
        } else {
            fl.l_len = off_t(lock.end - lock.start + 1)
        }
        fl.l_pid = 0  // OFD locks require 0
        return fl
    }

    /// The table key of `file`'s inode for `owner`.
    private func lockKey(_ file: File, _ owner: UInt64) throws(Errno) -> LockOwnerTable.Key {
        var st = stat()
        if fstat(file.fd, &st) != 0 { throw ownFailure("fstat") }
        return LockOwnerTable.Key(device: UInt64(st.st_dev), inode: UInt64(st.st_ino), owner: owner)
    }

    public func getlk(_ file: File, owner: UInt64, _ lock: RecordLock, _ caller: Credentials) throws(Errno) -> RecordLock {
        var fl = try Self.flockFor(lock)
        // The owner's own description does not conflict with its own locks; an owner that
        // holds none asks through the handle's description, which holds no POSIX locks.
        let key = try lockKey(file, owner)
        let fd = lockOwners.existing(key) ?? file.fd
        if ferry_fcntl_lock(fd, Int32(FERRY_F_OFD_GETLK), &fl) != 0 { throw ownFailure("fcntl(F_OFD_GETLK)") }
        if Int32(fl.l_type) == F_UNLCK { return RecordLock(start: lock.start, end: lock.end, type: F_UNLCK, pid: 0) }
        let start = UInt64(fl.l_start)
        let end = fl.l_len == 0 ? RecordLock.toEndOfFile : start + UInt64(fl.l_len) - 1
        // An OFD lock has no owning process (the host reports -1): the pid is the one the
        // holder locked as when it is a client of this export, else 0 ("none of yours").
        let found = RecordLock(start: start, end: end, type: Int32(fl.l_type), pid: 0)
        let pid = lockOwners.holderPID(device: key.device, inode: key.inode, requester: owner, range: found)
        return RecordLock(start: start, end: end, type: found.type, pid: pid)
    }

    public func setlk(_ file: File, owner: UInt64, _ lock: RecordLock, flock: Bool, _ caller: Credentials) throws(Errno) {
        if flock { return try setFlock(file, lock) }
        var fl = try Self.flockFor(lock)
        // As fcntl answers a process: a read lock needs a readable descriptor, a write lock
        // a writable one (the owner's description is opened read-write for all its locks).
        let access = fcntl(file.fd, F_GETFL) & O_ACCMODE
        if lock.type == F_WRLCK && access == O_RDONLY { throw .badHandle }
        if lock.type == F_RDLCK && access == O_WRONLY { throw .badHandle }
        let key = try lockKey(file, owner)
        if lock.type == F_UNLCK {
            guard let fd = lockOwners.existing(key) else { return }   // holds nothing
            if ferry_fcntl_lock(fd, Int32(FERRY_F_OFD_SETLK), &fl) != 0 { throw Errno.current }
            lockOwners.granted(key, lock)
            return
        }
        let (fd, created) = try lockOwners.descriptor(key) { () throws(Errno) -> Int32 in
            try ThreadCredentialState.current.asDaemon { () throws(Errno) -> Int32 in
                do throws(Errno) {
                    return try reopen(file.fd, flags: O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)
                } catch {
                    // A file the daemon may only read (read-only mount, no override): read locks work.
                    return try reopen(file.fd, flags: O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)
                }
            }
        }
        // Never F_OFD_SETLKW: a lock held elsewhere would hold this thread for as long as
        // its holder pleases; the core retries a waiting request instead.
        if ferry_fcntl_lock(fd, Int32(FERRY_F_OFD_SETLK), &fl) != 0 {
            let e = errno
            if created { lockOwners.removeIfUnlocked(key, fd) }
            throw e == EACCES ? .again : Errno(e)
        }
        lockOwners.granted(key, lock)
    }

    /// flock(2) on the handle's own description, which is the guest's open file: the lock
    /// lives as long as that open file, as on a local file system.
    private func setFlock(_ file: File, _ lock: RecordLock) throws(Errno) {
        let operation: Int32
        switch lock.type {
        case F_RDLCK: operation = LOCK_SH
        case F_WRLCK: operation = LOCK_EX
        case F_UNLCK: operation = LOCK_UN
        default: throw .invalid
        }
        if ferry_flock(file.fd, operation | LOCK_NB) != 0 {
            throw errno == EWOULDBLOCK ? .again : Errno.current
        }
    }

    /// FLUSH: `owner` closed a descriptor of the file; its POSIX locks on it go.
    func dropLocks(_ file: File, owner: UInt64) {
        guard lockOwners.count > 0, let key = try? lockKey(file, owner) else { return }
        lockOwners.remove(key)
    }
}
