#if canImport(Glibc)
import Glibc
#endif
import FerryCore
import Synchronization

/// NFSv4 minor versions Ferry speaks.
public enum NFS4Minor: UInt32, Sendable { case v0 = 0, v1 = 1, v2 = 2 }

/// An export's NFSv4 client state. v4.0: the client id (SETCLIENTID/CONFIRM) that OPEN
/// needs, renewed by a RENEW every third of the lease. v4.1 and 4.2: the client id of
/// EXCHANGE_ID and a session (CREATE_SESSION) whose slots every COMPOUND takes one of
/// (SEQUENCE first); a lost session or client id (server restart, lease expired) is made
/// again and the call sent again. READ, WRITE and SETATTR use the anonymous stateid and
/// each OPEN is closed at once, so no open state needs recovering; only record locks
/// (NFSDriver+Locks.swift) keep state, which a server that restarted gives back during its
/// grace period (NFS4Reclaim.swift, v4.1+; v4.0 locks are lost then, and reported).
final class NFS4Session: Sendable {
    let minor: NFS4Minor
    /// The boot verifier of this client: a new one tells the server earlier state is gone.
    let verifier = UInt64(Deadline.now())
    let ownerID: [UInt8]
    let owners = Atomic<UInt64>(0)
    /// Whether the server takes the current stateid (RFC 8881 §16.2.3.1.2) in the CLOSE that
    /// ends a create's OPEN in the same COMPOUND; false after it refused one (then CLOSE goes
    /// in a COMPOUND of its own, as on v4.0).
    let closesWithCurrentStateID = Atomic<Bool>(true)
    /// Seconds of the server's lease (GETATTR lease_time at mount).
    let leaseSeconds = Atomic<UInt32>(90)
    let stopping = Atomic<Bool>(false)
    /// Client ids (v4.0) or sessions (v4.1+) made: one for a healthy export, one more per
    /// server restart or lost lease.
    let established = Atomic<UInt64>(0)
    let state = Mutex<State>(State())
    /// Held while a client id or session is made: concurrent senders must not each make one.
    let establishing = Mutex<Void>(())
    /// Record-lock state of the files that hold locks (NFSDriver+Locks.swift): here, not in
    /// the driver, because the session (v4.1+) reclaims it when the server restarted.
    let lockFiles = Mutex<[FileHandle: NFS4FileLocks]>([:])
    /// v4.0: the name each file was last seen under, which its lock's OPEN names (NFS4Names.swift).
    let names = Mutex<NFS4Names>(NFS4Names())
    /// Slots the session asks for: the requests Ferry keeps in flight (connections × the
    /// pieces of a large READ or WRITE plus writes behind), the server grants what it will.
    static let slotsWanted: UInt32 = 64

    struct Slot { var sequence: UInt32 = 1; var busy = false; var retired = false }

    struct State {
        /// v4.0: the confirmed client id; v4.1+: the client id of the session.
        var clientID: UInt64?
        var session: NFS4SessionID?
        var slots: [Slot] = []
        /// Largest request the session takes (v4.1+), 0 before one exists.
        var maxRequest: Int = 0
        /// Changes with every client id or session made, so a stale failure report does not
        /// throw away a newer one.
        var generation: UInt64 = 0
        /// When a COMPOUND last renewed the lease (v4.1: any; v4.0: RENEW or OPEN).
        var lastRenewed: UInt64 = 0
        /// The server forgot this client (v4.1+): the session exists, but until the locks
        /// are reclaimed and RECLAIM_COMPLETE said, only the reclaim's calls take its slots.
        /// A request sent meanwhile would name stateids the server no longer knows.
        var reclaimPending = false
    }

    /// What a COMPOUND is built with: the client id, for OPEN.
    struct Info { var clientID: UInt64 }

    init(minor: NFS4Minor, ownerID: [UInt8]) {
        self.minor = minor
        self.ownerID = ownerID
    }

    var usesSessions: Bool { minor != .v0 }

    /// Forgets the session or client id of `generation` (lost on the server).
    func lost(_ generation: UInt64) {
        state.withLock { s in
            guard s.generation == generation else { return }
            s.generation += 1
            s.session = nil
            s.slots = []
            if !usesSessions { s.clientID = nil }
        }
    }

    /// A free slot of the current session: (session, slot, sequence id, generation), or
    /// nil if none is free, there is no session, or its reclaim is not done and this is
    /// not one of its calls.
    func takeSlot(reclaiming: Bool = false) -> (NFS4SessionID, UInt32, UInt32, UInt64)? {
        state.withLock { s -> (NFS4SessionID, UInt32, UInt32, UInt64)? in
            guard let session = s.session, reclaiming || !s.reclaimPending,
                  let i = s.slots.firstIndex(where: { !$0.busy && !$0.retired }) else { return nil }
            s.slots[i].busy = true
            return (session, UInt32(i), s.slots[i].sequence, s.generation)
        }
    }

    /// The slot is free again; `answered`: SEQUENCE succeeded (its sequence id advances).
    /// Unanswered (connection lost), the server may or may not have seen it: the slot is
    /// not used again in this session, and a session with no usable slot is given up.
    func releaseSlot(_ slot: UInt32, generation: UInt64, answered: Bool?) {
        state.withLock { s in
            guard s.generation == generation, Int(slot) < s.slots.count else { return }
            s.slots[Int(slot)].busy = false
            switch answered {
            case true?: s.slots[Int(slot)].sequence &+= 1; s.lastRenewed = Deadline.now()
            case false?: break
            case nil:
                s.slots[Int(slot)].retired = true
                if !s.slots.contains(where: { !$0.retired }) { s.generation += 1; s.session = nil; s.slots = [] }
            }
        }
    }

    var highestSlot: UInt32 { state.withLock { UInt32(max(0, $0.slots.count - 1)) } }
}

extension NFSClient {
    /// The version field of the RPC call and the COMPOUND procedure.
    static let nfs4Version: UInt32 = 4, compoundProcedure: UInt32 = 1

    /// One COMPOUND as `caller`: `build` adds its operations (after SEQUENCE on v4.1+),
    /// `decode` reads their results (after SEQUENCE). A lost session or client id, and a
    /// server that asks to wait (DELAY, GRACE), make the call go again until the export's
    /// timeout. `needsClientID`: a v4.0 client id is established first (OPEN).
    /// `sequenced`: a v4.0 COMPOUND with an owner's seqid, whose `decode` (which moves the
    /// seqid on) also reads a DELAY or GRACE reply: the server counted it (RFC 7530 §9.1.7),
    /// so the call sent again must carry the next seqid, not be a replay of the refused one.
    func compound<T>(_ caller: Credentials, needsClientID: Bool = false, sequenced: Bool = false, reserving: Int = 512,
                     _ build: @escaping (inout NFS4Request, NFS4Session.Info) -> Void,
                     decode: @escaping (inout NFS4Reply) throws(NFS4Error) -> T) throws(Errno) -> T {
        try perform(caller) { connection, deadline throws(ConnectionFailure) -> Result<T, Errno> in
            var result: Result<T, Errno> = .failure(.io)
            let call = try send4(on: connection, deadline: deadline, needsClientID: needsClientID, decodesWaits: sequenced,
                                 reserving: reserving, build) { reply in
                do throws(NFS4Error) { result = .success(try decode(&reply)) } catch { result = .failure(self.failure(error)) }
            }
            try connection.wait(for: [call], deadline: deadline)
            return result
        }.get()
    }

    /// The errno of a COMPOUND that failed.
    func failure(_ error: NFS4Error) -> Errno {
        switch error {
        case .status(let s): return failure(nfs4: s)
        case .garbage:
            logger.warning("NFS server \(options.server) sent an NFSv4 reply that does not decode: reported as EIO")
            return .io
        }
    }

    /// Queues one COMPOUND on `connection` (whose lock the caller holds), first making the
    /// session or client id it needs, and for v4.1+ taking a slot (waiting for one, while
    /// taking in replies that free them). `decode` runs with the reply after SEQUENCE.
    /// `direct`: the reply's data may go straight into these buffers; `locate` reads the
    /// results after SEQUENCE up to the data and returns its length (nil: no data).
    /// `reclaiming`: a call of the reclaim after a server restart, which runs while the
    /// session is being made (it may take a slot before the reclaim is done, and never makes
    /// a session itself).
    func send4(on connection: NFSConnection, deadline: Deadline, needsClientID: Bool = false, decodesWaits: Bool = false, reserving: Int = 512,
               direct: (DirectData, locate: (inout NFS4Reply) -> Int?)? = nil, reclaiming: Bool = false,
               _ build: (inout NFS4Request, NFS4Session.Info) -> Void,
               decode: @escaping (inout NFS4Reply) -> Void) throws(ConnectionFailure) -> PendingCall {
        let session = v4!
        var slot: (NFS4SessionID, UInt32, UInt32, UInt64)?
        if session.usesSessions {
            while true {
                if let taken = session.takeSlot(reclaiming: reclaiming) { slot = taken; break }
                if session.state.withLock({ $0.session == nil }) {
                    if reclaiming { throw .broken("the session was lost while its locks were reclaimed") }
                    try establish(on: connection, deadline: deadline)
                    continue
                }
                if deadline.hasPassed { throw .timedOut }
                // The slots are held by calls in flight, perhaps on other connections whose
                // holders are not reading them now: take their replies in meanwhile.
                connection.poke()
                pokeOthers(than: connection)
                usleep(200)
            }
        } else if needsClientID && session.state.withLock({ $0.clientID == nil }) {
            try establish(on: connection, deadline: deadline)
        }
        let (clientID, generation) = session.state.withLock { ($0.clientID ?? 0, $0.generation) }
        let info = NFS4Session.Info(clientID: clientID)
        let highest = session.highestSlot
        let minor = session.minor.rawValue
        let call = PendingCall(onReply: { reader in
            let callGeneration = slot?.3 ?? generation
            guard var reply = try? NFS4Reply(reader) else {
                // The call's result stays EIO.
                if let slot { session.releaseSlot(slot.1, generation: slot.3, answered: nil) }
                self.logger.warning("NFS server \(self.options.server) sent an NFSv4 reply that does not decode: reported as EIO")
                return true
            }
            if let slot {
                do throws(NFS4Error) {
                    _ = try reply.sequence()
                    session.releaseSlot(slot.1, generation: slot.3, answered: true)
                } catch {
                    if case .status(let s) = error, NFS4Status.asksToWait(s) {
                        session.releaseSlot(slot.1, generation: slot.3, answered: false)
                        return false
                    }
                    session.releaseSlot(slot.1, generation: slot.3, answered: nil)
                    if case .status(let s) = error, NFS4Status.losesSession(s) { session.lost(callGeneration); return false }
                    decode(&reply)
                    return true
                }
            }
            if NFS4Status.losesSession(reply.status) { session.lost(callGeneration); return false }
            if NFS4Status.asksToWait(reply.status) {
                if decodesWaits { decode(&reply) }
                return false
            }
            if !session.usesSessions && needsClientID && reply.status == NFS4Status.ok {
                session.state.withLock { $0.lastRenewed = Deadline.now() }
            }
            decode(&reply)
            return true
        }, onCancel: {
            if let slot { session.releaseSlot(slot.1, generation: slot.3, answered: nil) }
        })
        if let (data, locate) = direct {
            let sequenced = slot != nil
            data.locate = { prefix in
                var r = XDRReader(prefix)
                guard r.u32() != nil, let results = RPCSocket.acceptedResults(&r),
                      var reply = try? NFS4Reply(XDRReader(UnsafeRawBufferPointer(rebasing: prefix[results...]))) else { return nil }
                if sequenced { guard (try? reply.sequence()) != nil else { return nil } }
                guard let count = locate(&reply) else { return nil }
                return (results + reply.r.offset, count)
            }
            call.direct = data
        }
        do throws(ConnectionFailure) {
            try connection.sendOwn(version: Self.nfs4Version, procedure: Self.compoundProcedure, reserving: reserving, { w in
                var request = NFS4Request(taking: &w, minor: minor)
                if let slot { request.sequence(session: slot.0, sequenceID: slot.2, slot: slot.1, highestSlot: highest) }
                build(&request, info)
                request.finish(into: &w)
            }, call)
        } catch {
            if let slot { session.releaseSlot(slot.1, generation: slot.3, answered: false) }
            throw error
        }
        return call
    }

    /// Makes the client id (v4.0: SETCLIENTID and its CONFIRM) or the session (v4.1+:
    /// EXCHANGE_ID, CREATE_SESSION, the reclaim of the locks if the server forgot this
    /// client, RECLAIM_COMPLETE) on `connection`, unless another sender made it meanwhile.
    private func establish(on connection: NFSConnection, deadline: Deadline) throws(ConnectionFailure) {
        let session = v4!
        try session.establishing.withLock { _ throws(ConnectionFailure) in
            let have = session.state.withLock { session.usesSessions ? $0.session != nil : $0.clientID != nil }
            if have { return }
            if session.usesSessions {
                let hadSession = session.established.load(ordering: .relaxed) > 0
                let (clientID, sequence, confirmed) = try raw(on: connection, deadline: deadline, { $0.exchangeID(verifier: session.verifier, owner: session.ownerID) },
                                                   { r throws(NFS4Error) in try r.exchangeID() })
                let fore = NFS4ChannelAttributes(maxRequest: UInt32(NFSClient.largestCall), maxResponse: UInt32(NFSClient.largestReply),
                                                 maxResponseCached: 8192, maxOperations: 16, maxRequests: NFS4Session.slotsWanted)
                let (id, granted) = try raw(on: connection, deadline: deadline, {
                    $0.createSession(clientID: clientID, sequence: sequence, fore: fore)
                }, { r throws(NFS4Error) in try r.createSession() })
                // A client the server had not confirmed, after an earlier session: the server
                // forgot it (restarted, or let its lease run out), and every lock with it
                // (as the Linux client reads EXCHGID4_FLAG_CONFIRMED_R). A reclaim that did
                // not finish last time is still owed.
                let generation = session.state.withLock { s -> UInt64 in
                    s.generation += 1
                    s.clientID = clientID
                    s.session = id
                    s.slots = Array(repeating: NFS4Session.Slot(), count: Int(max(1, min(granted.maxRequests, 1024))))
                    s.maxRequest = Int(granted.maxRequest)
                    s.lastRenewed = Deadline.now()
                    if hadSession && !confirmed { s.reclaimPending = true }
                    return s.generation
                }
                session.established.add(1, ordering: .relaxed)
                logger.info("NFSv4.\(session.minor.rawValue) session with \(options.server): \(granted.maxRequests) slots, requests up to \(granted.maxRequest) bytes")
                // The locks are taken back before RECLAIM_COMPLETE, which ends this client's
                // grace. The first session has nothing to reclaim: said at once, so the
                // server need not hold this client in its grace period. Already said: fine too.
                let reclaiming = session.state.withLock { $0.reclaimPending }
                do throws(ConnectionFailure) {
                    if reclaiming { try reclaimLocks(on: connection, deadline: deadline) }
                    let call = try send4(on: connection, deadline: deadline, reclaiming: true, { r, _ in r.reclaimComplete() }, decode: { _ in })
                    try connection.wait(for: [call], deadline: deadline)
                } catch {
                    // Made again by the next call, which reclaims what is still owed (the
                    // session's slots stay kept for a reclaim that will not come otherwise).
                    if reclaiming { session.lost(generation) }
                    throw error
                }
                if reclaiming { session.state.withLock { s in if s.generation == generation { s.reclaimPending = false } } }
            } else {
                let (clientID, confirm) = try raw(on: connection, deadline: deadline, { $0.setclientid(verifier: session.verifier, id: session.ownerID) },
                                                  { r throws(NFS4Error) in try r.setclientid() })
                try raw(on: connection, deadline: deadline, { $0.setclientidConfirm(clientID: clientID, confirm: confirm) },
                        { r throws(NFS4Error) in try r.setclientidConfirm() })
                session.state.withLock { s in
                    s.generation += 1
                    s.clientID = clientID
                    s.lastRenewed = Deadline.now()
                }
                session.established.add(1, ordering: .relaxed)
                logger.info("NFSv4.0 client id with \(options.server) confirmed")
            }
        }
    }

    /// A COMPOUND without SEQUENCE (those that make the session), waited for. A failure
    /// status is not worth sending again at once: the request fails (`refused`), except
    /// DELAY and GRACE, which the caller's retry waits out.
    private func raw<T>(on connection: NFSConnection, deadline: Deadline, _ build: (inout NFS4Request) -> Void,
                        _ decode: @escaping (inout NFS4Reply) throws(NFS4Error) -> T) throws(ConnectionFailure) -> T {
        var result: Result<T, NFS4Error> = .failure(.garbage)
        let call = PendingCall(onReply: { reader in
            guard var reply = try? NFS4Reply(reader) else { return true }
            do throws(NFS4Error) { result = .success(try decode(&reply)) } catch { result = .failure(error) }
            return true
        }, onCancel: nil)
        let minor = v4!.minor.rawValue
        try connection.sendOwn(version: Self.nfs4Version, procedure: Self.compoundProcedure, { w in
            var request = NFS4Request(taking: &w, minor: minor)
            build(&request)
            request.finish(into: &w)
        }, call)
        try connection.wait(for: [call], deadline: deadline)
        switch result {
        case .success(let value): return value
        case .failure(.status(let s)) where NFS4Status.asksToWait(s): throw .broken("the server asks to wait (NFSv4 status \(s))")
        case .failure(let error):
            if case .status(let s) = error, s == NFS4Status.minorVersionMismatch {
                throw .refused("the server does not speak NFSv4.\(minor)")
            }
            throw .refused("making the NFSv4 client state failed: \(error)")
        }
    }

    /// Takes in the replies waiting on every other connection that is free now.
    func pokeOthers(than busy: NFSConnection) {
        for connection in connections where connection !== busy && connection.tryLock() {
            connection.poke()
            connection.unlock()
        }
    }

    /// Largest call and reply a session is asked to carry: a 1 MiB WRITE or READ and its COMPOUND.
    static let largestCall = (1 << 20) + 8192
    static let largestReply = (1 << 20) + 8192

    /// Keeps the lease while the export is open: a RENEW (v4.0) or a bare SEQUENCE (v4.1+)
    /// when nothing renewed it for a third of the lease. Called by the lease thread every
    /// quarter second; false once the export stops.
    func renewLeaseIfDue() -> Bool {
        let session = v4!
        if session.stopping.load(ordering: .relaxed) { return false }
        let lease = UInt64(max(3, session.leaseSeconds.load(ordering: .relaxed)))
        let (clientID, last) = session.state.withLock { ($0.clientID, $0.lastRenewed) }
        if clientID != nil, Deadline.now() - last > lease * 1_000_000_000 / 3 {
            do throws(Errno) {
                if session.usesSessions {
                    try compound(.root, { _, _ in }, decode: { _ throws(NFS4Error) in })
                } else {
                    try compound(.root, needsClientID: true, { r, info in r.renew(clientID: info.clientID) }, decode: { r throws(NFS4Error) in try r.renew() })
                    session.state.withLock { $0.lastRenewed = Deadline.now() }
                }
            } catch {
                logger.debug("NFSv4 lease renewal with \(options.server) failed: \(error)")
            }
        }
        return true
    }

    /// DESTROY_SESSION of the current session (v4.1+), at stop; best effort.
    func endSession() {
        guard let session = v4, session.usesSessions, let id = session.state.withLock({ $0.session }) else { return }
        _ = try? perform(.root) { connection, deadline throws(ConnectionFailure) -> Void in
            _ = try? raw(on: connection, deadline: deadline, { $0.destroySession(id) }, { r throws(NFS4Error) in try r.destroySession() })
        }
        session.state.withLock { $0.session = nil; $0.slots = [] }
    }
}
