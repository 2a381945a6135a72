import FerryCore
import Synchronization

/// The server-side lock state of one file: the open stateid its locks hang from, made by
/// OPEN on the file's first lock (by handle on v4.1+, by name on v4.0) and closed when its
/// last open is released, and per lock owner a lock stateid and the ranges it holds.
///
/// On v4.0 the open owner and each lock owner also have a seqid that orders their
/// requests: the next one to send, advanced after every reply the server counts (RFC 7530
/// §9.1.7). A lock owner's name there carries the file's `serial`, so each owner's seqids
/// are only ever used under this file's `state` mutex.
///
/// Two mutexes. `state` is held across the COMPOUND that changes the file's locks, so one
/// owner's LOCK, LOCKU and FREE_STATEID never cross (a v4.1 session has no lock seqids to
/// order them). `granted`, what the server granted, is taken only for a moment and never
/// across a call: after a server restart the session's reclaim (NFS4Reclaim.swift) reads
/// and replaces it while a request that holds `state` may be waiting for that very session,
/// or be the thread running the reclaim. A request builds its COMPOUND from `granted` when
/// it is sent, so a call sent again after a reclaim carries the reclaimed stateids.
final class NFS4FileLocks: Sendable {
    /// A lock owner of this client: a FUSE POSIX lock owner (one process) or, for flock,
    /// the open file the kernel names as owner.
    struct Owner: Hashable { let id: UInt64; let flock: Bool }

    /// One owner's lock stateid and what it holds with it.
    struct Held {
        var stateid: NFS4StateID
        var ranges = LockRanges()
    }

    struct Granted {
        var open: NFS4StateID?
        /// OPEN4_SHARE_ACCESS bits the open stateid has: READ 1, WRITE 2.
        var access: UInt32 = 0
        var openOwner: [UInt8] = []
        /// v4.0: the open owner's next seqid.
        var openSeqid: UInt32 = 0
        var owners: [Owner: Held] = [:]
        /// v4.0: each lock owner's next seqid (kept while the file is, as the server may
        /// keep an owner whose first LOCK was denied).
        var lockSeqids: [Owner: UInt32] = [:]
        /// Owners whose locks the server would not give back after its restart: the next
        /// lock each asks for is refused with ENOLCK, so the process learns its locks are gone.
        var lost: Set<Owner> = []
    }

    struct State {
        /// The process each POSIX lock owner last locked as: GETLK names it when the holder
        /// is one of this client's owners (the client's kernel checks it is one of its own).
        var pids: [UInt64: UInt32] = [:]
        /// The open file each flock owner locked through: its release drops them.
        var flockFiles: [Owner: ObjectIdentifier] = [:]
        /// Closed and out of the driver's table: a request that found it before must look again.
        var retired = false
    }
    let state = Mutex<State>(State())
    let granted = Mutex<Granted>(Granted())
    /// Unique among this client's files: part of a v4.0 lock owner's name.
    let serial: UInt64

    init(serial: UInt64) { self.serial = serial }

    /// What a LOCK or LOCKU came to.
    enum Outcome { case done(NFS4StateID), denied, lost }

    /// Statuses that say the server no longer has the stateids sent (a restart, a lease
    /// that expired, an administrator): STALE_STATEID, OLD_STATEID, BAD_STATEID,
    /// ADMIN_REVOKED, EXPIRED.
    static func losesState(_ status: UInt32) -> Bool { [10023, 10024, 10025, 10047, 10011].contains(status) }

    /// The name a lock owner has on the server, with the client id of the session. On
    /// v4.0 (`file` given) one per file: `ferry-lock-p<owner>-<serial>`.
    static func name(of owner: Owner, file: NFS4FileLocks? = nil) -> [UInt8] {
        let base = "ferry-lock-\(owner.flock ? "f" : "p")\(String(owner.id, radix: 16))"
        guard let file else { return Array(base.utf8) }
        return Array("\(base)-\(String(file.serial, radix: 16))".utf8)
    }

    /// The POSIX owner a lock owner name of this client's stands for (`name(of:)`).
    static func posixOwner(named name: [UInt8]) -> UInt64? {
        let prefix = Array("ferry-lock-p".utf8)
        guard name.starts(with: prefix) else { return nil }
        let id = name.dropFirst(prefix.count).prefix { $0 != UInt8(ascii: "-") }
        return UInt64(String(decoding: id, as: UTF8.self), radix: 16)
    }

    /// Whether a reply of this status moves a v4.0 owner's seqid on: all but those RFC 7530
    /// §9.1.7 names (STALE_CLIENTID, STALE_STATEID, BAD_STATEID, BAD_SEQID, BADXDR,
    /// RESOURCE, NOFILEHANDLE, MOVED), which the server answers without counting the request.
    static func advancesSeqid(_ status: UInt32) -> Bool {
        ![10022, 10023, 10025, 10026, 10036, 10018, 10020, 10019].contains(status)
    }

    /// Reads the result of a seqid-carrying operation with `body`; on v4.0 (`sequenced`)
    /// moves the owner's seqid on with `advance` if the server counted it.
    func sequenced<T>(_ sequenced: Bool, _ advance: (inout Granted) -> Void,
                      _ body: () throws(NFS4Error) -> T) throws(NFS4Error) -> T {
        do throws(NFS4Error) {
            let value = try body()
            if sequenced { granted.withLock { advance(&$0) } }
            return value
        } catch {
            if sequenced, case .status(let s) = error, Self.advancesSeqid(s) { granted.withLock { advance(&$0) } }
            throw error
        }
    }

    /// A range as LOCK takes it: length UInt64.max for "to end of file".
    static func wire(start: UInt64, end: UInt64) -> (offset: UInt64, length: UInt64) {
        if end >= RecordLock.toEndOfFile { return (start, UInt64.max) }
        return (start, end - start + 1)
    }

    /// The stateid as a request names it: seqid 0, "the current one" in a v4.1 session.
    static func current(_ stateid: NFS4StateID) -> NFS4StateID { NFS4StateID(seqid: 0, other: stateid.other) }
}
