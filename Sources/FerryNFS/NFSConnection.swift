#if canImport(Glibc)
import Glibc
#endif
import CNFS
import FerryCore

/// One RPC sent on a connection and not yet answered. The libnfs callback owns one
/// reference (taken when the call is queued) and runs `onSuccess` with the decoded reply,
/// which is valid only during the callback: `onSuccess` copies out what it needs.
final class PendingCall {
    var finished = false
    var status: Int32 = 0
    /// Set when the request gave up on this call (deadline, broken connection): the
    /// buffers `onSuccess` would write to may belong to another request by then.
    var abandoned = false
    let onSuccess: (UnsafeMutableRawPointer) -> Void
    /// Ferry's own transport (RPCSocket.swift): the results of an accepted reply, positioned
    /// after the RPC header; valid only during the call. False: the call must be sent again
    /// (NFSv4.1 session lost, server busy), which fails the request's wait as a broken
    /// connection would, so it is made again and the call resent.
    var onReply: ((inout XDRReader) -> Bool)?
    /// Ferry's own transport: the connection went away with this call unanswered.
    var onCancel: (() -> Void)?
    /// Ferry's own transport: the server answered, but did not accept the call (or the reply
    /// was not an RPC reply): its result stays EIO.
    var denied = false
    /// Ferry's own transport: where the reply's bulk data goes straight from the socket.
    var direct: DirectData?
    init(_ onSuccess: @escaping (UnsafeMutableRawPointer) -> Void) { self.onSuccess = onSuccess }
    init(onReply: @escaping (inout XDRReader) -> Bool, onCancel: (() -> Void)?) {
        self.onSuccess = { _ in }
        self.onReply = onReply
        self.onCancel = onCancel
    }
}

/// The one C callback every call uses; `privateData` is a retained `PendingCall`.
private let completion: rpc_cb = { _, status, data, privateData in
    // Sound: `send` passed a +1 reference to a PendingCall as private data; libnfs calls
    // this exactly once per queued call (reply, error or cancel), so it is released once.
    let call = Unmanaged<PendingCall>.fromOpaque(privateData!).takeRetainedValue()
    call.finished = true
    call.status = status
    if status == RPC_STATUS_SUCCESS, !call.abandoned, let data { call.onSuccess(data) }
}

/// Why a call did not get an answer.
enum ConnectionFailure: Error {
    /// The connection broke (or could not be made): worth reconnecting and sending again.
    case broken(String)
    /// The request's deadline passed.
    case timedOut
    /// The call cannot be made at all (it does not encode, or the server refused the RPC
    /// itself): sending it again would fail the same way.
    case refused(String)
}

/// One libnfs RPC context connected to the server's NFS program: single-threaded, so a
/// request holds the connection's lock while it sends calls and services the socket
/// until its replies are in. Several calls of one request (the pieces of a large READ or
/// WRITE) are in flight at once.
/// @unchecked Sendable: `rpc` and the credentials it carries are touched only with `lock` held (the
/// `isConnected` peek is a hint re-checked under the lock); `server` is immutable.
final class NFSConnection: @unchecked Sendable {
    let server: String
    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private(set) var rpc: OpaquePointer?
    /// Ferry's own RPC connection (NFSv4), used instead of `rpc`.
    private(set) var own: RPCSocket?
    /// Where the own transport reports replies the server did not accept (set by the client).
    var deniedLog: ([[UInt32]]) -> Void = { _ in }
    /// The AUTH_SYS identity now set on `rpc`, so the same caller costs nothing.
    private var authUID: UInt32 = .max, authGID: UInt32 = .max
    private var authGroups: [UInt32] = []
    private var hasAuth = false

    init(server: String) {
        self.server = server
        pthread_mutex_init(lock, nil)
    }

    deinit {
        drop()
        pthread_mutex_destroy(lock)
        lock.deallocate()
    }

    func tryLock() -> Bool { pthread_mutex_trylock(lock) == 0 }
    func lock_() { pthread_mutex_lock(lock) }
    /// Waits for the connection until `deadline`; false if it passed first.
    func lock(until deadline: Deadline) -> Bool {
        guard deadline.nanoseconds != nil else { pthread_mutex_lock(lock); return true }
        // pthread_mutex_timedlock takes a CLOCK_REALTIME point: convert the time left.
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let left = min(deadline.millisecondsLeft, 86_400_000)
        var until = timespec(tv_sec: now.tv_sec + left / 1000, tv_nsec: now.tv_nsec + (left % 1000) * 1_000_000)
        if until.tv_nsec >= 1_000_000_000 { until.tv_sec += 1; until.tv_nsec -= 1_000_000_000 }
        return pthread_mutex_timedlock(lock, &until) == 0
    }
    func unlock() { pthread_mutex_unlock(lock) }

    var isConnected: Bool { rpc != nil || own != nil }

    /// Forgets the context; every call still queued on it is cancelled (their callbacks run
    /// with RPC_STATUS_CANCEL, and abandoned calls touch nothing).
    func drop() {
        if let own {
            self.own = nil
            hasAuth = false
            own.cancelAll()
        }
        guard let rpc else { return }
        self.rpc = nil
        hasAuth = false
        rpc_destroy_context(rpc)
    }

    /// Connects a fresh context to `program`/`version` (through the server's portmapper).
    func connect(program: Int32, version: Int32, deadline: Deadline) throws(ConnectionFailure) {
        drop()
        guard let context = rpc_init_context() else { throw .broken("rpc_init_context failed") }
        rpc = context
        let call = PendingCall { _ in }
        let rc = rpc_connect_program_async(context, server, program, version, completion,
                                           Unmanaged.passRetained(call).toOpaque())
        if rc != 0 {
            Unmanaged.passUnretained(call).release()
            let message = errorText(context)
            drop()
            throw .broken(message)
        }
        try wait(for: [call], deadline: deadline)
        if call.status != RPC_STATUS_SUCCESS {
            let message = rpc.map(errorText) ?? "connection failed"
            drop()
            throw .broken(message)
        }
    }

    /// Connects Ferry's own RPC transport straight to the server's NFS `port` (NFSv4 needs no
    /// portmapper).
    func connectOwn(port: UInt16, replyLimit: Int, deadline: Deadline) throws(ConnectionFailure) {
        drop()
        own = try RPCSocket.connect(to: server, port: port, replyLimit: replyLimit, deadline: deadline)
    }

    /// Queues one call on the own transport: `build` appends the arguments to a record that
    /// already holds the RPC header.
    func sendOwn(version: UInt32, procedure: UInt32, reserving: Int = 512, _ build: (inout XDRWriter) -> Void,
                 _ call: PendingCall) throws(ConnectionFailure) {
        guard let own else { throw .broken("not connected") }
        var (xid, writer) = own.beginCall(version: version, procedure: procedure, reserving: reserving)
        build(&writer)
        own.queue(&writer, xid: xid, call)
    }

    /// Makes sure the next calls carry `caller` as AUTH_SYS credentials (at most 16 groups,
    /// the protocol's limit).
    func setCredentials(_ caller: Credentials) {
        let groups = caller.groups.prefix(16)
        if hasAuth && authUID == caller.uid && authGID == caller.gid && authGroups.elementsEqual(groups) { return }
        if let own {
            own.setCredentials(caller)
            authUID = caller.uid; authGID = caller.gid; authGroups = Array(groups); hasAuth = true
            return
        }
        guard let rpc else { return }
        var list = Array(groups)
        let auth = list.withUnsafeMutableBufferPointer { buffer in
            libnfs_authunix_create("ferry", caller.uid, caller.gid, UInt32(buffer.count), buffer.baseAddress)
        }
        rpc_set_auth(rpc, auth)
        authUID = caller.uid; authGID = caller.gid; authGroups = list; hasAuth = true
    }

    /// Queues one call: `issue` gets the context, the callback and its private data and
    /// returns libnfs's result (0: queued). The arguments are encoded before `issue`
    /// returns, so they may live on the caller's stack.
    func send(_ issue: (OpaquePointer, rpc_cb, UnsafeMutableRawPointer) -> Int32,
              onSuccess: @escaping (UnsafeMutableRawPointer) -> Void) throws(ConnectionFailure) -> PendingCall {
        guard let rpc else { throw .broken("not connected") }
        let call = PendingCall(onSuccess)
        let privateData = Unmanaged.passRetained(call).toOpaque()
        let queued = issue(rpc, completion, privateData)
        if queued != 0 {
            Unmanaged<PendingCall>.fromOpaque(privateData).release()
            // libnfs's rpc_*_async: -2 is "ZDR error: Failed to encode": no connection helps.
            let why = errorText(rpc)
            if queued == -2 || why.contains("encode") { throw .refused(why) }
            throw .broken(why)
        }
        return call
    }

    /// Services the socket until every call in `calls` has finished, the connection breaks,
    /// or the deadline passes. On failure the calls are abandoned and the context dropped.
    func wait(for calls: [PendingCall], deadline: Deadline) throws(ConnectionFailure) {
        try service(calls, deadline: deadline) { calls.allSatisfy { $0.finished } }
    }

    /// Services the socket until everything queued on it (`calls` and any other request's)
    /// has been written to it, without waiting for replies: a write-behind WRITE's calls stay
    /// outstanding on the connection once it is unlocked, and whoever services it next
    /// (another request, or the drain at FSYNC) takes their replies in. Failures as `wait`.
    func flushOut(_ calls: [PendingCall], deadline: Deadline) throws(ConnectionFailure) {
        try service(calls, deadline: deadline) {
            if let own { return !own.wantsToWrite }
            return rpc.map { rpc_which_events($0) & Int32(POLLOUT) == 0 } ?? false
        }
    }

    private func service(_ calls: [PendingCall], deadline: Deadline, until done: () -> Bool) throws(ConnectionFailure) {
        func fail(_ failure: ConnectionFailure) -> ConnectionFailure { abandon(calls, failure) }
        while !done() {
            if let own {
                let wait = min(deadline.millisecondsLeft, 1000)
                if wait <= 0 && deadline.hasPassed { throw fail(.timedOut) }
                var pfd = pollfd(fd: own.fd, events: own.pollEvents, revents: 0)
                let n: Int32
                do { n = try systemCall { poll(&pfd, 1, Int32(wait)) } } catch {
                    throw fail(.broken("poll: \(String(cString: strerror(error.rawValue)))"))
                }
                if n > 0 {
                    do throws(ConnectionFailure) { try own.service(pfd.revents) } catch {
                        // Replies read before the connection ended still count (a server
                        // that answered, then stopped): only what is unanswered fails.
                        if done() && !calls.contains(where: { $0.status != RPC_STATUS_SUCCESS }) { drop(); return }
                        throw fail(error)
                    }
                    if !own.deniedReplies.isEmpty {
                        // A call the server would not run: worth a line in the log, its request gets EIO.
                        deniedLog(own.deniedReplies)
                        own.deniedReplies.removeAll()
                    }
                }
                if calls.contains(where: { $0.finished && $0.status != RPC_STATUS_SUCCESS }) {
                    throw fail(.broken("the call was not answered (the session was lost, or the server asked for a retry)"))
                }
                continue
            }
            guard let rpc else { throw fail(.broken("connection dropped")) }
            // Wake at least every 100 ms: libnfs runs its own timers from rpc_service.
            let wait = min(deadline.millisecondsLeft, 100)
            if wait <= 0 && deadline.hasPassed { throw fail(.timedOut) }
            var pfd = pollfd(fd: rpc_get_fd(rpc), events: Int16(truncatingIfNeeded: rpc_which_events(rpc)), revents: 0)
            let n: Int32
            do { n = try systemCall { poll(&pfd, 1, Int32(wait)) } } catch {
                throw fail(.broken("poll: \(String(cString: strerror(error.rawValue)))"))
            }
            if rpc_service(rpc, n > 0 ? Int32(pfd.revents) : 0) < 0 {
                throw fail(.broken(errorText(rpc)))
            }
            // A call that ended with an RPC error (not an NFS status) means the transport
            // failed under it (disconnect, reset): the request may try again elsewhere.
            if calls.contains(where: { $0.finished && $0.status != RPC_STATUS_SUCCESS }) {
                throw fail(.broken(errorText(rpc)))
            }
        }
    }

    /// Writes the queued calls to the socket as far as it takes them now, without waiting:
    /// libnfs only queues a call, and sends it from the next `rpc_service`. The server can
    /// then work on them while the caller does something else before `wait`.
    func pushOut(_ calls: [PendingCall]) throws(ConnectionFailure) {
        if let own {
            do throws(ConnectionFailure) { try own.writeOut() } catch { throw abandon(calls, error) }
            return
        }
        guard let rpc, rpc_which_events(rpc) & Int32(POLLOUT) != 0 else { return }
        if rpc_service(rpc, Int32(POLLOUT)) < 0 { throw abandon(calls, .broken(errorText(rpc))) }
    }

    /// Takes in whatever replies have arrived on the own transport, without waiting: lets a
    /// sender that waits for a session slot free the slots of calls answered here.
    func poke() {
        guard let own else { return }
        var pfd = pollfd(fd: own.fd, events: own.pollEvents, revents: 0)
        guard poll(&pfd, 1, 0) > 0 else { return }
        do throws(ConnectionFailure) { try own.service(pfd.revents) } catch { drop() }
    }

    /// Gives up on `calls` (their callbacks will touch nothing) and drops the context.
    private func abandon(_ calls: [PendingCall], _ failure: ConnectionFailure) -> ConnectionFailure {
        for call in calls { call.abandoned = true }
        drop()
        return failure
    }
}

/// When a request gives up: a monotonic point in time, or never (hard mounts).
struct Deadline {
    let nanoseconds: UInt64?

    static let never = Deadline(nanoseconds: nil)

    static func after(seconds: Double) -> Deadline {
        Deadline(nanoseconds: Deadline.now() + UInt64(seconds * 1e9))
    }

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    var hasPassed: Bool { nanoseconds.map { Deadline.now() >= $0 } ?? false }

    /// Milliseconds until the deadline (0 once passed), `Int.max` for never.
    var millisecondsLeft: Int {
        guard let nanoseconds else { return Int.max }
        let now = Deadline.now()
        return now >= nanoseconds ? 0 : Int((nanoseconds - now + 999_999) / 1_000_000)
    }
}

/// libnfs's last error on `rpc` (it may have none).
private func errorText(_ rpc: OpaquePointer) -> String {
    rpc_get_error(rpc).map { String(cString: $0) } ?? "connection lost"
}
