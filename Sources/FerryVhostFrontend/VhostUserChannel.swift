import CFerry
import FerrySystem
import FerryVirtio
import Glibc

/// The vhost-user control socket: framing of messages, fds passed with SCM_RIGHTS,
/// and REPLY_ACK. Not thread-safe; the front-end uses it from one thread during setup.
/// @unchecked Sendable: used from one thread at a time (setup, then migration steps); `replyAck` is set
/// during feature negotiation, before any other thread sees the channel.
public final class VhostUserChannel: @unchecked Sendable {
    public let fd: Int32
    /// Set once REPLY_ACK is negotiated: every request without a reply of its own then
    /// asks for an ack, so a back-end's refusal surfaces at the request that caused it.
    public var replyAck = false

    public init(path: String) throws {
        let fd = ferry_fe_connect_unix(path)
        guard fd >= 0 else { throw FrontendError.system("connect(\(path))", errno: errno) }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Sends raw bytes with optional fds: for hostile tests that frame messages themselves.
    public func sendRaw(_ bytes: [UInt8], fds: [Int32] = []) throws {
        let n = bytes.withUnsafeBytes { b in
            fds.withUnsafeBufferPointer { f in
                ferry_sendmsg_fds(fd, b.baseAddress, b.count, f.baseAddress, f.count)
            }
        }
        guard n == bytes.count else {
            throw FrontendError.system("sendmsg", errno: n < 0 ? errno : EPIPE)
        }
    }

    /// Sends one message. `flags` defaults to version 1, plus NEED_REPLY when acks are on
    /// and the request has no reply of its own.
    public func send(_ request: UInt32, payload: [UInt8] = [], fds: [Int32] = [], flags: UInt32? = nil) throws {
        var bytes = [UInt8](repeating: 0, count: VhostUserHeader.size + payload.count)
        let header = VhostUserHeader(request: request, flags: flags ?? defaultFlags(request), size: UInt32(payload.count))
        bytes.withUnsafeMutableBytes { b in
            header.encode(to: b.baseAddress!)
            // Sound: the buffer was sized for header plus payload just above.
            if !payload.isEmpty { (b.baseAddress! + VhostUserHeader.size).copyMemory(from: payload, byteCount: payload.count) }
        }
        try sendRaw(bytes, fds: fds)
    }

    func defaultFlags(_ request: UInt32) -> UInt32 {
        var flags = VhostUserHeader.version
        if replyAck, let r = VhostUserRequest(rawValue: request), !r.hasReply { flags |= VhostUserHeader.needReplyFlag }
        return flags
    }

    /// Whether `request` sent with default flags will be answered.
    func expectsAnswer(_ request: UInt32) -> Bool {
        defaultFlags(request) & VhostUserHeader.needReplyFlag != 0 || (VhostUserRequest(rawValue: request)?.hasReply ?? false)
    }

    /// Reads one reply and checks it answers `request`. Returns its payload.
    public func receiveReply(to request: UInt32, timeoutMilliseconds: Int32 = 10_000) throws -> [UInt8] {
        var header = [UInt8](repeating: 0, count: VhostUserHeader.size)
        try readExactly(&header, timeoutMilliseconds: timeoutMilliseconds)
        guard let h = header.withUnsafeBytes({ VhostUserHeader.decode($0) }) else {
            throw FrontendError.protocolViolation("short reply header")
        }
        guard h.isReply, h.request == request, h.flags & VhostUserHeader.versionMask == VhostUserHeader.version else {
            throw FrontendError.protocolViolation("reply to \(h.request) flags \(h.flags) where a reply to \(request) was due")
        }
        guard h.size <= UInt32(VhostUserHeader.maximumPayload) else {
            throw FrontendError.protocolViolation("reply payload of \(h.size) bytes")
        }
        var payload = [UInt8](repeating: 0, count: Int(h.size))
        try readExactly(&payload, timeoutMilliseconds: timeoutMilliseconds)
        return payload
    }

    /// Sends a request and reads its reply (or ack) when one is due. An ack with a
    /// non-zero status is an error. Returns the reply payload (empty when none).
    @discardableResult
    public func call(_ request: VhostUserRequest, payload: [UInt8] = [], fds: [Int32] = []) throws -> [UInt8] {
        try send(request.rawValue, payload: payload, fds: fds)
        guard expectsAnswer(request.rawValue) else { return [] }
        let reply = try receiveReply(to: request.rawValue)
        if !request.hasReply {
            guard reply.count == 8 else { throw FrontendError.protocolViolation("ack to \(request) of \(reply.count) bytes") }
            let status = reply.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
            guard status == 0 else { throw FrontendError.protocolViolation("back-end refused \(request) (status \(status))") }
        }
        return reply
    }

    /// A request whose reply is one u64 (GET_FEATURES, GET_QUEUE_NUM, ...).
    public func callU64(_ request: VhostUserRequest) throws -> UInt64 {
        let reply = try call(request)
        guard reply.count == 8 else { throw FrontendError.protocolViolation("\(request) reply of \(reply.count) bytes") }
        return UInt64(littleEndian: reply.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
    }

    /// Waits for the back-end to close the socket (or send anything). True if it closed.
    public func peerClosed(timeoutMilliseconds: Int32) -> Bool {
        guard ferry_fe_wait_readable(fd, timeoutMilliseconds) > 0 else { return false }
        var byte: UInt8 = 0
        return recv(fd, &byte, 1, Int32(MSG_PEEK)) == 0
    }

    private func readExactly(_ buffer: inout [UInt8], timeoutMilliseconds: Int32) throws {
        var done = 0
        while done < buffer.count {
            guard ferry_fe_wait_readable(fd, timeoutMilliseconds) > 0 else {
                throw FrontendError.timeout("vhost-user reply")
            }
            let n = (try? systemCall { buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, $0.count - done) } }) ?? -1
            guard n > 0 else { throw FrontendError.protocolViolation("back-end closed the connection") }
            done += n
        }
    }
}

extension Array where Element == UInt8 {
    /// A little-endian u64 payload.
    static func u64(_ v: UInt64) -> [UInt8] { Swift.withUnsafeBytes(of: v.littleEndian) { Array($0) } }
}
