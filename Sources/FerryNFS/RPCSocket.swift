#if canImport(Glibc)
import Glibc
#endif
import CNFS
import FerryCore

/// Where a call's bulk data (a READ's) goes: received from the socket straight into the
/// request's own buffers, without passing through the reply record (one copy of each byte
/// fewer, which is most of a large READ's cost in Ferry). Made per call, so a call sent again
/// starts afresh.
final class DirectData {
    let buffers: IOVectors
    /// Where in `buffers` the data starts, and how much room the call has there.
    let start: Int
    let capacity: Int
    /// Finds the data in a reply's first bytes (the whole record from the xid on, as far as it
    /// has been read): the data's offset in the record and its length, or nil when the reply
    /// carries none (an error) or its headers are not all there. Set by the sender, which
    /// knows the reply's layout.
    var locate: ((UnsafeRawBufferPointer) -> (offset: Int, length: Int)?)?
    /// Bytes placed in `buffers`, once the socket has chosen to place them (nil: the data
    /// came inline in the record, as in any other reply).
    var placed: Int?

    init(buffers: IOVectors, start: Int, capacity: Int) {
        self.buffers = buffers; self.start = start; self.capacity = capacity
    }
}

/// ONC RPC (RFC 5531) over one TCP connection, Ferry's own: used for NFSv4, whose COMPOUNDs
/// libnfs 4.0 can neither size (it encodes every call into 4 KiB) nor extend (no SEQUENCE).
/// Calls are whole records built by the caller (`beginCall`, then the arguments, then
/// `queue`); several are in flight at once and their replies matched by xid. The socket is
/// non-blocking and serviced by whoever holds the owning `NFSConnection`'s lock, as libnfs's
/// context is. A reply longer than `replyLimit` breaks the connection before anything is
/// allocated for it; a reply that does not decode fails its call with EIO (its `onReply`
/// decides), never the process.
final class RPCSocket {
    static let nfsProgram: UInt32 = 100003
    let fd: Int32
    /// Largest reply record accepted (the largest READ plus room for its COMPOUND).
    var replyLimit: Int
    private var pending: [UInt32: PendingCall] = [:]
    private var outbound: [[UInt8]] = []
    private var outboundOffset = 0
    /// The record being read: its marker's bytes, then its fragments, into `record` (grown
    /// once to the largest record seen, never past `replyLimit`), of which `recordLength`
    /// bytes are filled.
    private var marker = [UInt8](repeating: 0, count: 4)
    private var markerHave = 0
    private var record: [UInt8] = []
    private var recordLength = 0
    private var fragmentLeft = 0
    private var lastFragment = false
    /// A record at least this long is read in two steps: its first `probeLength` bytes, then,
    /// if it answers a call with `DirectData` whose data it carries, the data straight into
    /// that call's buffers and the rest after the headers.
    static let directThreshold = 16 << 10
    static let probeLength = 512
    /// While > 0: the record's first bytes are being read up to here.
    private var probeUntil = 0
    /// The call whose data is being received, how much of it is in, and how much is to come.
    /// The bytes to come are also counted in `fragmentLeft`.
    private var directCall: PendingCall?
    private var directDone = 0
    private var directLeft = 0
    private var nextXID = UInt32.random(in: 1...UInt32.max / 2)
    /// AUTH_SYS credentials of the calls built from now on (`setCredentials`), encoded once.
    private var credentialBody: [UInt8] = []
    /// The first words of replies that were not accepted, for the owner to log.
    var deniedReplies: [[UInt32]] = []

    /// Takes over a connected, non-blocking stream socket (tests use one end of a socketpair
    /// to play a server).
    init(fd: Int32, replyLimit: Int) { self.fd = fd; self.replyLimit = replyLimit }

    deinit { Glibc.close(fd) }

    /// Connects to `server` (a name or address) on `port`, from a reserved port when one can
    /// be had, within `deadline`.
    static func connect(to server: String, port: UInt16, replyLimit: Int, deadline: Deadline) throws(ConnectionFailure) -> RPCSocket {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var found: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(server, String(port), &hints, &found)
        guard rc == 0, let first = found else { throw .broken("cannot resolve \(server): \(String(cString: gai_strerror(rc)))") }
        defer { freeaddrinfo(found) }
        var why = "no address"
        var info: UnsafeMutablePointer<addrinfo>? = first
        while let a = info {
            info = a.pointee.ai_next
            let fd = socket(a.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            guard fd >= 0 else { why = String(cString: strerror(errno)); continue }
            if a.pointee.ai_family == AF_INET {
                var local = sockaddr_in()
                local.sin_family = sa_family_t(AF_INET)
                _ = bindresvport(fd, &local)   // without the privilege: any port
            }
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            if Glibc.connect(fd, a.pointee.ai_addr, a.pointee.ai_addrlen) != 0 && errno != EINPROGRESS {
                why = String(cString: strerror(errno)); Glibc.close(fd); continue
            }
            var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            let wait = Int32(min(deadline.millisecondsLeft, 60_000))
            if poll(&pfd, 1, wait) != 1 {
                Glibc.close(fd)
                if deadline.hasPassed { throw .timedOut }
                why = "connect timed out"; continue
            }
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
            if error != 0 { why = String(cString: strerror(error)); Glibc.close(fd); continue }
            return RPCSocket(fd: fd, replyLimit: replyLimit)
        }
        throw .broken("connect to \(server):\(port): \(why)")
    }

    /// Encodes AUTH_SYS (RFC 5531 §A.1) for `caller`, at most 16 groups (the protocol's limit).
    func setCredentials(_ caller: Credentials) {
        var w = XDRWriter(reserving: 128)
        w.u32(0)                 // stamp
        w.string("ferry")        // machine name
        w.u32(caller.uid); w.u32(caller.gid)
        let groups = caller.groups.prefix(16)
        w.u32(UInt32(groups.count)); for g in groups { w.u32(g) }
        credentialBody = w.bytes
    }

    /// A call's record so far: room for its record mark, then the RPC header of `procedure`
    /// of NFS `version`. The caller appends the arguments and hands it to `queue`.
    func beginCall(version: UInt32, procedure: UInt32, reserving capacity: Int = 512) -> (xid: UInt32, writer: XDRWriter) {
        nextXID &+= 1
        if nextXID == 0 { nextXID = 1 }
        var w = XDRWriter(reserving: capacity + 64 + credentialBody.count)
        w.u32(0)                                  // record mark, set by `queue`
        w.u32(nextXID); w.u32(0)                  // xid, CALL
        w.u32(2); w.u32(RPCSocket.nfsProgram); w.u32(version); w.u32(procedure)
        w.u32(1); w.opaque(credentialBody)        // AUTH_SYS
        w.u32(0); w.u32(0)                        // verifier: AUTH_NONE
        return (nextXID, w)
    }

    /// Queues a record built from `beginCall`, whose reply goes to `call`.
    func queue(_ writer: inout XDRWriter, xid: UInt32, _ call: PendingCall) {
        writer.patch(UInt32(writer.count - 4) | 0x8000_0000, at: 0)
        pending[xid] = call
        outbound.append(writer.bytes)
        writer = XDRWriter(reserving: 0)   // the queue holds the only reference: sent as it is
    }

    var wantsToWrite: Bool { !outbound.isEmpty }
    var pollEvents: Int16 { Int16(POLLIN) | (outbound.isEmpty ? 0 : Int16(POLLOUT)) }

    /// Writes what the socket takes and reads what has arrived, running the callbacks of
    /// the calls answered. Throws when the connection is unusable.
    func service(_ revents: Int16) throws(ConnectionFailure) {
        if revents & Int16(POLLERR | POLLNVAL) != 0 { throw .broken("socket error") }
        try writeOut()
        if revents & Int16(POLLIN | POLLHUP) != 0 { try readIn() }
    }

    func writeOut() throws(ConnectionFailure) {
        while let first = outbound.first {
            let n = first.withUnsafeBytes { raw in
                Glibc.send(fd, raw.baseAddress! + outboundOffset, raw.count - outboundOffset, Int32(MSG_NOSIGNAL))
            }
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { return }
                throw .broken("send: \(String(cString: strerror(errno)))")
            }
            outboundOffset += n
            if outboundOffset == first.count { outbound.removeFirst(); outboundOffset = 0 }
        }
    }

    private func readIn() throws(ConnectionFailure) {
        while true {
            if markerHave < 4 {
                let n = marker.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + markerHave, 4 - markerHave, 0) }
                if n == 0 { throw .broken("the server closed the connection") }
                if n < 0 {
                    if errno == EAGAIN || errno == EINTR { return }
                    throw .broken("recv: \(String(cString: strerror(errno)))")
                }
                markerHave += n
                if markerHave < 4 { continue }
                let word = UInt32(marker[0]) << 24 | UInt32(marker[1]) << 16 | UInt32(marker[2]) << 8 | UInt32(marker[3])
                lastFragment = word & 0x8000_0000 != 0
                fragmentLeft = Int(word & 0x7fff_ffff)
                // Checked before a byte of it is stored: the server says how much, Ferry decides.
                guard recordLength + fragmentLeft <= replyLimit else {
                    throw .broken("reply of more than \(replyLimit) bytes")
                }
                if record.count < recordLength + fragmentLeft {
                    record.append(contentsOf: repeatElement(0, count: recordLength + fragmentLeft - record.count))
                }
                // Only a large record of one fragment can be a READ's data worth placing.
                if recordLength == 0 && lastFragment && fragmentLeft >= Self.directThreshold { probeUntil = Self.probeLength }
            }
            if directLeft > 0 {
                if try !receiveDirect() { return }
                continue
            }
            if fragmentLeft > 0 {
                let at = recordLength
                let want = probeUntil > 0 ? min(fragmentLeft, probeUntil - recordLength) : fragmentLeft
                let n = record.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + at, want, 0) }
                if n == 0 { throw .broken("the server closed the connection") }
                if n < 0 {
                    if errno == EAGAIN || errno == EINTR { return }
                    throw .broken("recv: \(String(cString: strerror(errno)))")
                }
                recordLength += n
                fragmentLeft -= n
                if probeUntil > 0 && (recordLength >= probeUntil || fragmentLeft == 0) {
                    probeUntil = 0
                    placeDirect()
                }
                if fragmentLeft > 0 { continue }
            }
            markerHave = 0
            if lastFragment {
                deliver()
                recordLength = 0
                directCall = nil
            }
        }
    }

    /// After a large record's first bytes: if it answers a waiting call with `DirectData`
    /// and carries data that fits it, the data read so far goes to the call's buffers, the
    /// record is cut back to its headers, and the rest of the data is to be received there.
    private func placeDirect() {
        guard recordLength >= 4 else { return }
        let xid = UInt32(record[0]) << 24 | UInt32(record[1]) << 16 | UInt32(record[2]) << 8 | UInt32(record[3])
        guard let call = pending[xid], !call.abandoned, let direct = call.direct, let locate = direct.locate else { return }
        let length = recordLength
        guard let (offset, count) = record.withUnsafeBytes({ locate(UnsafeRawBufferPointer(rebasing: $0[0..<length])) }),
              offset >= 0, offset <= recordLength, count >= 0, count <= direct.capacity,
              offset + count <= recordLength + fragmentLeft,
              direct.start + count <= direct.buffers.totalLength else { return }
        let have = recordLength - offset
        // All of it is in already: the usual way costs nothing more.
        guard have < count else { return }
        record.withUnsafeBytes { raw in
            _ = direct.buffers.copyIn(UnsafeRawBufferPointer(rebasing: raw[offset..<length]), at: direct.start)
        }
        recordLength = offset
        directCall = call
        directDone = have
        directLeft = count - have
        direct.placed = count
    }

    /// Receives what has arrived of the data being placed: into the call's buffers, or, once
    /// the call is abandoned (its buffers may be another request's by now), into the unused
    /// part of `record`, where it is dropped. False when nothing more is there yet.
    private func receiveDirect() throws(ConnectionFailure) -> Bool {
        let n: Int
        if let call = directCall, !call.abandoned, let direct = call.direct {
            n = Self.receive(fd, into: direct.buffers, at: direct.start + directDone, count: directLeft)
        } else {
            let at = recordLength, room = min(directLeft, record.count - recordLength)
            n = record.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + at, room, 0) }
        }
        if n == 0 { throw .broken("the server closed the connection") }
        if n < 0 {
            if errno == EAGAIN || errno == EINTR { return false }
            throw .broken("recv: \(String(cString: strerror(errno)))")
        }
        directDone += n
        directLeft -= n
        fragmentLeft -= n
        return true
    }

    /// readv(2) of at most `count` bytes into `buffers` from byte `offset` on.
    private static func receive(_ fd: Int32, into buffers: IOVectors, at offset: Int, count: Int) -> Int {
        buffers.withSlice(from: offset, limit: count) { pieces in
            pieces.isEmpty ? 0 : readv(fd, pieces.baseAddress, Int32(pieces.count))
        }
    }

    /// Runs the callback of the call `record` answers. A reply to no call of ours (one
    /// abandoned) is dropped.
    private func deliver() {
        record.withUnsafeBytes { whole in
            let raw = UnsafeRawBufferPointer(rebasing: whole[0..<recordLength])
            var r = XDRReader(raw)
            guard let xid = r.u32(), let call = pending.removeValue(forKey: xid) else { return }
            call.finished = true
            call.status = RPC_STATUS_SUCCESS
            guard !call.abandoned else { return }
            var header = r
            guard let results = RPCSocket.acceptedResults(&r) else {
                // Denied, not accepted, or garbage: the call's default result (EIO) stands.
                call.denied = true
                var words: [UInt32] = []
                while words.count < 6, let w = header.u32() { words.append(w) }
                deniedReplies.append(words)
                return
            }
            var body = XDRReader(UnsafeRawBufferPointer(rebasing: raw[results...]))
            if call.onReply?(&body) == false { call.status = RPC_STATUS_ERROR }
        }
    }

    /// The offset of the results in an accepted, successful reply (RFC 5531 §9), `r` past the xid.
    static func acceptedResults(_ r: inout XDRReader) -> Int? {
        guard r.u32() == 1, r.u32() == 0,          // REPLY, MSG_ACCEPTED
              r.u32() != nil, r.opaque(max: 400) != nil,   // verifier
              r.u32() == 0 else { return nil }      // SUCCESS
        return r.offset
    }

    /// Every call still waiting: cancelled (the connection is going away).
    func cancelAll() {
        for call in pending.values {
            call.finished = true
            call.status = RPC_STATUS_CANCEL
            call.onCancel?()
        }
        pending.removeAll()
        outbound.removeAll()
    }
}
