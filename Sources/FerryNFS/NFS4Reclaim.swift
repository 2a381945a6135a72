/// Taking locks back after the server restarted (NFSv4.1+, RFC 8881 §8.4.2.1). A server
/// that restarts forgets every open and lock, then keeps a grace period in which only the
/// clients it knew may take theirs back (reclaims); other clients' LOCKs are answered GRACE
/// and wait. Ferry reclaims from `establish`, once the new session exists and before it
/// says RECLAIM_COMPLETE: per file with locks, OPEN CLAIM_PREVIOUS with the access it had,
/// then per owner a LOCK with reclaim set for each range it holds (`LockRanges`), the first
/// one making the lock owner again from the new open stateid.
///
/// Locking: the reclaim runs with the connection's lock and the session's `establishing`
/// held, perhaps on the thread of a request that holds a file's `state` mutex and waits
/// for this very session. So it never takes a `state` mutex: it copies each file's
/// `granted` (a mutex held only for a moment), sends without any file mutex, and writes
/// the new stateids back. No other call can use the session meanwhile (`reclaimPending`
/// keeps its slots for the reclaim), so nothing changes `granted` under it.
extension NFSClient {
    func reclaimLocks(on connection: NFSConnection, deadline: Deadline) throws(ConnectionFailure) {
        let files = v4!.lockFiles.withLock { Array($0) }
        var reclaimed = 0, refused = 0
        for (handle, entry) in files {
            let was = entry.granted.withLock { $0 }
            let holding = was.owners.filter { !$0.value.ranges.isEmpty }
            // Owners whose ranges all went keep no stateid the new server knows.
            guard !holding.isEmpty, was.open != nil else {
                entry.granted.withLock { g in g.open = nil; g.access = 0; g.owners.removeAll() }
                continue
            }
            var open: NFS4StateID?
            let opened = try reclaimCall(on: connection, deadline: deadline, { r, info in
                r.putfh(handle); r.openPrevious(access: was.access, clientID: info.clientID, owner: was.openOwner)
            }, decode: { r throws(NFS4Error) in try r.putfh(); return try r.open().0 })
            switch opened {
            case .success(let stateid): open = stateid
            case .failure(let error):
                logger.warning("NFS server \(options.server) refused to reclaim the open of a locked file (\(error)): its \(holding.count) lock owners lost their locks")
            }
            var kept: [NFS4FileLocks.Owner: NFS4FileLocks.Held] = [:]
            var lost: Set<NFS4FileLocks.Owner> = []
            for (owner, held) in holding {
                guard let open else { lost.insert(owner); continue }
                if let stateid = try reclaim(owner, held.ranges, on: handle, open: open, connection: connection, deadline: deadline) {
                    kept[owner] = NFS4FileLocks.Held(stateid: stateid, ranges: held.ranges)
                } else {
                    lost.insert(owner)
                }
            }
            reclaimed += kept.count
            refused += lost.count
            entry.granted.withLock { g in
                g.open = open
                g.access = open == nil ? 0 : was.access
                g.owners = kept
                g.lost.formUnion(lost)
            }
        }
        if reclaimed + refused > 0 {
            logger.info("NFS server \(options.server) restarted: \(reclaimed) lock owners reclaimed their locks, \(refused) could not")
        }
    }

    /// LOCK reclaims of every range `owner` holds: its new lock stateid, or nil if the
    /// server refused one (NO_GRACE, RECLAIM_BAD, DENIED, ...), in which case what was
    /// taken back of the owner's is let go again: the process is told its locks are gone,
    /// and holding part of them would only block others.
    private func reclaim(_ owner: NFS4FileLocks.Owner, _ ranges: LockRanges, on handle: FileHandle, open: NFS4StateID,
                         connection: NFSConnection, deadline: Deadline) throws(ConnectionFailure) -> NFS4StateID? {
        var stateid: NFS4StateID?
        for range in ranges.ranges {
            let (offset, length) = NFS4FileLocks.wire(start: range.start, end: range.end)
            let locker: NFS4Locker = stateid.map { .existing(NFS4FileLocks.current($0)) }
                ?? .new(open: NFS4FileLocks.current(open), clientID: 0, owner: NFS4FileLocks.name(of: owner))
            let result = try reclaimCall(on: connection, deadline: deadline, { r, info in
                var l = locker
                if case .new(let open, _, _, let name, _) = l { l = .new(open: open, clientID: info.clientID, owner: name) }
                r.putfh(handle); r.lock(type: range.type, offset: offset, length: length, locker: l, reclaim: true)
            }, decode: { r throws(NFS4Error) in try r.putfh(); return try r.lock() })
            switch result {
            case .success(.success(let next)):
                stateid = next
            case .success(.failure(let denied)):
                logger.warning("NFS server \(options.server) refused to reclaim a lock (\(range.start)...\(range.end)): another client holds \(denied.offset)+\(denied.length); the owner's locks on the file are lost")
                release(stateid, on: handle, connection: connection, deadline: deadline)
                return nil
            case .failure(let error):
                logger.warning("NFS server \(options.server) refused to reclaim a lock (\(range.start)...\(range.end)): \(error); the owner's locks on the file are lost")
                release(stateid, on: handle, connection: connection, deadline: deadline)
                return nil
            }
        }
        return stateid
    }

    /// LOCKU of the whole file and FREE_STATEID of a lock stateid, best effort.
    private func release(_ stateid: NFS4StateID?, on handle: FileHandle, connection: NFSConnection, deadline: Deadline) {
        guard let stateid else { return }
        let current = NFS4FileLocks.current(stateid)
        _ = try? reclaimCall(on: connection, deadline: deadline, { r, _ in
            r.putfh(handle); r.locku(type: 2, current, offset: 0, length: UInt64.max); r.freeStateID(current)
        }, decode: { r throws(NFS4Error) in try r.putfh(); _ = try r.locku(); try r.freeStateID() })
    }

    /// One COMPOUND of the reclaim, waited for: its result, or the server's refusal.
    private func reclaimCall<T>(on connection: NFSConnection, deadline: Deadline,
                                _ build: (inout NFS4Request, NFS4Session.Info) -> Void,
                                decode: @escaping (inout NFS4Reply) throws(NFS4Error) -> T) throws(ConnectionFailure) -> Result<T, NFS4Error> {
        var result: Result<T, NFS4Error> = .failure(.garbage)
        let call = try send4(on: connection, deadline: deadline, reclaiming: true, build) { reply in
            do throws(NFS4Error) { result = .success(try decode(&reply)) } catch { result = .failure(error) }
        }
        try connection.wait(for: [call], deadline: deadline)
        return result
    }
}
