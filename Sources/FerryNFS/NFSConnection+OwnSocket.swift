#if canImport(Glibc)
import Glibc
#endif
import CNFS
import FerryCore

/// NFSv3 calls too big for libnfs 4.0's encode buffer (NFSv4 goes through Ferry's own
/// transport, RPCSocket.swift, at any size). libnfs encodes every call into 4096 bytes
/// plus a hint only WRITE gets (`rpc_allocate_pdu`), so a SYMLINK whose target is longer than
/// about 3.5 KiB cannot be sent on its connections at all ("ZDR error: Failed to encode"),
/// though NFS allows targets up to the server's limit (PATH_MAX - 1 on Linux servers). Such a
/// call is encoded here with libnfs's own exported encoders (the RPC header by
/// `zdr_callmsg`, the arguments by the procedure's `zdr_*args`) into a buffer of the right
/// size, sent on a TCP connection of its own to the server the context is connected to, and
/// its reply decoded by the procedure's `zdr_*res`. No libnfs private structure is touched.
extension NFSConnection {
    /// Largest reply read back: the calls sent this way answer a few hundred bytes.
    static let ownSocketReplyLimit = 64 << 10

    /// Sends one call of `procedure` as `caller` and runs `decode` on its results (a ZDR
    /// positioned after the RPC reply header; what it decodes is freed after it returns).
    func callOnOwnSocket(_ caller: Credentials, version: UInt32, procedure: UInt32, size: Int, deadline: Deadline,
                         encode: (UnsafeMutablePointer<ZDR>) -> Bool,
                         decode: (UnsafeMutablePointer<ZDR>) -> Void) throws(ConnectionFailure) {
        guard let rpc else { throw .broken("not connected") }
        let xid = UInt32.random(in: 1...UInt32.max)
        let message = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 + size, alignment: 8)
        defer { message.deallocate() }
        var groups = Array(caller.groups.prefix(16))
        // Sound: libnfs copies the groups into the credential it builds.
        guard let auth = groups.withUnsafeMutableBufferPointer({ libnfs_authunix_create("ferry", caller.uid, caller.gid, UInt32($0.count), $0.baseAddress) })
        else { throw .refused("cannot make AUTH_SYS credentials") }
        defer { libnfs_auth_destroy(auth) }
        var zdr = ZDR()
        libnfs_zdrmem_create(&zdr, message.baseAddress!.advanced(by: 4).assumingMemoryBound(to: CChar.self), UInt32(size), ZDR_ENCODE)
        defer { libnfs_zdr_destroy(&zdr) }
        var msg = rpc_msg()
        msg.xid = xid
        msg.direction = CALL.rawValue
        msg.body.cbody.rpcvers = UInt32(RPC_MSG_VERSION)
        msg.body.cbody.prog = UInt32(ferry_nfs_program)
        msg.body.cbody.vers = version
        msg.body.cbody.proc = procedure
        msg.body.cbody.cred = auth.pointee.ah_cred
        msg.body.cbody.verf = auth.pointee.ah_verf
        guard libnfs_zdr_callmsg(rpc, &zdr, &msg) != 0, encode(&zdr) else {
            throw .refused("the call does not encode in \(size) bytes")
        }
        let length = Int(libnfs_zdr_getpos(&zdr))
        // One record, its last fragment.
        message.storeBytes(of: (UInt32(length) | 0x8000_0000).bigEndian, as: UInt32.self)

        let socket = try connectedSocket(like: rpc_get_fd(rpc), deadline: deadline)
        defer { close(socket) }
        try transfer(socket, UnsafeMutableRawBufferPointer(rebasing: message[0..<4 + length]), sending: true)
        let reply = try readRecord(socket)
        defer { reply.deallocate() }
        let results = try acceptedResults(reply, xid: xid)
        var decoder = ZDR()
        libnfs_zdrmem_create(&decoder, results.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(results.count), ZDR_DECODE)
        defer { libnfs_zdr_destroy(&decoder) }
        decode(&decoder)
    }

    /// A TCP socket connected to the peer of `fd` (the server's NFS port), from a reserved
    /// port when one can be had (servers that want "secure" ports accept only those), with
    /// the time left until `deadline` as its send and receive timeouts.
    private func connectedSocket(like fd: Int32, deadline: Deadline) throws(ConnectionFailure) -> Int32 {
        var peer = sockaddr_storage()
        var peerLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &peer) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &peerLength) }
        }
        guard named == 0 else { throw .broken("getpeername: \(String(cString: strerror(errno)))") }
        let socket = Glibc.socket(Int32(peer.ss_family), Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard socket >= 0 else { throw .broken("socket: \(String(cString: strerror(errno)))") }
        if peer.ss_family == sa_family_t(AF_INET) {
            var local = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: 0, sin_addr: in_addr(s_addr: 0), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
            _ = bindresvport(socket, &local)   // without the privilege: any port
        }
        let left = deadline.millisecondsLeft
        if left != Int.max {
            var limit = timeval(tv_sec: max(1, left) / 1000, tv_usec: (max(1, left) % 1000) * 1000)
            setsockopt(socket, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        }
        let connected = withUnsafePointer(to: &peer) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(socket, $0, peerLength) }
        }
        guard connected == 0 else {
            let why = String(cString: strerror(errno))
            close(socket)
            throw errno == EAGAIN || errno == EINPROGRESS ? .timedOut : .broken("connect: \(why)")
        }
        return socket
    }

    /// Sends or receives exactly `bytes`; a timeout (SO_SNDTIMEO/SO_RCVTIMEO) is the deadline.
    private func transfer(_ socket: Int32, _ bytes: UnsafeMutableRawBufferPointer, sending: Bool) throws(ConnectionFailure) {
        var done = 0
        while done < bytes.count {
            let start = bytes.baseAddress!.advanced(by: done)
            let n: Int
            do {
                n = try systemCall {
                    sending ? Glibc.send(socket, start, bytes.count - done, Int32(MSG_NOSIGNAL)) : recv(socket, start, bytes.count - done, 0)
                }
            } catch .again {    // EWOULDBLOCK too: the same number on Linux
                throw .timedOut
            } catch {
                throw .broken(String(cString: strerror(error.rawValue)))
            }
            if n == 0 { throw .broken("the server closed the connection") }
            done += n
        }
    }

    /// One RPC record (its fragments joined), at most `ownSocketReplyLimit` bytes, in memory
    /// the caller deallocates.
    private func readRecord(_ socket: Int32) throws(ConnectionFailure) -> UnsafeMutableRawBufferPointer {
        let record = UnsafeMutableRawBufferPointer.allocate(byteCount: NFSConnection.ownSocketReplyLimit, alignment: 8)
        var length = 0, last = false
        let marker = UnsafeMutableRawBufferPointer.allocate(byteCount: 4, alignment: 4)
        defer { marker.deallocate() }
        do throws(ConnectionFailure) {
            while !last {
                try transfer(socket, marker, sending: false)
                let word = UInt32(bigEndian: marker.load(as: UInt32.self))
                last = word & 0x8000_0000 != 0
                let fragment = Int(word & 0x7fff_ffff)
                guard length + fragment <= record.count else { throw .refused("reply of more than \(record.count) bytes") }
                try transfer(socket, UnsafeMutableRawBufferPointer(rebasing: record[length..<length + fragment]), sending: false)
                length += fragment
            }
        } catch {
            record.deallocate()
            throw error
        }
        return UnsafeMutableRawBufferPointer(rebasing: record[0..<length])
    }

    /// The results of an accepted, successful reply to `xid` (RFC 5531 §9): xid, REPLY,
    /// MSG_ACCEPTED, the verifier, SUCCESS, then the procedure's results.
    private func acceptedResults(_ reply: UnsafeMutableRawBufferPointer, xid: UInt32) throws(ConnectionFailure) -> UnsafeMutableRawBufferPointer {
        var r = XDRReader(UnsafeRawBufferPointer(reply))
        guard r.u32() == xid, r.u32() == 1 else { throw .broken("not the reply to our call") }
        guard r.u32() == 0 else { throw .refused("the server denied the RPC (MSG_DENIED)") }
        guard r.u32() != nil, r.opaque() != nil, let status = r.u32() else { throw .broken("reply cut short") }
        guard status == 0 else { throw .refused("the server did not accept the RPC (accept_stat \(status))") }
        return UnsafeMutableRawBufferPointer(rebasing: reply[r.offset...])
    }
}
