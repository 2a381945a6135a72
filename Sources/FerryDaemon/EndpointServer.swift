import CFerry
import Foundation
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// Why our own server and not swift-nio (or Hummingbird, which is built on it): both
// endpoints are tiny (one short request, one answer, then close) and operator-only; what
// they need is that idle or slow clients never delay the others, and one poll(2) loop with a
// deadline per connection gives that in a few hundred lines. swift-nio would do it too, but
// measured on this 2-core machine its NIOPosix and NIOHTTP1 (with swift-atomics and
// swift-collections) take 1 min 16 s of a clean debug build on their own, against about
// 3 min for all of Ferry with its tests, on every CI run; and its event loop makes system
// calls the daemon's seccomp allowlist does not grant (epoll_create, timerfd_*), for two
// sockets that see a request every few seconds. The two parsers this loop feeds are small
// and fuzzed over real sockets (EndpointFuzzTests).

/// What an endpoint makes of the bytes one connection has sent so far.
enum EndpointVerdict {
    /// Not a whole request yet: keep reading (until the size cap or the deadline).
    case incomplete
    /// Send these bytes, then close.
    case answer([UInt8])
    /// Work that may take long (a reload): it runs on a thread of its own, so the loop goes
    /// on serving others, and its answer is sent when it ends.
    case answerOffLoop(@Sendable () -> [UInt8])
}

/// The bounds an endpoint puts on every connection.
struct EndpointLimits {
    /// A request that grows past this is answered with `oversized` and closed.
    var maxRequestBytes: Int
    /// Connections open at once; past it the oldest one still sending its request is
    /// dropped, so a flood of idle clients cannot lock the operator out.
    var maxConnections: Int
    /// For the whole request from accept, and again for the whole answer: not per read, so a
    /// client trickling a byte at a time cannot hold a connection longer.
    var requestSeconds: Double
    var answerSeconds: Double
    /// Sent (then the connection closed) to a request past `maxRequestBytes`.
    var oversized: [UInt8]
}

/// One listening socket and all its connections, served by one thread running poll(2):
/// non-blocking reads and writes, so no client, however slow, holds up another.
/// `handle` sees a connection's bytes so far and whether the peer has shut its side.
final class EndpointServer: @unchecked Sendable {
    // @unchecked: `connections` and the other loop state are touched only by the loop
    // thread; what other threads share (`finished`, `stopping`) is in a Mutex or Atomic.
    private let listenFD: Int32
    private let wakeFD: Int32
    private let limits: EndpointLimits
    private let handle: (_ request: [UInt8], _ peerClosed: Bool) -> EndpointVerdict
    private let logger: Logger
    private var thread: pthread_t?
    private let stopping = Atomic<Bool>(false)

    private struct Connection {
        enum Phase { case reading, working, writing, draining }
        let id: UInt64
        var phase = Phase.reading
        var received: [UInt8] = []
        var peerClosed = false
        var output: [UInt8] = []
        var written = 0
        var deadline: UInt64
    }
    private var connections: [Int32: Connection] = [:]
    private var nextID: UInt64 = 0
    private var acceptPausedUntil: UInt64 = 0
    /// Answers computed off the loop, by connection (fd and id: the number may be reused).
    private let finished = Mutex<[(fd: Int32, id: UInt64, answer: [UInt8])]>([])
    private let workers = Mutex<[UInt64: pthread_t]>([:])

    /// Serves `listenFD`, a listening socket it takes over: `stop` closes it.
    init(listening listenFD: Int32, limits: EndpointLimits, logger: Logger,
         handle: @escaping (_ request: [UInt8], _ peerClosed: Bool) -> EndpointVerdict) {
        self.listenFD = listenFD
        self.limits = limits
        self.logger = logger
        self.handle = handle
        wakeFD = ferry_eventfd(0, Int32(FERRY_EFD_CLOEXEC | FERRY_EFD_NONBLOCK))
        precondition(wakeFD >= 0, "eventfd: \(errno)")
        _ = ferry_fcntl_int(listenFD, F_SETFL, ferry_fcntl_int(listenFD, F_GETFL, 0) | O_NONBLOCK)
    }

    func start() { thread = startThread { [self] in run() } }

    /// Ends the loop, closes every connection, and waits for answers still being computed.
    func stop() {
        stopping.store(true, ordering: .releasing)
        wake()
        if let thread { pthread_join(thread, nil) }
        for worker in workers.withLock({ $0.values }) { pthread_join(worker, nil) }
        close(wakeFD)
        close(listenFD)
    }

    private func wake() {
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    private static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    private static func after(_ seconds: Double) -> UInt64 { now() + UInt64(seconds * 1e9) }

    private func run() {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !stopping.load(ordering: .acquiring) {
            let now = Self.now()
            var fds = [pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
            let accepting = now >= acceptPausedUntil
            if accepting { fds.append(pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0)) }
            var nearest = accepting ? UInt64.max : acceptPausedUntil
            for (fd, c) in connections {
                switch c.phase {
                case .reading, .draining: fds.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0))
                case .writing: fds.append(pollfd(fd: fd, events: Int16(POLLOUT), revents: 0))
                case .working: break
                }
                nearest = min(nearest, c.deadline)
            }
            let timeout = nearest == .max ? -1 : Int32(min((nearest &- min(nearest, now)) / 1_000_000 + 1, 60_000))
            if poll(&fds, nfds_t(fds.count), timeout) < 0 {
                if errno == EINTR { continue }
                logger.error("endpoint poll failed", metadata: ["errno": "\(errno)"])
                break
            }
            if fds[0].revents != 0 { collectFinished() }
            for p in fds.dropFirst(accepting ? 2 : 1) where p.revents != 0 {
                guard let phase = connections[p.fd]?.phase else { continue }
                switch phase {
                case .reading, .draining: receive(p.fd, &buffer)
                case .writing: flush(p.fd)
                case .working: break
                }
            }
            if accepting && fds[1].revents != 0 { acceptAll() }
            expire()
        }
        for fd in connections.keys { close(fd) }
        connections = [:]
    }

    private func acceptAll() {
        // A bounded batch per turn, so a connect storm cannot starve the connections' I/O.
        for _ in 0..<64 {
            let fd = accept(listenFD, nil, nil)
            if fd < 0 {
                if errno == EMFILE || errno == ENFILE {
                    // Out of descriptors: stop looking at the listener for a moment rather
                    // than spin on it; deadlines free descriptors meanwhile.
                    logger.warning("endpoint out of file descriptors; pausing accept")
                    acceptPausedUntil = Self.after(0.1)
                }
                return
            }
            _ = ferry_fcntl_int(fd, F_SETFD, FD_CLOEXEC)
            _ = ferry_fcntl_int(fd, F_SETFL, ferry_fcntl_int(fd, F_GETFL, 0) | O_NONBLOCK)
            if connections.count >= limits.maxConnections {
                let oldest = connections.filter { $0.value.phase == .reading }.min { $0.value.id < $1.value.id }
                guard let oldest else {
                    close(fd)
                    continue
                }
                drop(oldest.key)
            }
            nextID += 1
            connections[fd] = Connection(id: nextID, deadline: Self.after(limits.requestSeconds))
        }
    }

    private func receive(_ fd: Int32, _ buffer: inout [UInt8]) {
        let n = recv(fd, &buffer, buffer.count, 0)
        if n < 0 {
            if errno != EAGAIN && errno != EINTR { drop(fd) }
            return
        }
        guard var c = connections[fd] else { return }
        if c.phase == .draining {
            // Our answer is sent; we only wait for the peer's close so ours cannot reset it.
            if n == 0 { drop(fd) }
            return
        }
        if n == 0 { c.peerClosed = true } else { c.received += buffer[0..<n] }
        if c.received.count > limits.maxRequestBytes {
            connections[fd] = c
            answer(fd, limits.oversized)
            return
        }
        switch handle(c.received, c.peerClosed) {
        case .incomplete:
            if c.peerClosed { drop(fd) } else { connections[fd] = c }
        case .answer(let bytes):
            connections[fd] = c
            answer(fd, bytes)
        case .answerOffLoop(let work):
            c.phase = .working
            c.deadline = .max
            c.received = []
            connections[fd] = c
            let id = c.id
            let worker = startThread { [self] in
                let bytes = work()
                finished.withLock { $0.append((fd, id, bytes)) }
                wake()
            }
            workers.withLock { $0[id] = worker }
        }
    }

    private func collectFinished() {
        var count: UInt64 = 0
        _ = read(wakeFD, &count, 8)
        for done in finished.withLock({ list in defer { list = [] }; return list }) {
            if let worker = workers.withLock({ $0.removeValue(forKey: done.id) }) { pthread_join(worker, nil) }
            if connections[done.fd]?.id == done.id { answer(done.fd, done.answer) }
        }
    }

    private func answer(_ fd: Int32, _ bytes: [UInt8]) {
        guard var c = connections[fd] else { return }
        c.phase = .writing
        c.received = []
        c.output = bytes
        c.written = 0
        c.deadline = Self.after(limits.answerSeconds)
        connections[fd] = c
        flush(fd)
    }

    private func flush(_ fd: Int32) {
        guard var c = connections[fd] else { return }
        while c.written < c.output.count {
            let n = c.output.withUnsafeBytes { send(fd, $0.baseAddress! + c.written, $0.count - c.written, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN { connections[fd] = c; return }
                drop(fd)
                return
            }
            c.written += n
        }
        if c.peerClosed {
            drop(fd)
            return
        }
        // A lingering close: closing with unread bytes from the peer would reset the
        // connection, and the reset can destroy the answer before the peer has read it.
        shutdown(fd, Int32(SHUT_WR))
        c.phase = .draining
        c.output = []
        c.deadline = min(c.deadline, Self.after(1))
        connections[fd] = c
    }

    private func expire() {
        let now = Self.now()
        for (fd, c) in connections where c.deadline <= now { drop(fd) }
    }

    private func drop(_ fd: Int32) {
        guard connections.removeValue(forKey: fd) != nil else { return }
        close(fd)
    }
}
