#if canImport(Glibc)
import Glibc
#endif
import FerryCore

/// NFSv4 record locks, kept by the server where every client sees them: GETLK is LOCKT,
/// SETLK is LOCK (never a blocking one: the core retries a waiting SETLKW) or LOCKU.
/// flock(2) locks are whole-file LOCKs of an owner per open file, which is what flock
/// means; the server cannot tell them from POSIX locks, so on NFS a flock and a POSIX
/// lock of the same file conflict (as they do for the Linux NFS client). v4.0 orders each
/// owner's requests with seqids and opens by name (NFS4FileLocks, `openState`). v3 (NLM)
/// is not spoken: its locks stay in the client's kernel, as `supportsRecordLocks` false
/// tells the core.
extension NFSDriver {
    public var supportsRecordLocks: Bool { v4 != nil }

    /// v4.0: stateids go with their seqids and owners' seqids count.
    private var sequenced: Bool { !(v4?.usesSessions ?? true) }

    /// A stateid as this version's requests name it: v4.1+ "the current one" (seqid 0),
    /// v4.0 as the server last gave it.
    private func named(_ stateid: NFS4StateID) -> NFS4StateID { sequenced ? stateid : NFS4FileLocks.current(stateid) }

    /// The name of `owner` on the server for locks of the file of `entry`.
    private func lockOwnerName(_ owner: NFS4FileLocks.Owner, _ entry: NFS4FileLocks) -> [UInt8] {
        NFS4FileLocks.name(of: owner, file: sequenced ? entry : nil)
    }

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
            let entry = fileLocks(handle)
            let result = try entry.state.withLock { (s: inout NFS4FileLocks.State) throws(Errno) -> T? in
                if s.retired { return nil }
                return try body(entry, &s)
            }
            if let result { return result }
        }
    }

    /// `handle`'s lock state, made when there is none.
    private func fileLocks(_ handle: FileHandle) -> NFS4FileLocks {
        let v4 = v4!
        return v4.lockFiles.withLock { table -> NFS4FileLocks in
            if let e = table[handle] { return e }
            let e = NFS4FileLocks(serial: v4.owners.wrappingAdd(1, ordering: .relaxed).oldValue)
            table[handle] = e
            return e
        }
    }

    public func getlk(_ file: NFSFile, owner: UInt64, _ lock: RecordLock, _ caller: Credentials) throws(Errno) -> RecordLock {
        guard supportsRecordLocks else { throw .notImplemented }
        let type = try Self.lockType(lock.type)
        let (offset, length) = NFS4FileLocks.wire(start: lock.start, end: lock.end)
        let handle = file.inode.handle
        // On v4.0 the name is the file's own for this owner: its own locks are no conflict.
        let name = lockOwnerName(.init(id: owner, flock: false), fileLocks(handle))
        var ourClientID: UInt64 = 0
        let found = try client.compound(caller, needsClientID: sequenced, { c, info in
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
        if found.clientID == ourClientID, let id = NFS4FileLocks.posixOwner(named: found.owner) {
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
        try withFileLocks(handle) { (entry, s: inout NFS4FileLocks.State) throws(Errno) in
            let name = lockOwnerName(key, entry)
            if entry.granted.withLock({ $0.lost.remove(key) != nil }) {
                // The server did not give this owner's locks back after it restarted: the
                // process hears it once, rather than a lock granted on top of ones it lost.
                throw Errno(ENOLCK)
            }
            if entry.granted.withLock({ $0.owners[key] == nil }) {
                _ = try openState(file, entry, wanting: type == 2 ? 2 : 1, caller)
            }
            // Built when sent: a call sent again after a reclaim names the reclaimed stateids.
            let sequenced = sequenced
            let result = try client.compound(caller, needsClientID: sequenced, sequenced: sequenced, { c, info in
                c.putfh(handle)
                let locker = entry.granted.withLock { g -> NFS4Locker in
                    let lockSeqid = g.lockSeqids[key] ?? 0
                    if let held = g.owners[key] { return .existing(self.named(held.stateid), lockSeqid: lockSeqid) }
                    return .new(open: self.named(g.open ?? .anonymous), openSeqid: g.openSeqid, clientID: info.clientID,
                                owner: name, lockSeqid: lockSeqid)
                }
                c.lock(type: type, offset: offset, length: length, locker: locker)
            }, decode: { r throws(NFS4Error) -> NFS4FileLocks.Outcome in
                try r.putfh()
                do throws(NFS4Error) {
                    // A new lock owner's LOCK counts for the open owner too.
                    let lockResult = try entry.sequenced(sequenced, { g in
                        if g.owners[key] == nil { g.openSeqid &+= 1 }
                        g.lockSeqids[key, default: 0] &+= 1
                    }) { () throws(NFS4Error) in try r.lock() }
                    switch lockResult {
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

    /// The file's open stateid, with at least `wanting` access (READ 1, WRITE 2): OPEN as
    /// this file's open owner, once, or again to widen the access it has. By handle on
    /// v4.1+; by the name it was last seen under on v4.0 (`openByName`).
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
            if sequenced { return try openByName(handle, entry, access: access, owner: openOwner, caller) }
            return try client.compound(caller, { c, info in
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

    /// v4.0 OPEN of the file by the name it was last seen under (there is no CLAIM_FH), with
    /// OPEN_CONFIRM for an open owner the server does not know yet. If the name leads to
    /// another file now (replaced behind this client's back), that open is closed and the
    /// lock refused (ENOLCK): never a lock on another file. So too for a file of no known name.
    private func openByName(_ handle: FileHandle, _ entry: NFS4FileLocks, access: UInt32, owner: [UInt8],
                            _ caller: Credentials) throws(Errno) -> NFS4StateID {
        guard let place = v4!.names.withLock({ $0.byHandle[handle] }) else {
            logger.info("NFSv4.0 lock of a file whose name this client does not know: refused (ENOLCK)")
            throw Errno(ENOLCK)
        }
        let nextOpenSeqid = { (g: inout NFS4FileLocks.Granted) in g.openSeqid &+= 1 }
        let (opened, confirm, found) = try client.compound(caller, needsClientID: true, sequenced: true, { c, info in
            let seqid = entry.granted.withLock { $0.openSeqid }
            c.putfh(place.directory)
            place.name.withUnsafeBytes { c.openByName($0, access: access, clientID: info.clientID, owner: owner, seqid: seqid) }
            c.getfh()
        }, decode: { r throws(NFS4Error) in
            try r.putfh()
            let (stateid, confirm) = try entry.sequenced(true, nextOpenSeqid) { () throws(NFS4Error) in try r.open() }
            return (stateid, confirm, try r.getfh())
        })
        var stateid = opened
        if confirm {
            stateid = try client.compound(caller, sequenced: true, { c, _ in
                c.putfh(found); c.openConfirm(opened, seqid: entry.granted.withLock { $0.openSeqid })
            }, decode: { r throws(NFS4Error) in
                try r.putfh(); return try entry.sequenced(true, nextOpenSeqid) { () throws(NFS4Error) in try r.openConfirm() }
            })
        }
        guard found != handle else { return stateid }
        logger.warning("NFSv4.0 lock: the file's name now leads to another file (replaced on the server): refused (ENOLCK)")
        let closing = stateid
        do throws(Errno) {
            try client.compound(caller, sequenced: true, { c, _ in c.putfh(found); c.close(closing, seqid: entry.granted.withLock { $0.openSeqid }) },
                                decode: { r throws(NFS4Error) in
                try r.putfh(); try entry.sequenced(true, nextOpenSeqid) { () throws(NFS4Error) in try r.close() }
            })
        } catch {
            logger.debug("NFSv4 CLOSE of another file's open failed: \(error)")
        }
        throw Errno(ENOLCK)
    }

    /// LOCKU of a range of one owner: its lock stateid afterwards. The stateid is read when
    /// the call is sent (`sent` if the owner has none by then).
    private func unlock(_ handle: FileHandle, _ entry: NFS4FileLocks, _ owner: NFS4FileLocks.Owner, sent: NFS4StateID,
                        offset: UInt64, length: UInt64, _ caller: Credentials) throws(Errno) -> NFS4FileLocks.Outcome {
        let sequenced = sequenced
        return try client.compound(caller, sequenced: sequenced, { c, _ in
            let (stateid, seqid) = entry.granted.withLock { ($0.owners[owner]?.stateid ?? sent, $0.lockSeqids[owner] ?? 0) }
            c.putfh(handle); c.locku(type: 2, self.named(stateid), seqid: seqid, offset: offset, length: length)
        }, decode: { r throws(NFS4Error) -> NFS4FileLocks.Outcome in
            try r.putfh()
            do throws(NFS4Error) {
                return .done(try entry.sequenced(sequenced, { $0.lockSeqids[owner, default: 0] &+= 1 }) { () throws(NFS4Error) in try r.locku() })
            } catch {
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

    /// Drops every lock of `owner` on the file and its lock stateid (LOCKU, then FREE_STATEID
    /// on v4.1+ or RELEASE_LOCKOWNER on v4.0).
    /// Best effort: what the server keeps goes with the lease. The owner leaves `granted`
    /// once the call is done, and the call reads its stateid when sent: a reclaim meanwhile
    /// (the server restarted) takes the owner's locks back and gives it a new one.
    private func dropOwner(_ handle: FileHandle, _ owner: NFS4FileLocks.Owner, _ entry: NFS4FileLocks,
                           _ s: inout NFS4FileLocks.State, _ caller: Credentials) {
        if !owner.flock { s.pids[owner.id] = nil }
        s.flockFiles[owner] = nil
        guard entry.granted.withLock({ g in g.lost.remove(owner); return g.owners[owner] != nil }) else { return }
        let sequenced = sequenced, name = lockOwnerName(owner, entry)
        do throws(Errno) {
            try client.compound(caller, sequenced: sequenced, { c, _ in
                let (stateid, seqid) = entry.granted.withLock { ($0.owners[owner]?.stateid ?? .anonymous, $0.lockSeqids[owner] ?? 0) }
                c.putfh(handle); c.locku(type: 2, self.named(stateid), seqid: seqid, offset: 0, length: UInt64.max)
                if !sequenced { c.freeStateID(self.named(stateid)) }
            }, decode: { r throws(NFS4Error) in
                try r.putfh()
                _ = try entry.sequenced(sequenced, { $0.lockSeqids[owner, default: 0] &+= 1 }) { () throws(NFS4Error) in try r.locku() }
                if !sequenced { try r.freeStateID() }
            })
            // In a COMPOUND of its own: nfs-ganesha 4.3 corrupts its heap when the LOCKU
            // whose reply it keeps for the owner (v4.0 replays) and the release of that
            // owner come in one COMPOUND.
            if sequenced {
                try client.compound(caller, needsClientID: true, { c, info in c.releaseLockOwner(clientID: info.clientID, owner: name) },
                                    decode: { r throws(NFS4Error) in try r.releaseLockOwner() })
            }
        } catch {
            logger.debug("NFSv4 LOCKU and release of a closing lock owner failed: \(error)")
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
                let sequenced = sequenced
                do throws(Errno) {
                    try client.compound(caller, sequenced: sequenced, { c, _ in
                        // Read when sent, as in `dropOwner`.
                        let (open, seqid) = entry.granted.withLock { ($0.open ?? .anonymous, $0.openSeqid) }
                        c.putfh(handle); c.close(self.named(open), seqid: seqid)
                    }, decode: { r throws(NFS4Error) in
                        try r.putfh(); try entry.sequenced(sequenced, { $0.openSeqid &+= 1 }) { () throws(NFS4Error) in try r.close() }
                    })
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
