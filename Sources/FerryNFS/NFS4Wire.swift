#if canImport(Glibc)
import Glibc
#endif
import FerryCore

/// NFSv4 operation numbers (RFC 7530 §16, RFC 8881 §18, RFC 7862 §15, RFC 8276 §8).
enum NFS4Op {
    static let access: UInt32 = 3, close: UInt32 = 4, commit: UInt32 = 5, create: UInt32 = 6, getattr: UInt32 = 9
    static let getfh: UInt32 = 10, link: UInt32 = 11, lock: UInt32 = 12, lockt: UInt32 = 13, locku: UInt32 = 14
    static let lookup: UInt32 = 15, open: UInt32 = 18, openConfirm: UInt32 = 20, putfh: UInt32 = 22
    static let putrootfh: UInt32 = 24, read: UInt32 = 25, readdir: UInt32 = 26, readlink: UInt32 = 27
    static let remove: UInt32 = 28, rename: UInt32 = 29, renew: UInt32 = 30, restorefh: UInt32 = 31, savefh: UInt32 = 32
    static let setattr: UInt32 = 34, setclientid: UInt32 = 35, setclientidConfirm: UInt32 = 36, write: UInt32 = 38
    static let releaseLockOwner: UInt32 = 39
    static let exchangeID: UInt32 = 42, createSession: UInt32 = 43, destroySession: UInt32 = 44
    static let freeStateID: UInt32 = 45, sequence: UInt32 = 53, destroyClientID: UInt32 = 57, reclaimComplete: UInt32 = 58
    static let allocate: UInt32 = 59, copy: UInt32 = 60, deallocate: UInt32 = 62, seek: UInt32 = 69
    static let getxattr: UInt32 = 72, setxattr: UInt32 = 73, listxattrs: UInt32 = 74, removexattr: UInt32 = 75
}

/// NFSv4 statuses the client acts on itself (the rest become errnos: `Errno(nfs4:)`).
enum NFS4Status {
    static let ok: UInt32 = 0, notsupp: UInt32 = 10004, delay: UInt32 = 10008, expired: UInt32 = 10011
    static let denied: UInt32 = 10010, openMode: UInt32 = 10038, badStateID: UInt32 = 10025
    static let grace: UInt32 = 10013, minorVersionMismatch: UInt32 = 10021, staleClientID: UInt32 = 10022
    static let badXDR: UInt32 = 10036, opIllegal: UInt32 = 10044, badSession: UInt32 = 10052, badSlot: UInt32 = 10053
    static let connNotBound: UInt32 = 10055, seqMisordered: UInt32 = 10063, retryUncachedRep: UInt32 = 10068
    static let seqFalseRetry: UInt32 = 10076, badHighSlot: UInt32 = 10077, deadSession: UInt32 = 10078
    static let opNotInSession: UInt32 = 10071, union: UInt32 = 10090, noXattr: UInt32 = 10095
    /// Not a server status: a reply bigger than the buffer the caller gave (ERANGE).
    static let range: UInt32 = 0xFFFF_0001

    /// The session (v4.1+) or client id (v4.0) must be made again, then the call sent again.
    static func losesSession(_ s: UInt32) -> Bool {
        [badSession, deadSession, seqMisordered, badSlot, connNotBound, retryUncachedRep, seqFalseRetry, badHighSlot,
         staleClientID, expired].contains(s)
    }
    /// The server asks to come back later (busy, or in its grace period after a restart).
    static func asksToWait(_ s: UInt32) -> Bool { s == delay || s == grace }
    /// The server does not know the operation (a v4.2 operation on a server without it).
    static func unsupported(_ s: UInt32) -> Bool { s == notsupp || s == opIllegal || s == union }
}

/// Why a COMPOUND's result could not be read.
enum NFS4Error: Error, Equatable {
    /// The server answered this status.
    case status(UInt32)
    /// The reply does not decode (cut short, lengths past its end, other operations than asked).
    case garbage
}

/// A stateid4: the anonymous one (all zeros) unless a state is held.
struct NFS4StateID: Equatable {
    var seqid: UInt32 = 0
    var other: [UInt8] = [UInt8](repeating: 0, count: 12)
    static let anonymous = NFS4StateID()
    /// The stateid the previous operation of the same COMPOUND returned (v4.1+).
    static let current = NFS4StateID(seqid: 1)
}

/// Who a LOCK is for: a lock owner's first lock on a file comes with the file's open
/// stateid and the owner's name; later ones with the lock stateid the first one got.
/// The seqids order an owner's requests on v4.0 (`openSeqid` the open owner's, `lockSeqid`
/// the lock owner's); v4.1 sessions replace them, and they are 0 there.
enum NFS4Locker {
    case new(open: NFS4StateID, openSeqid: UInt32 = 0, clientID: UInt64, owner: [UInt8], lockSeqid: UInt32 = 0)
    case existing(NFS4StateID, lockSeqid: UInt32 = 0)
}

/// A lock that conflicts (LOCK4denied): its range (`length` UInt64.max: to end of file) and
/// type (READ_LT 1, WRITE_LT 2, or their blocking kinds 3, 4).
struct NFS4LockDenied: Equatable, Error {
    var offset: UInt64, length: UInt64, type: UInt32
    /// The holder: its client id and owner name (the client's own business; Ferry reads
    /// only its own owners' names back).
    var clientID: UInt64 = 0, owner: [UInt8] = []
}

/// An NFSv4.1 session id.
typealias NFS4SessionID = [UInt8]

/// Channel attributes of CREATE_SESSION (RFC 8881 §18.36).
struct NFS4ChannelAttributes: Equatable {
    var headerPad: UInt32 = 0, maxRequest: UInt32, maxResponse: UInt32, maxResponseCached: UInt32
    var maxOperations: UInt32, maxRequests: UInt32
}

/// One COMPOUND being encoded, straight into the record the RPC transport sends: no
/// intermediate structures, the data of a WRITE copied once.
struct NFS4Request {
    private(set) var w: XDRWriter
    private let countAt: Int
    private(set) var count: UInt32 = 0
    let minor: UInt32

    init(_ writer: XDRWriter, minor: UInt32) {
        var taken = writer
        self.init(taking: &taken, minor: minor)
    }

    /// Continues `writer`'s record in place: its buffer moves in (no copy of a WRITE's
    /// megabyte, no second allocation) until `finish(into:)` moves it back.
    init(taking writer: inout XDRWriter, minor: UInt32) {
        w = XDRWriter(reserving: 0)
        swap(&w, &writer)
        self.minor = minor
        w.u32(0)                 // tag: empty
        w.u32(minor)
        countAt = w.count
        w.u32(0)                 // operation count, set by `finish`
    }

    /// The record, its operation count filled in.
    func finish() -> XDRWriter {
        var done = w
        done.patch(count, at: countAt)
        return done
    }

    /// Fills in the operation count and moves the record back into `writer`.
    mutating func finish(into writer: inout XDRWriter) {
        w.patch(count, at: countAt)
        swap(&w, &writer)
    }

    private mutating func op(_ n: UInt32) { w.u32(n); count += 1 }
    private mutating func stateid(_ s: NFS4StateID) { w.u32(s.seqid); w.fixed(s.other) }
    private mutating func fattr(_ e: Encoded4) { w.bitmap(NFS4Attribute.bitmap(e.bits)); w.opaque(e.values) }
    private mutating func verifier(_ v: UInt64) { w.u64(v) }

    mutating func putfh(_ h: FileHandle) { op(NFS4Op.putfh); w.opaque(h.bytes) }
    mutating func putrootfh() { op(NFS4Op.putrootfh) }
    mutating func getfh() { op(NFS4Op.getfh) }
    mutating func savefh() { op(NFS4Op.savefh) }
    mutating func restorefh() { op(NFS4Op.restorefh) }
    mutating func readlink() { op(NFS4Op.readlink) }
    mutating func lookup(_ name: UnsafeRawBufferPointer) { op(NFS4Op.lookup); w.opaque(name) }
    mutating func getattr(_ bitmap: [UInt32]) { op(NFS4Op.getattr); w.bitmap(bitmap) }
    mutating func setattr(_ e: Encoded4, stateid s: NFS4StateID = .anonymous) { op(NFS4Op.setattr); stateid(s); fattr(e) }
    mutating func access(_ mask: UInt32) { op(NFS4Op.access); w.u32(mask) }
    mutating func remove(_ name: UnsafeRawBufferPointer) { op(NFS4Op.remove); w.opaque(name) }
    mutating func rename(_ old: UnsafeRawBufferPointer, _ new: UnsafeRawBufferPointer) { op(NFS4Op.rename); w.opaque(old); w.opaque(new) }
    mutating func link(_ name: UnsafeRawBufferPointer) { op(NFS4Op.link); w.opaque(name) }
    mutating func readdir(cookie: UInt64, verifier v: UInt64, dircount: UInt32 = 8192, maxcount: UInt32 = 32768, bitmap: [UInt32]) {
        op(NFS4Op.readdir); w.u64(cookie); verifier(v); w.u32(dircount); w.u32(maxcount); w.bitmap(bitmap)
    }
    /// CREATE of anything but a regular file (nfs_ftype4: 2 dir, 3 blk, 4 chr, 5 lnk, 6 sock, 7 fifo).
    mutating func create(type: UInt32, name: UnsafeRawBufferPointer, attributes: Encoded4,
                         linkTarget: UnsafeRawBufferPointer? = nil, device: (UInt32, UInt32) = (0, 0)) {
        op(NFS4Op.create); w.u32(type)
        switch type {
        case 5: w.opaque(linkTarget ?? UnsafeRawBufferPointer(start: nil, count: 0))
        case 3, 4: w.u32(device.0); w.u32(device.1)
        default: break
        }
        w.opaque(name); fattr(attributes)
    }
    /// OPEN with create of `name` in the current directory (share both, deny none).
    mutating func openCreate(name: UnsafeRawBufferPointer, exclusive: Bool, attributes: Encoded4, clientID: UInt64, owner: [UInt8], seqid: UInt32 = 0) {
        op(NFS4Op.open); w.u32(seqid); w.u32(3); w.u32(0)
        w.u64(clientID); w.opaque(owner)
        w.u32(1)                             // OPEN4_CREATE
        w.u32(exclusive ? 1 : 0)             // GUARDED4 or UNCHECKED4
        fattr(attributes)
        w.u32(0); w.opaque(name)             // CLAIM_NULL
    }
    /// OPEN of the current file by its handle (CLAIM_FH, v4.1+), no create: the open state
    /// a file's locks hang from. `access`: OPEN4_SHARE_ACCESS_READ 1, WRITE 2, BOTH 3.
    mutating func openByHandle(access: UInt32, clientID: UInt64, owner: [UInt8]) {
        op(NFS4Op.open); w.u32(0); w.u32(access); w.u32(0)
        w.u64(clientID); w.opaque(owner)
        w.u32(0)                             // OPEN4_NOCREATE
        w.u32(4)                             // CLAIM_FH
    }
    /// OPEN of `name` in the current directory (CLAIM_NULL), no create: on v4.0, which has
    /// no CLAIM_FH, the open a file's locks hang from. GETFH after it tells which file it was.
    mutating func openByName(_ name: UnsafeRawBufferPointer, access: UInt32, clientID: UInt64, owner: [UInt8], seqid: UInt32) {
        op(NFS4Op.open); w.u32(seqid); w.u32(access); w.u32(0)
        w.u64(clientID); w.opaque(owner)
        w.u32(0)                             // OPEN4_NOCREATE
        w.u32(0); w.opaque(name)             // CLAIM_NULL
    }
    /// OPEN CLAIM_PREVIOUS of the current file (RFC 8881 §18.16): the open this client had
    /// before the server restarted, reclaimed during its grace period. No delegation is
    /// reclaimed (OPEN_DELEGATE_NONE): Ferry never takes one.
    mutating func openPrevious(access: UInt32, clientID: UInt64, owner: [UInt8]) {
        op(NFS4Op.open); w.u32(0); w.u32(access); w.u32(0)
        w.u64(clientID); w.opaque(owner)
        w.u32(0)                             // OPEN4_NOCREATE
        w.u32(1); w.u32(0)                   // CLAIM_PREVIOUS, OPEN_DELEGATE_NONE
    }
    /// LOCK of a range (`length` UInt64.max: to end of file); `type` READ_LT 1 or WRITE_LT 2,
    /// never the blocking kinds (the core retries a waiting lock). A lock owner's first lock
    /// on the file names its open stateid (open_to_lock_owner4), later ones the lock stateid.
    /// `reclaim`: a lock held before the server
    /// restarted, taken back during its grace period.
    mutating func lock(type: UInt32, offset: UInt64, length: UInt64, locker: NFS4Locker, reclaim: Bool = false) {
        op(NFS4Op.lock); w.u32(type); w.bool(reclaim); w.u64(offset); w.u64(length)
        switch locker {
        case .new(let open, let openSeqid, let clientID, let owner, let lockSeqid):
            w.bool(true); w.u32(openSeqid); stateid(open); w.u32(lockSeqid); w.u64(clientID); w.opaque(owner)
        case .existing(let s, let lockSeqid):
            w.bool(false); stateid(s); w.u32(lockSeqid)
        }
    }
    mutating func lockt(type: UInt32, offset: UInt64, length: UInt64, clientID: UInt64, owner: [UInt8]) {
        op(NFS4Op.lockt); w.u32(type); w.u64(offset); w.u64(length); w.u64(clientID); w.opaque(owner)
    }
    /// LOCKU; `seqid` the lock owner's (v4.0; 0 on v4.1+).
    mutating func locku(type: UInt32, _ s: NFS4StateID, seqid: UInt32 = 0, offset: UInt64, length: UInt64) {
        op(NFS4Op.locku); w.u32(type); w.u32(seqid); stateid(s); w.u64(offset); w.u64(length)
    }
    /// RELEASE_LOCKOWNER (v4.0): the server forgets a lock owner that holds no locks.
    mutating func releaseLockOwner(clientID: UInt64, owner: [UInt8]) { op(NFS4Op.releaseLockOwner); w.u64(clientID); w.opaque(owner) }
    mutating func freeStateID(_ s: NFS4StateID) { op(NFS4Op.freeStateID); stateid(s) }
    mutating func openConfirm(_ s: NFS4StateID, seqid: UInt32) { op(NFS4Op.openConfirm); stateid(s); w.u32(seqid) }
    mutating func close(_ s: NFS4StateID, seqid: UInt32) { op(NFS4Op.close); w.u32(seqid); stateid(s) }
    mutating func read(offset: UInt64, count: Int) { op(NFS4Op.read); stateid(.anonymous); w.u64(offset); w.u32(UInt32(count)) }
    mutating func write(offset: UInt64, stable: UInt32, data: UnsafeRawBufferPointer) {
        op(NFS4Op.write); stateid(.anonymous); w.u64(offset); w.u32(stable); w.opaque(data)
    }
    mutating func commit() { op(NFS4Op.commit); w.u64(0); w.u32(0) }
    mutating func setclientid(verifier v: UInt64, id: [UInt8]) {
        op(NFS4Op.setclientid); verifier(v); w.opaque(id)
        w.u32(0); w.string("tcp"); w.string("0.0.0.0.0.0")   // no callback: no delegations
        w.u32(0)
    }
    mutating func setclientidConfirm(clientID: UInt64, confirm: UInt64) { op(NFS4Op.setclientidConfirm); w.u64(clientID); verifier(confirm) }
    mutating func renew(clientID: UInt64) { op(NFS4Op.renew); w.u64(clientID) }
    mutating func exchangeID(verifier v: UInt64, owner: [UInt8]) {
        op(NFS4Op.exchangeID); verifier(v); w.opaque(owner)
        w.u32(0)                             // flags: none asked (the server says what it is)
        w.u32(0)                             // SP4_NONE
        w.u32(0)                             // no implementation id
    }
    mutating func createSession(clientID: UInt64, sequence: UInt32, fore: NFS4ChannelAttributes) {
        op(NFS4Op.createSession); w.u64(clientID); w.u32(sequence)
        w.u32(0)                             // flags: no persistence, no back channel
        for c in [fore, NFS4ChannelAttributes(maxRequest: 4096, maxResponse: 4096, maxResponseCached: 0, maxOperations: 2, maxRequests: 1)] {
            w.u32(c.headerPad); w.u32(c.maxRequest); w.u32(c.maxResponse); w.u32(c.maxResponseCached)
            w.u32(c.maxOperations); w.u32(c.maxRequests); w.u32(0)
        }
        w.u32(0x4000_0000)                   // callback program (unused)
        w.u32(1); w.u32(0)                   // callback security: AUTH_NONE
    }
    mutating func sequence(session: NFS4SessionID, sequenceID: UInt32, slot: UInt32, highestSlot: UInt32) {
        op(NFS4Op.sequence); w.fixed(session); w.u32(sequenceID); w.u32(slot); w.u32(highestSlot); w.bool(false)
    }
    mutating func destroySession(_ session: NFS4SessionID) { op(NFS4Op.destroySession); w.fixed(session) }
    mutating func reclaimComplete() { op(NFS4Op.reclaimComplete); w.bool(false) }
    mutating func allocate(offset: UInt64, length: UInt64) { op(NFS4Op.allocate); stateid(.anonymous); w.u64(offset); w.u64(length) }
    mutating func deallocate(offset: UInt64, length: UInt64) { op(NFS4Op.deallocate); stateid(.anonymous); w.u64(offset); w.u64(length) }
    /// SEEK: `hole` false looks for data (NFS4_CONTENT_DATA), true for a hole.
    mutating func seek(offset: UInt64, hole: Bool) { op(NFS4Op.seek); stateid(.anonymous); w.u64(offset); w.u32(hole ? 1 : 0) }
    /// COPY within one server (the saved handle is the source, the current one the target).
    mutating func copy(from: UInt64, to: UInt64, count: UInt64) {
        op(NFS4Op.copy); stateid(.anonymous); stateid(.anonymous); w.u64(from); w.u64(to); w.u64(count)
        w.bool(false); w.bool(true); w.u32(0)
    }
    mutating func getxattr(_ name: UnsafeRawBufferPointer) { op(NFS4Op.getxattr); w.opaque(name) }
    /// SETXATTR; `how`: 0 either, 1 create only, 2 replace only.
    mutating func setxattr(_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer, how: UInt32) {
        op(NFS4Op.setxattr); w.u32(how); w.opaque(name); w.opaque(value)
    }
    mutating func listxattrs(cookie: UInt64, maxcount: UInt32) { op(NFS4Op.listxattrs); w.u64(cookie); w.u32(maxcount) }
    mutating func removexattr(_ name: UnsafeRawBufferPointer) { op(NFS4Op.removexattr); w.opaque(name) }
}

/// A COMPOUND's reply, read in the order its operations were sent. Each reader checks the
/// operation number and status first and throws a failed status as `.status`; anything
/// that does not decode is `.garbage` (EIO), however the server shaped it.
struct NFS4Reply {
    private(set) var r: XDRReader
    /// The COMPOUND's status: that of its last operation.
    let status: UInt32
    private var left: UInt32

    init(_ reader: XDRReader) throws(NFS4Error) {
        r = reader
        guard let status = r.u32(), r.opaque(max: 1024) != nil, let count = r.u32() else { throw .garbage }
        self.status = status
        left = count
    }

    /// Starts the next result, which must be of operation `n`.
    mutating func op(_ n: UInt32) throws(NFS4Error) {
        guard left > 0 else { throw status != NFS4Status.ok ? .status(status) : .garbage }
        left -= 1
        guard let number = r.u32(), let s = r.u32() else { throw .garbage }
        // An operation the server does not know comes back as OP_ILLEGAL (10044) with its status.
        if number != n && !(number == NFS4Status.opIllegal && s != NFS4Status.ok) { throw .garbage }
        if s != NFS4Status.ok { throw .status(s) }
    }

    private mutating func need<T>(_ v: T?) throws(NFS4Error) -> T {
        guard let v else { throw .garbage }
        return v
    }
    private mutating func skip(_ words: Int) throws(NFS4Error) {
        for _ in 0..<words { _ = try need(r.u32()) }
    }
    private mutating func stateid() throws(NFS4Error) -> NFS4StateID {
        let seqid = try need(r.u32())
        return NFS4StateID(seqid: seqid, other: Array(try need(r.fixed(12))))
    }
    private mutating func changeInfo() throws(NFS4Error) { try skip(5) }   // atomic, before, after
    private mutating func verifier() throws(NFS4Error) -> UInt64 { try need(r.u64()) }
    mutating func fattr() throws(NFS4Error) -> Decoded4 {
        let words = try need(r.bitmap())
        let values = try need(r.opaque())
        return try need(Decoded4(words: words, encoded: values))
    }

    mutating func putfh() throws(NFS4Error) { try op(NFS4Op.putfh) }
    mutating func putrootfh() throws(NFS4Error) { try op(NFS4Op.putrootfh) }
    mutating func savefh() throws(NFS4Error) { try op(NFS4Op.savefh) }
    mutating func restorefh() throws(NFS4Error) { try op(NFS4Op.restorefh) }
    mutating func lookup() throws(NFS4Error) { try op(NFS4Op.lookup) }
    mutating func getfh() throws(NFS4Error) -> FileHandle {
        try op(NFS4Op.getfh)
        let bytes = try need(r.opaque(max: 128))
        guard !bytes.isEmpty else { throw .garbage }
        return FileHandle(bytes: Array(bytes))
    }
    mutating func getattr() throws(NFS4Error) -> Decoded4 { try op(NFS4Op.getattr); return try fattr() }
    mutating func setattr() throws(NFS4Error) { try op(NFS4Op.setattr); _ = try need(r.bitmap()) }
    mutating func access() throws(NFS4Error) -> UInt32 { try op(NFS4Op.access); _ = try need(r.u32()); return try need(r.u32()) }
    mutating func remove() throws(NFS4Error) { try op(NFS4Op.remove); try changeInfo() }
    mutating func rename() throws(NFS4Error) { try op(NFS4Op.rename); try changeInfo(); try changeInfo() }
    mutating func link() throws(NFS4Error) { try op(NFS4Op.link); try changeInfo() }
    mutating func create() throws(NFS4Error) { try op(NFS4Op.create); try changeInfo(); _ = try need(r.bitmap()) }
    /// READLINK's target, at most `limit` bytes of it copied out.
    mutating func readlink() throws(NFS4Error) -> UnsafeRawBufferPointer {
        try op(NFS4Op.readlink); return try need(r.opaque())
    }
    struct DirectoryEntry { var cookie: UInt64; var name: UnsafeRawBufferPointer; var attributes: Decoded4? }
    /// READDIR: the verifier, the entries (passed to `entry` as they are read) and eof.
    mutating func readdir(_ entry: (DirectoryEntry) -> Void) throws(NFS4Error) -> (verifier: UInt64, eof: Bool) {
        try op(NFS4Op.readdir)
        let v = try verifier()
        while try need(r.bool()) {
            let cookie = try need(r.u64())
            let name = try need(r.opaque(max: 4096))
            let words = try need(r.bitmap())
            let values = try need(r.opaque())
            entry(DirectoryEntry(cookie: cookie, name: name, attributes: Decoded4(words: words, encoded: values)))
        }
        return (v, try need(r.bool()))
    }
    /// OPEN: the open stateid and whether OPEN_CONFIRM is needed (v4.0).
    mutating func open() throws(NFS4Error) -> (NFS4StateID, confirm: Bool) {
        try op(NFS4Op.open)
        let s = try stateid()
        try changeInfo()
        let flags = try need(r.u32())
        _ = try need(r.bitmap())
        switch try need(r.u32()) {             // the delegation Ferry did not ask for
        case 0: break
        case 1:                                // READ: stateid, recall, ace
            _ = try stateid(); try skip(4); _ = try need(r.opaque(max: 1024))
        case 2:                                // WRITE: stateid, recall, space limit, ace
            _ = try stateid(); try skip(1)
            let limitBy = try need(r.u32()); try skip(limitBy == 1 ? 2 : 2)
            try skip(3); _ = try need(r.opaque(max: 1024))
        case 3:                                // NONE_EXT (v4.1)
            let why = try need(r.u32())
            if why == 1 || why == 2 { try skip(1) }
        default: throw .garbage
        }
        return (s, flags & 2 != 0)             // OPEN4_RESULT_CONFIRM
    }
    /// LOCK4denied: the conflicting lock's range, type and owner.
    private mutating func denied() throws(NFS4Error) -> NFS4LockDenied {
        let offset = try need(r.u64()), length = try need(r.u64()), type = try need(r.u32())
        let clientID = try need(r.u64()), owner = try need(r.opaque(max: 1024))
        return NFS4LockDenied(offset: offset, length: length, type: type, clientID: clientID, owner: Array(owner))
    }
    /// Starts the result of operation `n` and returns its status, failed or not (LOCK and
    /// LOCKT carry the conflicting lock with NFS4ERR_DENIED).
    private mutating func opStatus(_ n: UInt32) throws(NFS4Error) -> UInt32 {
        guard left > 0 else { throw status != NFS4Status.ok ? .status(status) : .garbage }
        left -= 1
        guard let number = r.u32(), let s = r.u32() else { throw .garbage }
        if number != n && !(number == NFS4Status.opIllegal && s != NFS4Status.ok) { throw .garbage }
        return s
    }
    /// LOCK: the lock stateid, or the lock in the way.
    mutating func lock() throws(NFS4Error) -> Result<NFS4StateID, NFS4LockDenied> {
        let s = try opStatus(NFS4Op.lock)
        if s == NFS4Status.denied { return .failure(try denied()) }
        if s != NFS4Status.ok { throw .status(s) }
        return .success(try stateid())
    }
    /// LOCKT: the lock in the way, nil if none.
    mutating func lockt() throws(NFS4Error) -> NFS4LockDenied? {
        let s = try opStatus(NFS4Op.lockt)
        if s == NFS4Status.denied { return try denied() }
        if s != NFS4Status.ok { throw .status(s) }
        return nil
    }
    mutating func locku() throws(NFS4Error) -> NFS4StateID { try op(NFS4Op.locku); return try stateid() }
    mutating func freeStateID() throws(NFS4Error) { try op(NFS4Op.freeStateID) }
    mutating func releaseLockOwner() throws(NFS4Error) { try op(NFS4Op.releaseLockOwner) }
    mutating func openConfirm() throws(NFS4Error) -> NFS4StateID { try op(NFS4Op.openConfirm); return try stateid() }
    mutating func close() throws(NFS4Error) { try op(NFS4Op.close); _ = try stateid() }
    /// READ: the data (pointing into the reply) and eof.
    mutating func read() throws(NFS4Error) -> (data: UnsafeRawBufferPointer, eof: Bool) {
        try op(NFS4Op.read)
        let eof = try need(r.bool())
        return (try need(r.opaque()), eof)
    }
    /// READ up to its data: eof and the data's length (for a reply whose data the socket
    /// placed in the caller's buffers, `DirectData`).
    mutating func readHeader() throws(NFS4Error) -> (count: Int, eof: Bool) {
        try op(NFS4Op.read)
        let eof = try need(r.bool())
        return (Int(try need(r.u32())), eof)
    }
    mutating func write() throws(NFS4Error) -> (count: UInt32, committed: UInt32, verifier: UInt64) {
        try op(NFS4Op.write)
        return (try need(r.u32()), try need(r.u32()), try verifier())
    }
    mutating func commit() throws(NFS4Error) -> UInt64 { try op(NFS4Op.commit); return try verifier() }
    mutating func setclientid() throws(NFS4Error) -> (clientID: UInt64, confirm: UInt64) {
        try op(NFS4Op.setclientid); return (try need(r.u64()), try verifier())
    }
    mutating func setclientidConfirm() throws(NFS4Error) { try op(NFS4Op.setclientidConfirm) }
    mutating func renew() throws(NFS4Error) { try op(NFS4Op.renew) }
    /// EXCHANGE_ID: the client id, the sequence CREATE_SESSION takes, and whether the
    /// server already had this client confirmed (EXCHGID4_FLAG_CONFIRMED_R): if not, it
    /// holds none of the client's earlier state.
    mutating func exchangeID() throws(NFS4Error) -> (clientID: UInt64, sequence: UInt32, confirmed: Bool) {
        try op(NFS4Op.exchangeID)
        let id = try need(r.u64()), sequence = try need(r.u32())
        let flags = try need(r.u32())
        guard try need(r.u32()) == 0 else { throw .garbage }   // SP4_NONE, as asked
        _ = try need(r.u64()); _ = try need(r.opaque(max: 1024))   // server owner
        _ = try need(r.opaque(max: 1024))                          // scope
        let impl = try need(r.u32())
        guard impl <= 1 else { throw .garbage }
        if impl == 1 { _ = try need(r.opaque(max: 1024)); _ = try need(r.opaque(max: 1024)); try skip(3) }
        return (id, sequence, flags & 0x8000_0000 != 0)
    }
    mutating func createSession() throws(NFS4Error) -> (NFS4SessionID, NFS4ChannelAttributes) {
        try op(NFS4Op.createSession)
        let session = Array(try need(r.fixed(16)))
        try skip(2)                            // sequence, flags
        var channels: [NFS4ChannelAttributes] = []
        for _ in 0..<2 {
            var v: [UInt32] = []
            for _ in 0..<6 { v.append(try need(r.u32())) }
            let ird = try need(r.u32())
            guard ird <= 1 else { throw .garbage }
            try skip(Int(ird))
            channels.append(NFS4ChannelAttributes(headerPad: v[0], maxRequest: v[1], maxResponse: v[2], maxResponseCached: v[3],
                                                  maxOperations: v[4], maxRequests: v[5]))
        }
        return (session, channels[0])
    }
    /// SEQUENCE: the server's highest slot it will use (target) and status flags.
    mutating func sequence() throws(NFS4Error) -> (highestSlot: UInt32, targetHighestSlot: UInt32, flags: UInt32) {
        try op(NFS4Op.sequence)
        _ = try need(r.fixed(16)); try skip(2)
        return (try need(r.u32()), try need(r.u32()), try need(r.u32()))
    }
    mutating func destroySession() throws(NFS4Error) { try op(NFS4Op.destroySession) }
    mutating func reclaimComplete() throws(NFS4Error) { try op(NFS4Op.reclaimComplete) }
    mutating func allocate() throws(NFS4Error) { try op(NFS4Op.allocate) }
    mutating func deallocate() throws(NFS4Error) { try op(NFS4Op.deallocate) }
    mutating func seek() throws(NFS4Error) -> (eof: Bool, offset: UInt64) {
        try op(NFS4Op.seek); return (try need(r.bool()), try need(r.u64()))
    }
    mutating func copy() throws(NFS4Error) -> UInt64 {
        try op(NFS4Op.copy)
        let callbacks = try need(r.u32())
        guard callbacks <= 1 else { throw .garbage }
        for _ in 0..<callbacks { _ = try stateid() }
        let count = try need(r.u64())
        try skip(1); _ = try verifier(); try skip(2)
        return count
    }
    mutating func getxattr() throws(NFS4Error) -> UnsafeRawBufferPointer { try op(NFS4Op.getxattr); return try need(r.opaque()) }
    mutating func setxattr() throws(NFS4Error) { try op(NFS4Op.setxattr); try changeInfo() }
    mutating func removexattr() throws(NFS4Error) { try op(NFS4Op.removexattr); try changeInfo() }
    /// LISTXATTRS: the names (passed to `name`), the next cookie and eof.
    mutating func listxattrs(_ name: (UnsafeRawBufferPointer) -> Void) throws(NFS4Error) -> (cookie: UInt64, eof: Bool) {
        try op(NFS4Op.listxattrs)
        let cookie = try need(r.u64())
        let count = try need(r.u32())
        guard Int(count) <= r.remaining / 4 else { throw .garbage }
        for _ in 0..<count { name(try need(r.opaque(max: 255))) }
        return (cookie, try need(r.bool()))
    }
}
