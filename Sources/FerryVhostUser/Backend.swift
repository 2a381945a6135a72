import CFerry
import FerryCore
import FerryVirtio
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

public struct VhostUserFSOptions: Sendable {
    /// GET_QUEUE_NUM answers 1 + this (the hiprio queue and the request queues).
    public var maxRequestQueues: Int = 16
    /// A larger SET_VRING_NUM is refused.
    public var maxQueueSize: Int = 1024
    /// 0: each queue's thread runs its requests inline. N > 0 (virtiofsd's --thread-pool-size):
    /// each started queue gets N pool threads; its own thread only pops chains and hands them over.
    public var threadPoolSize: Int = 0
    /// Sizes the per-thread request and reply buffers.
    public var maxWrite: UInt32 = 1 << 20
    /// How long a queue thread that has just served requests watches its ring for more
    /// before sleeping (0: sleep at once). Saves the driver's kick and our wake-up when
    /// requests follow each other closely, at the price of a busy CPU; off by default
    /// because on SMT siblings (2-vCPU VMs) the spinning slows the driver more than the
    /// saved wake-up gains.
    public var pollNanoseconds: UInt64 = 20_000
    /// How the export's state is saved and loaded in a live migration (virtiofsd's
    /// --migration-* options).
    public var migration = MigrationOptions()

    public init(maxRequestQueues: Int = 16, maxQueueSize: Int = 1024, threadPoolSize: Int = 0, maxWrite: UInt32 = 1 << 20) {
        self.maxRequestQueues = maxRequestQueues; self.maxQueueSize = maxQueueSize
        self.threadPoolSize = threadPoolSize; self.maxWrite = maxWrite
    }
}

public enum VhostUserDeviceState: Sendable, Equatable {
    /// Waiting for a front-end.
    case listening
    /// Serving a front-end.
    case connected
    /// The current front-end's guest broke the virtqueue rules; its queues are not served
    /// until it resets the device or reconnects.
    case broken(String)
    /// `stop()` was called; `run()` has returned or is about to.
    case stopped
}

public struct VhostUserError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A vhost-user-fs device back-end: listens on a unix socket and serves front-ends
/// (QEMU, cloud-hypervisor…) one after another, until `stop()`.
/// @unchecked Sendable: `message` is the receive buffer of the one thread in `serve`; every other field is
/// immutable, a Mutex or an Atomic (`stop()` only sets `stopping` and writes `stopFD`).
public final class VhostUserFSBackend: @unchecked Sendable {
    private let listenFD: Int32
    /// The socket file we created (removed when `run()` ends), nil for an inherited fd.
    private let socketPath: String?
    private let handler: any FUSERequestHandler
    private let options: VhostUserFSOptions
    private let logger: Logger
    private let stopFD: Int32
    private let stopping = Atomic<Bool>(false)
    private let status = Mutex<(state: VhostUserDeviceState, served: Int)>((.listening, 0))
    private let device: VhostUserFSDevice
    private let message: UnsafeMutableRawBufferPointer

    /// Binds and listens on `socketPath` (a stale socket there is removed; anything else
    /// is refused). The socket is mode 0600, or 0660 and group `socketGroup` when given,
    /// and never more open than that, whatever the process umask: see `bindPrivately`.
    public init(socketPath: String, socketGroup: UInt32? = nil, handler: any FUSERequestHandler,
                options: VhostUserFSOptions = .init(), logger: Logger) throws(VhostUserError) {
        try Self.validate(options)
        var st = stat()
        if lstat(socketPath, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFSOCK else {
                throw VhostUserError("\(socketPath) exists and is not a socket; refusing to replace it")
            }
            guard unlink(socketPath) == 0 else { throw VhostUserError("cannot remove stale socket \(socketPath): errno \(errno)") }
        }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(socketPath.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw VhostUserError("socket path too long (\(pathBytes.count) bytes): \(socketPath)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
            raw[pathBytes.count] = 0
        }
        let socket: OwnedFD
        do { socket = try OwnedFD(opening: { Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }) } catch {
            throw VhostUserError("socket() failed: errno \(error.rawValue)")
        }
        guard Self.bindPrivately(socket.raw, &address) == 0 else { throw VhostUserError("bind(\(socketPath)) failed: errno \(errno)") }
        // listen at once: the file exists from bind, and a front-end that connects as soon
        // as it sees the file is refused until then. The group gets its access only once
        // the file is its own.
        var ok = listen(socket.raw, 1) == 0
        if ok, let g = socketGroup { ok = chown(socketPath, uid_t.max, g) == 0 && chmod(socketPath, 0o660) == 0 }
        guard ok else {
            let e = errno; unlink(socketPath)
            throw VhostUserError("setting up \(socketPath) failed: errno \(e)")
        }
        listenFD = socket.take()
        self.socketPath = socketPath
        self.handler = handler; self.options = options; self.logger = logger
        stopFD = ferry_eventfd(0, Int32(FERRY_EFD_CLOEXEC | FERRY_EFD_NONBLOCK))
        device = VhostUserFSDevice(handler: handler, options: options, logger: logger, stopFD: stopFD)
        message = .allocate(byteCount: VhostUserHeader.size + VhostUserHeader.maximumPayload, alignment: 8)
    }

    /// Serves on an inherited socket that is already listening (virtiofsd's `--fd`).
    public init(listeningFD: Int32, handler: any FUSERequestHandler, options: VhostUserFSOptions = .init(),
                logger: Logger) throws(VhostUserError) {
        try Self.validate(options)
        var listening: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(listeningFD, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) == 0, listening != 0 else {
            throw VhostUserError("fd \(listeningFD) is not a listening socket")
        }
        listenFD = listeningFD
        socketPath = nil
        self.handler = handler; self.options = options; self.logger = logger
        stopFD = ferry_eventfd(0, Int32(FERRY_EFD_CLOEXEC | FERRY_EFD_NONBLOCK))
        device = VhostUserFSDevice(handler: handler, options: options, logger: logger, stopFD: stopFD)
        message = .allocate(byteCount: VhostUserHeader.size + VhostUserHeader.maximumPayload, alignment: 8)
    }

    /// bind(2) that creates the socket file 0600 (less if the umask takes more): Linux gives
    /// a socket's file the mode of the socket's own inode minus the umask, so an fchmod
    /// before bind is honoured, and the file never exists with more access, as it did
    /// between a bind with the process umask (0 in `ferry` commands) and a chmod after it.
    /// Changing the umask around bind instead would change process state other threads
    /// see. Returns bind's result.
    static func bindPrivately(_ fd: Int32, _ address: inout sockaddr_un) -> Int32 {
        guard fchmod(fd, 0o600) == 0 else { return -1 }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    private static func validate(_ o: VhostUserFSOptions) throws(VhostUserError) {
        guard o.threadPoolSize >= 0, o.threadPoolSize <= 1024 else { throw VhostUserError("threadPoolSize must be 0…1024") }
        guard o.maxRequestQueues >= 1, o.maxRequestQueues <= 255 else { throw VhostUserError("maxRequestQueues must be 1…255") }
        guard o.maxQueueSize >= 1, SplitVirtqueue.isValidSize(UInt32(o.maxQueueSize)) else {
            throw VhostUserError("maxQueueSize must be a power of two up to \(SplitVirtqueue.maximumSize)")
        }
        guard o.maxWrite >= 4096 else { throw VhostUserError("maxWrite must be at least 4096") }
    }

    deinit {
        close(listenFD)
        close(stopFD)
        message.deallocate()
    }

    public var state: VhostUserDeviceState {
        let s = status.withLock { $0.state }
        if s == .connected, let reason = device.brokenReason { return .broken(reason) }
        return s
    }

    public var connectionsServed: Int { status.withLock { $0.served } }

    /// Where the current front-end's device is in a live migration (nothing while none is
    /// connected: a new connection starts with a fresh device state).
    public var migrationStatus: VhostUserMigrationStatus { device.migrationStatus }

    /// The `--migration-*` options of the next device state transfer: a reload changes them
    /// without touching the guest's connection. A transfer under way keeps its own.
    public var migrationOptions: MigrationOptions {
        get { device.migrationOptions }
        set { device.migrationOptions = newValue }
    }

    /// Stops `run()` (from any thread): the current connection is dropped, `run` returns.
    public func stop() {
        stopping.store(true, ordering: .releasing)
        signalEventFD(stopFD)
    }

    /// Accepts front-ends one after another and serves each until it disconnects, until
    /// `stop()`.
    public func run() {
        defer {
            status.withLock { $0.state = .stopped }
            if let p = socketPath { unlink(p) }
        }
        while !stopping.load(ordering: .acquiring) {
            status.withLock { $0.state = .listening }
            var fds = [pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0), pollfd(fd: stopFD, events: Int16(POLLIN), revents: 0)]
            do { _ = try systemCall { poll(&fds, 2, -1) } } catch {
                logger.error("poll on the vhost-user socket failed", metadata: ["errno": "\(error.rawValue)"])
                return
            }
            if stopping.load(ordering: .acquiring) { return }
            guard fds[0].revents & Int16(POLLIN) != 0 else {
                if fds[0].revents != 0 { logger.error("vhost-user listening socket failed"); return }
                continue
            }
            let conn: Int32
            do { conn = try systemCall { accept(listenFD, nil, nil) } } catch {
                if error == .again || error.rawValue == ECONNABORTED { continue }
                logger.error("accept on the vhost-user socket failed", metadata: ["errno": "\(error.rawValue)"])
                return
            }
            _ = ferry_fcntl_int(conn, F_SETFD, FD_CLOEXEC)
            status.withLock { $0.state = .connected; $0.served += 1 }
            logger.info("vhost-user front-end connected")
            serve(connection: conn)
            device.reset()
            close(conn)
            logger.info("vhost-user front-end disconnected; device state dropped")
        }
    }

    // MARK: - One connection

    private func serve(connection fd: Int32) {
        var received = [Int32](repeating: -1, count: 16)
        while !stopping.load(ordering: .acquiring) {
            var pfds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: stopFD, events: Int16(POLLIN), revents: 0)]
            guard (try? systemCall({ poll(&pfds, 2, -1) })) != nil else { return }
            if stopping.load(ordering: .acquiring) { return }
            // Header, with any fds.
            var fds: [Int32] = []
            guard receive(fd, into: message.baseAddress!, count: VhostUserHeader.size, fds: &fds, scratch: &received) else {
                for f in fds { close(f) }
                return
            }
            let header = VhostUserHeader.decode(UnsafeRawBufferPointer(rebasing: message[0..<VhostUserHeader.size]))!
            guard header.flags & VhostUserHeader.versionMask == VhostUserHeader.version else {
                logger.error("vhost-user message with a bad version; closing the connection", metadata: ["flags": "\(header.flags)"])
                for f in fds { close(f) }
                return
            }
            guard header.size <= UInt32(VhostUserHeader.maximumPayload) else {
                logger.error("vhost-user payload too large; closing the connection", metadata: ["size": "\(header.size)", "request": "\(header.request)"])
                for f in fds { close(f) }
                return
            }
            let size = Int(header.size)
            if size > 0 {
                guard receive(fd, into: message.baseAddress! + VhostUserHeader.size, count: size, fds: &fds, scratch: &received) else {
                    for f in fds { close(f) }
                    return
                }
            }
            let payload = UnsafeRawBufferPointer(rebasing: message[VhostUserHeader.size..<(VhostUserHeader.size + size)])
            let reply = device.handle(request: header.request, flags: header.flags, payload: payload, fds: &fds)
            for f in fds { close(f) }
            switch reply {
            case .close(let why):
                logger.error("vhost-user protocol error; closing the connection", metadata: ["reason": "\(why)"])
                return
            case .payload(let bytes):
                guard send(fd, request: header.request, payload: bytes) else { return }
            case .none(let succeeded):
                if header.needsReply {
                    guard send(fd, request: header.request, payload: VhostUserFSDevice.bytes(UInt64(succeeded ? 0 : 1))) else { return }
                }
            }
        }
    }

    /// Reads exactly `count` bytes, collecting fds; false on EOF or error.
    private func receive(_ fd: Int32, into p: UnsafeMutableRawPointer, count: Int, fds: inout [Int32], scratch: inout [Int32]) -> Bool {
        var got = 0
        while got < count {
            var n = 0
            let r: Int
            do {
                r = try systemCall { scratch.withUnsafeMutableBufferPointer { ferry_recvmsg_fds(fd, p + got, count - got, $0.baseAddress, $0.count, &n) } }
            } catch .again {
                continue
            } catch {
                if error.rawValue != ECONNRESET { logger.error("reading the vhost-user socket failed", metadata: ["errno": "\(error.rawValue)"]) }
                return false
            }
            for i in 0..<n { fds.append(scratch[i]) }
            if r == 0 { return false }
            got += r
        }
        return true
    }

    private func send(_ fd: Int32, request: UInt32, payload: [UInt8]) -> Bool {
        var buffer = [UInt8](repeating: 0, count: VhostUserHeader.size + payload.count)
        buffer.withUnsafeMutableBytes { raw in
            VhostUserHeader(request: request, flags: VhostUserHeader.version | VhostUserHeader.replyFlag, size: UInt32(payload.count))
                .encode(to: raw.baseAddress!)
            raw.baseAddress!.advanced(by: VhostUserHeader.size).copyMemory(from: payload, byteCount: payload.count)
        }
        var sent = 0
        while sent < buffer.count {
            do {
                sent += try systemCall { buffer.withUnsafeBytes { ferry_sendmsg_fds(fd, $0.baseAddress! + sent, $0.count - sent, nil, 0) } }
            } catch {
                logger.error("writing to the vhost-user socket failed", metadata: ["errno": "\(error.rawValue)"])
                return false
            }
        }
        return true
    }
}
