#if canImport(Glibc)
import Glibc
#endif
import FerryCore

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

    /// Runs `body` on `handle`'s lock state, made when there is none.
    private func withFileLocks<T>(_ handle: FileHandle,
                                  _ body: (NFS4FileLocks, inout NFS4FileLocks.State) throws(Errno) -> T) throws(Errno) -> T {
        while true {
            let entry = v4!.lockFiles.withLock { table -> NFS4FileLocks in
                if let e = table[handle] { return e }
                let e = NFS4FileLocks()
                table[handle] = e
                return e
            }
            let result = try entry.state.withLock { (s: inout NFS4FileLocks.State) throws(Errno) -> T? in
                if s.retired { return nil }
                return try body(entry, &s)
            }
            if let result { return result }
        }
    }

    public func getlk(_ file: NFSFile, owner: UInt64, _ lock: RecordLock, _ caller: Credentials) throws(Errno) -> RecordLock {
        guard supportsRecordLocks else { throw .notImplemented }
        let type = try Self.lockType(lock.type)
        let (offset, length) = NFS4FileLocks.wire(start: lock.start, end: lock.end)
        let name = NFS4FileLocks.name(of: .init(id: owner, flock: false))
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
            pid = (try? withFileLocks(handle) { (_, s: inout NFS4FileLocks.State) throws(Errno) -> UInt32 in s.pids[id] ?? 0 }) ?? 0
        }
        return RecordLock(start: min(found.offset, end), end: end, type: found.type == 1 || found.type == 3 ? F_RDLCK : F_WRLCK, pid: pid)
    }

    public func setlk(_ file: NFSFile, owner: UInt64, _ lock: RecordLock, flock: Bool, _ caller: Credentials) throws(Errno) {
        guard supportsRecordLocks else { throw .notImplemented }
        let key = NFS4FileLocks.Owner(id: owner, flock: flock)
        // flock locks the whole file, whatever range the kernel sent along.
        let (start, end) = flock ? (UInt64(0), RecordLock.toEndOfFile) : (lock.start, lock.end)
        let (offset, length) = NFS4FileLocks.wire(start: start, end: end)
        let handle = file.inode.handle
        if lock.type == F_UNLCK {
            try withFileLocks(handle) { (entry, s: inout NFS4FileLocks.State) throws(Errno) in
                guard let held = entry.granted.withLock({ $0.owners[key] }) else { return }   // holds nothing here
                switch try unlock(handle, entry, key, sent: held.stateid, offset: offset, length: length, caller) {
                case .done(let next):
                    entry.granted.withLock { g in
                        g.owners[key]?.stateid = next
                        g.owners[key]?.ranges.unlock(start: start, end: end)
                    }
                case .denied: throw .io
                case .lost: forgetState(entry, &s)   // the lock is gone already
                }
            }
            return
        }
        let type = try Self.lockType(lock.type)
        let name = NFS4FileLocks.name(of: key)
        try withFileLocks(handle) { (entry, s: inout NFS4FileLocks.State) throws(Errno) in
            if entry.granted.withLock({ $0.lost.remove(key) != nil }) {
                // The server did not give this owner's locks back after it restarted: the
                // process hears it once, rather than a lock granted on top of ones it lost.
                throw Errno(ENOLCK)
            }
            if entry.granted.withLock({ $0.owners[key] == nil }) {
                _ = try openState(file, entry, wanting: type == 2 ? 2 : 1, caller)
            }
            // Built when sent: a call sent again after a reclaim names the reclaimed stateids.
            let result = try client.compound(caller, { c, info in
                c.putfh(handle)
                let locker = entry.granted.withLock { g -> NFS4Locker in
                    if let held = g.owners[key] { return .existing(NFS4FileLocks.current(held.stateid)) }
                    return .new(open: NFS4FileLocks.current(g.open ?? .anonymous), clientID: info.clientID, owner: name)
                }
                c.lock(type: type, offset: offset, length: length, locker: locker)
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
                entry.granted.withLock { g in
                    g.owners[key, default: NFS4FileLocks.Held(stateid: stateid)].stateid = stateid
                    g.owners[key]?.ranges.lock(start: start, end: end, type: type)
                }
                if flock { s.flockFiles[key] = ObjectIdentifier(file) } else if lock.pid != 0 { s.pids[owner] = lock.pid }
            case .denied:
                throw .again
            case .lost:
                // The server lost this file's locks (its lease ran out, or it restarted and
                // the reclaim did not run): the process is told (ENOLCK) rather than granted a
                // lock on top of ones it no longer has; its next request starts afresh.
                forgetState(entry, &s)
                throw Errno(ENOLCK)
            }
        }
    }

    /// The file's open stateid, with at least `wanting` access (READ 1, WRITE 2): OPEN by
    /// handle as this file's open owner, once, or again to widen the access it has.
    private func openState(_ file: NFSFile, _ entry: NFS4FileLocks, wanting: UInt32,
                           _ caller: Credentials) throws(Errno) -> NFS4StateID {
        let (have, access, openOwner) = entry.granted.withLock { g in
            if g.openOwner.isEmpty {
                g.openOwner = Array("ferry-lockopen-\(getpid())-\(v4!.owners.wrappingAdd(1, ordering: .relaxed).oldValue)".utf8)
            }
            return (g.open, g.access, g.openOwner)
        }
        if let have, access & wanting != 0 { return NFS4FileLocks.current(have) }
        // Both where the caller may: one open serves every owner's read and write locks.
        let accessMode = file.flags & O_ACCMODE
        let wanted = access | wanting | (accessMode == O_RDWR ? 3 : accessMode == O_WRONLY ? 2 : 1)
        let handle = file.inode.handle
        func open(_ access: UInt32) throws(Errno) -> NFS4StateID {
            try client.compound(caller, { c, info in
                c.putfh(handle); c.openByHandle(access: access, clientID: info.clientID, owner: openOwner)
            }, decode: { r throws(NFS4Error) in try r.putfh(); return try r.open().0 })
        }
        let stateid: NFS4StateID, granted: UInt32
        do throws(Errno) {
            stateid = try open(wanted)
            granted = wanted
        } catch .accessDenied where wanted != wanting {
            // The caller may not open the file both ways: the access this lock needs alone
            // (a second OPEN of the same open owner adds to what the state already has).
            stateid = try open(wanting)
            granted = access | wanting
        }
        entry.granted.withLock { g in
            g.open = stateid
            g.access = granted
        }
        return NFS4FileLocks.current(stateid)
    }

    /// LOCKU of a range of one owner: its lock stateid afterwards. The stateid is read when
    /// the call is sent (`sent` if the owner has none by then).
    private func unlock(_ handle: FileHandle, _ entry: NFS4FileLocks, _ owner: NFS4FileLocks.Owner, sent: NFS4StateID,
                        offset: UInt64, length: UInt64, _ caller: Credentials) throws(Errno) -> NFS4FileLocks.Outcome {
        try client.compound(caller, { c, _ in
            let stateid = entry.granted.withLock { $0.owners[owner]?.stateid } ?? sent
            c.putfh(handle); c.locku(type: 2, NFS4FileLocks.current(stateid), offset: offset, length: length)
        }, decode: { r throws(NFS4Error) -> NFS4FileLocks.Outcome in
            try r.putfh()
            do throws(NFS4Error) { return .done(try r.locku()) } catch {
                if case .status(let st) = error, NFS4FileLocks.losesState(st) { return .lost }
                throw error
            }
        })
    }

    /// The server no longer has the file's open and lock state: forget every stateid of it.
    private func forgetState(_ entry: NFS4FileLocks, _ s: inout NFS4FileLocks.State) {
        logger.warning("NFSv4 server \(client.options.server) lost the lock state of a file (lease expiry, or a restart whose locks were not reclaimed): its locks are gone")
        entry.granted.withLock { g in
            g.owners.removeAll()
            g.lost.removeAll()
            g.open = nil
            g.access = 0
        }
        s.pids.removeAll()
        s.flockFiles.removeAll()
    }

    /// Drops every lock of `owner` on the file and its lock stateid (LOCKU, FREE_STATEID).
    /// Best effort: what the server keeps goes with the lease. The owner leaves `granted`
    /// once the call is done, and the call reads its stateid when sent: a reclaim meanwhile
    /// (the server restarted) takes the owner's locks back and gives it a new one.
    private func dropOwner(_ handle: FileHandle, _ owner: NFS4FileLocks.Owner, _ entry: NFS4FileLocks,
                           _ s: inout NFS4FileLocks.State, _ caller: Credentials) {
        if !owner.flock { s.pids[owner.id] = nil }
        s.flockFiles[owner] = nil
        guard entry.granted.withLock({ g in g.lost.remove(owner); return g.owners[owner] != nil }) else { return }
        do throws(Errno) {
            try client.compound(caller, { c, _ in
                let current = NFS4FileLocks.current(entry.granted.withLock { $0.owners[owner]?.stateid } ?? .anonymous)
                c.putfh(handle); c.locku(type: 2, current, offset: 0, length: UInt64.max); c.freeStateID(current)
            }, decode: { r throws(NFS4Error) in try r.putfh(); _ = try r.locku(); try r.freeStateID() })
        } catch {
            logger.debug("NFSv4 LOCKU/FREE_STATEID of a closing lock owner failed: \(error)")
        }
        entry.granted.withLock { g in _ = g.owners.removeValue(forKey: owner) }
    }

    /// FLUSH: the owner closed a descriptor of the file, which drops its POSIX locks on it.
    func dropLocks(_ file: NFSFile, owner: UInt64, _ caller: Credentials) {
        let handle = file.inode.handle
        guard supportsRecordLocks, let entry = v4!.lockFiles.withLock({ $0[handle] }) else { return }
        entry.state.withLock { s in dropOwner(handle, .init(id: owner, flock: false), entry, &s, caller) }
    }

    /// RELEASE (or the session's end) of `file`, before its open is taken back: its flock
    /// locks go; when it is the file's last open, every lock owner's state and the open
    /// state go too (CLOSE), before a hidden name's REMOVE can make the handle stale.
    func releaseLocks(_ file: NFSFile, _ caller: Credentials) {
        let handle = file.inode.handle
        guard supportsRecordLocks, let entry = v4!.lockFiles.withLock({ $0[handle] }) else { return }
        entry.state.withLock { s in
            let id = ObjectIdentifier(file)
            for (owner, opener) in s.flockFiles where opener == id { dropOwner(handle, owner, entry, &s, caller) }
            let last = openFiles.withLock { open in
                open.files[ObjectIdentifier(file)] != nil && (open.byHandle[handle]?.count ?? 0) <= 1
            }
            if !last { return }
            for owner in Array(entry.granted.withLock({ $0.owners.keys })) { dropOwner(handle, owner, entry, &s, caller) }
            if entry.granted.withLock({ $0.open != nil }) {
                do throws(Errno) {
                    try client.compound(caller, { c, _ in
                        // Read when sent, as in `dropOwner`.
                        let current = NFS4FileLocks.current(entry.granted.withLock { $0.open } ?? .anonymous)
                        c.putfh(handle); c.close(current, seqid: 0)
                    }, decode: { r throws(NFS4Error) in try r.putfh(); try r.close() })
                } catch {
                    logger.debug("NFSv4 CLOSE of a file's lock open failed: \(error)")
                }
            }
            entry.granted.withLock { g in g.open = nil; g.access = 0; g.lost.removeAll() }
            s.retired = true
            v4!.lockFiles.withLock { table in if table[handle] === entry { table[handle] = nil } }
        }
    }

    /// Lock owners holding state on the server, over every file (for tests and statistics).
    public var lockOwnerCount: Int {
        guard let v4 else { return 0 }
        return v4.lockFiles.withLock { Array($0.values) }.reduce(0) { n, e in n + e.granted.withLock { $0.owners.count } }
    }
}
