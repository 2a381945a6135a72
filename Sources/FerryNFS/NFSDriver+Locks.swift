#if canImport(Glibc)
import Glibc
#endif
import FerryCore
import Synchronization

/// The server-side lock state of one file (NFSv4.1+): the open stateid its locks hang
/// from, made by OPEN by file handle on the file's first lock and closed when its last
/// open is released, and a lock stateid per lock owner. Its mutex is held across the
/// COMPOUND that changes the state, so one owner's LOCK, LOCKU and FREE_STATEID never
/// cross (a v4.1 session has no lock seqids to order them).
final class NFS4FileLocks: Sendable {
    /// A lock owner of this client: a FUSE POSIX lock owner (one process) or, for flock,
    /// the open file the kernel names as owner.
    struct Owner: Hashable { let id: UInt64; let flock: Bool }
    struct State {
        var open: NFS4StateID?
        /// OPEN4_SHARE_ACCESS bits the open stateid has: READ 1, WRITE 2.
        var access: UInt32 = 0
        var openOwner: [UInt8] = []
        var owners: [Owner: NFS4StateID] = [:]
        /// The process each POSIX lock owner last locked as: GETLK names it when the holder
        /// is one of this client's owners (the client's kernel checks it is one of its own).
        var pids: [UInt64: UInt32] = [:]
        /// The open file each flock owner locked through: its release drops them.
        var flockFiles: [Owner: ObjectIdentifier] = [:]
        /// Closed and out of the driver's table: a request that found it before must look again.
        var retired = false
    }
    let state = Mutex<State>(State())

    /// What a LOCK or LOCKU came to.
    enum Outcome { case done(NFS4StateID), denied, lost }

    /// Statuses that say the server no longer has the stateids sent (a restart, a lease
    /// that expired, an administrator): STALE_STATEID, OLD_STATEID, BAD_STATEID,
    /// ADMIN_REVOKED, EXPIRED.
    static func losesState(_ status: UInt32) -> Bool { [10023, 10024, 10025, 10047, 10011].contains(status) }
}

/// NFSv4.1 and 4.2 record locks, kept by the server where every client sees them: GETLK is
/// LOCKT, SETLK is LOCK (never a blocking one: the core retries a waiting SETLKW) or LOCKU.
/// flock(2) locks are whole-file LOCKs of an owner per open file, which is what flock
/// means; the server cannot tell them from POSIX locks, so on NFS a flock and a POSIX
/// lock of the same file conflict (as they do for the Linux NFS client). v3 (NLM) and
/// v4.0 (lock seqids and OPEN_CONFIRM to order) are not spoken: their locks stay in the
/// client's kernel, as `supportsRecordLocks` false tells the core.
extension NFSDriver {
    public var supportsRecordLocks: Bool { v4?.usesSessions ?? false }

    /// READ_LT or WRITE_LT of a lock type; EINVAL for anything else.
    private static func lockType(_ type: Int32) throws(Errno) -> UInt32 {
        switch type {
        case F_RDLCK: return 1
        case F_WRLCK: return 2
        default: throw .invalid
        }
    }

    /// A range as LOCK takes it: length UInt64.max for "to end of file".
    private static func wireRange(_ lock: RecordLock) -> (offset: UInt64, length: UInt64) {
        if lock.end >= RecordLock.toEndOfFile { return (lock.start, UInt64.max) }
        return (lock.start, lock.end - lock.start + 1)
    }

    /// The name a lock owner has on the server, with the client id of the session.
    private static func ownerName(_ owner: NFS4FileLocks.Owner) -> [UInt8] {
        Array("ferry-lock-\(owner.flock ? "f" : "p")\(String(owner.id, radix: 16))".utf8)
    }

    /// Runs `body` on `handle`'s lock state, made when there is none.
    private func withFileLocks<T>(_ handle: FileHandle,
                                  _ body: (inout NFS4FileLocks.State) throws(Errno) -> T) throws(Errno) -> T {
        while true {
            let entry = fileLocks.withLock { table -> NFS4FileLocks in
                if let e = table[handle] { return e }
                let e = NFS4FileLocks()
                table[handle] = e
                return e
            }
            let result = try entry.state.withLock { (s: inout NFS4FileLocks.State) throws(Errno) -> T? in
                if s.retired { return nil }
                return try body(&s)
            }
            if let result { return result }
        }
    }

    public func getlk(_ file: NFSFile, owner: UInt64, _ lock: RecordLock, _ caller: Credentials) throws(Errno) -> RecordLock {
        guard supportsRecordLocks else { throw .notImplemented }
        let type = try Self.lockType(lock.type)
        let (offset, length) = Self.wireRange(lock)
        let name = Self.ownerName(.init(id: owner, flock: false))
        let handle = file.inode.handle
        var ourClientID: UInt64 = 0
        let found = try client.compound(caller, { c, info in
            ourClientID = info.clientID
            c.putfh(handle); c.lockt(type: type, offset: offset, length: length, clientID: info.clientID, owner: name)
        }, decode: { r throws(NFS4Error) in try r.putfh(); return try r.lockt() })
        guard let found else { return RecordLock(start: lock.start, end: lock.end, type: F_UNLCK, pid: 0) }
        // Length 0 is no lock range in NFSv4; nfs-ganesha reports its own "to end of file" so.
        let end = found.length == UInt64.max || found.length == 0 || found.length > RecordLock.toEndOfFile - found.offset
            ? RecordLock.toEndOfFile : found.offset + found.length - 1
        // A holder that is a POSIX owner of this client: the pid it locked as. Another
        // client's: pid 0, "not one of yours" to the asking kernel.
        var pid: UInt32 = 0
        let prefix = Array("ferry-lock-p".utf8)
        if found.clientID == ourClientID, found.owner.starts(with: prefix),
           let id = UInt64(String(decoding: found.owner.dropFirst(prefix.count), as: UTF8.self), radix: 16) {
            pid = (try? withFileLocks(handle) { (s: inout NFS4FileLocks.State) throws(Errno) -> UInt32 in s.pids[id] ?? 0 }) ?? 0
        }
        return RecordLock(start: min(found.offset, end), end: end, type: found.type == 1 || found.type == 3 ? F_RDLCK : F_WRLCK, pid: pid)
    }

    public func setlk(_ file: NFSFile, owner: UInt64, _ lock: RecordLock, flock: Bool, _ caller: Credentials) throws(Errno) {
        guard supportsRecordLocks else { throw .notImplemented }
        let key = NFS4FileLocks.Owner(id: owner, flock: flock)
        // flock locks the whole file, whatever range the kernel sent along.
        let range = flock ? RecordLock(start: 0, end: RecordLock.toEndOfFile, type: lock.type, pid: lock.pid) : lock
        let (offset, length) = Self.wireRange(range)
        let handle = file.inode.handle
        if lock.type == F_UNLCK {
            try withFileLocks(handle) { (s: inout NFS4FileLocks.State) throws(Errno) in
                guard let stateid = s.owners[key] else { return }   // holds nothing here
                switch try unlock(handle, stateid, offset: offset, length: length, caller) {
                case .done(let next): s.owners[key] = next
                case .denied: throw .io
                case .lost: forgetState(&s, handle)   // the lock is gone already
                }
            }
            return
        }
        let type = try Self.lockType(lock.type)
        try withFileLocks(handle) { (s: inout NFS4FileLocks.State) throws(Errno) in
            let locker: NFS4Locker
            if let stateid = s.owners[key] {
                locker = .existing(NFS4StateID(seqid: 0, other: stateid.other))
            } else {
                let open = try openState(file, wanting: type == 2 ? 2 : 1, &s, caller)
                locker = .new(open: open, clientID: 0, owner: Self.ownerName(key))
            }
            let result = try client.compound(caller, { c, info in
                c.putfh(handle)
                var l = locker
                if case .new(let open, _, let owner) = l { l = .new(open: open, clientID: info.clientID, owner: owner) }
                c.lock(type: type, offset: offset, length: length, locker: l)
            }, decode: { r throws(NFS4Error) -> NFS4FileLocks.Outcome in
                try r.putfh()
                do throws(NFS4Error) {
                    switch try r.lock() {
                    case .success(let stateid): return .done(stateid)
                    case .failure: return .denied
                    }
                } catch {
                    if case .status(let st) = error, NFS4FileLocks.losesState(st) { return .lost }
                    throw error
                }
            })
            switch result {
            case .done(let stateid):
                s.owners[key] = stateid
                if flock { s.flockFiles[key] = ObjectIdentifier(file) } else if lock.pid != 0 { s.pids[owner] = lock.pid }
            case .denied:
                throw .again
            case .lost:
                // The server lost this file's locks (restarted, or the lease ran out): the
                // process is told (ENOLCK) rather than granted a lock on top of ones it no
                // longer has; its next request starts afresh.
                forgetState(&s, handle)
                throw Errno(ENOLCK)
            }
        }
    }

    /// The file's open stateid, with at least `wanting` access (READ 1, WRITE 2): OPEN by
    /// handle as this file's open owner, once, or again to widen the access it has.
    private func openState(_ file: NFSFile, wanting: UInt32, _ s: inout NFS4FileLocks.State,
                           _ caller: Credentials) throws(Errno) -> NFS4StateID {
        if let open = s.open, s.access & wanting != 0 { return NFS4StateID(seqid: 0, other: open.other) }
        if s.openOwner.isEmpty {
            s.openOwner = Array("ferry-lockopen-\(getpid())-\(v4!.owners.wrappingAdd(1, ordering: .relaxed).oldValue)".utf8)
        }
        // Both where the caller may: one open serves every owner's read and write locks.
        let accessMode = file.flags & O_ACCMODE
        let wanted = s.access | wanting | (accessMode == O_RDWR ? 3 : accessMode == O_WRONLY ? 2 : 1)
        let handle = file.inode.handle, openOwner = s.openOwner
        func open(_ access: UInt32) throws(Errno) -> NFS4StateID {
            try client.compound(caller, { c, info in
                c.putfh(handle); c.openByHandle(access: access, clientID: info.clientID, owner: openOwner)
            }, decode: { r throws(NFS4Error) in try r.putfh(); return try r.open().0 })
        }
        let stateid: NFS4StateID
        do throws(Errno) {
            stateid = try open(wanted)
            s.access = wanted
        } catch .accessDenied where wanted != wanting {
            // The caller may not open the file both ways: the access this lock needs alone
            // (a second OPEN of the same open owner adds to what the state already has).
            stateid = try open(wanting)
            s.access |= wanting
        }
        s.open = stateid
        return NFS4StateID(seqid: 0, other: stateid.other)
    }

    /// LOCKU of a range of one owner: its lock stateid afterwards.
    private func unlock(_ handle: FileHandle, _ stateid: NFS4StateID, offset: UInt64, length: UInt64,
                        _ caller: Credentials) throws(Errno) -> NFS4FileLocks.Outcome {
        let current = NFS4StateID(seqid: 0, other: stateid.other)
        return try client.compound(caller, { c, _ in
            c.putfh(handle); c.locku(type: 2, current, offset: offset, length: length)
        }, decode: { r throws(NFS4Error) -> NFS4FileLocks.Outcome in
            try r.putfh()
            do throws(NFS4Error) { return .done(try r.locku()) } catch {
                if case .status(let st) = error, NFS4FileLocks.losesState(st) { return .lost }
                throw error
            }
        })
    }

    /// The server no longer has the file's open and lock state: forget every stateid of it.
    private func forgetState(_ s: inout NFS4FileLocks.State, _ handle: FileHandle) {
        logger.warning("NFSv4 server \(client.options.server) lost the lock state of a file (restart or lease expiry): its locks are gone")
        s.owners.removeAll()
        s.pids.removeAll()
        s.flockFiles.removeAll()
        s.open = nil
        s.access = 0
    }

    /// Drops every lock of `owner` on the file and its lock stateid (LOCKU, FREE_STATEID).
    /// Best effort: what the server keeps goes with the lease.
    private func dropOwner(_ handle: FileHandle, _ owner: NFS4FileLocks.Owner, _ s: inout NFS4FileLocks.State, _ caller: Credentials) {
        guard let stateid = s.owners.removeValue(forKey: owner) else { return }
        if !owner.flock { s.pids[owner.id] = nil }
        s.flockFiles[owner] = nil
        let current = NFS4StateID(seqid: 0, other: stateid.other)
        do throws(Errno) {
            try client.compound(caller, { c, _ in
                c.putfh(handle); c.locku(type: 2, current, offset: 0, length: UInt64.max); c.freeStateID(current)
            }, decode: { r throws(NFS4Error) in try r.putfh(); _ = try r.locku(); try r.freeStateID() })
        } catch {
            logger.debug("NFSv4 LOCKU/FREE_STATEID of a closing lock owner failed: \(error)")
        }
    }

    /// FLUSH: the owner closed a descriptor of the file, which drops its POSIX locks on it.
    func dropLocks(_ file: NFSFile, owner: UInt64, _ caller: Credentials) {
        let handle = file.inode.handle
        guard supportsRecordLocks, let entry = fileLocks.withLock({ $0[handle] }) else { return }
        entry.state.withLock { s in dropOwner(handle, .init(id: owner, flock: false), &s, caller) }
    }

    /// RELEASE (or the session's end) of `file`, before its open is taken back: its flock
    /// locks go; when it is the file's last open, every lock owner's state and the open
    /// state go too (CLOSE), before a hidden name's REMOVE can make the handle stale.
    func releaseLocks(_ file: NFSFile, _ caller: Credentials) {
        let handle = file.inode.handle
        guard supportsRecordLocks, let entry = fileLocks.withLock({ $0[handle] }) else { return }
        entry.state.withLock { s in
            let id = ObjectIdentifier(file)
            for (owner, opener) in s.flockFiles where opener == id { dropOwner(handle, owner, &s, caller) }
            let last = openFiles.withLock { open in
                open.files[ObjectIdentifier(file)] != nil && (open.byHandle[handle]?.count ?? 0) <= 1
            }
            if !last { return }
            for owner in Array(s.owners.keys) { dropOwner(handle, owner, &s, caller) }
            if let open = s.open {
                let current = NFS4StateID(seqid: 0, other: open.other)
                do throws(Errno) {
                    try client.compound(caller, { c, _ in c.putfh(handle); c.close(current, seqid: 0) },
                                        decode: { r throws(NFS4Error) in try r.putfh(); try r.close() })
                } catch {
                    logger.debug("NFSv4 CLOSE of a file's lock open failed: \(error)")
                }
            }
            s.open = nil
            s.retired = true
            fileLocks.withLock { table in if table[handle] === entry { table[handle] = nil } }
        }
    }

    /// Lock owners holding state on the server, over every file (for tests and statistics).
    public var lockOwnerCount: Int {
        fileLocks.withLock { Array($0.values) }.reduce(0) { n, e in n + e.state.withLock { $0.owners.count } }
    }
}
