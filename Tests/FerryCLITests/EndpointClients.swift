import CFerry
import FerryTestSupport
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Clients of the daemon's endpoints for the slow-client and fuzz tests. Every wait here has
/// a deadline: a server that stalls makes the test fail by timing out, never hang.
enum EndpointClient {
    /// A socket address for 127.0.0.1:`port` or the Unix socket at `path`.
    enum Address {
        case tcp(UInt16)
        case unix(String)
    }

    /// A non-blocking socket whose connect has been started (and, for a Unix socket, done);
    /// nil when the kernel refused it at once (a full backlog).
    static func open(_ address: Address) -> Int32? {
        let family = if case .tcp = address { AF_INET } else { AF_UNIX }
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { return nil }
        var one: Int32 = 1
        if family == AF_INET { setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size)) }
        let rc: Int32
        switch address {
        case .tcp(let port):
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            sin.sin_addr.s_addr = inet_addr("127.0.0.1")
            rc = withUnsafePointer(to: &sin) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        case .unix(let path):
            var sun = sockaddr_un()
            sun.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &sun.sun_path) { raw in
                raw.copyBytes(from: Array(path.utf8))
            }
            rc = withUnsafePointer(to: &sun) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
        }
        if rc == 0 || errno == EINPROGRESS { return fd }
        close(fd)
        return nil
    }

    /// True while `fd` is connected and the server has neither closed it nor sent anything.
    static func isOpenAndQuiet(_ fd: Int32) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN) | 0x2000 /* POLLRDHUP, which Glibc does not import */, revents: 0)
        guard poll(&p, 1, 0) == 0 else { return false }
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
        var peer = sockaddr_storage()
        var peerLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let connected = withUnsafeMutablePointer(to: &peer) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &peerLength) == 0 }
        }
        return error == 0 && connected
    }

    struct TimedOut: Error, CustomStringConvertible {
        let what: String
        var description: String { "timed out: \(what)" }
    }

    /// Connects, sends `chunks` one `send` each (then shuts its writing side when
    /// `shutWrite`), and reads until the server closes: what it answered. Throws when the
    /// whole exchange takes longer than `seconds`.
    static func exchange(_ address: Address, _ chunks: [[UInt8]], shutWrite: Bool = false, seconds: Double) throws -> [UInt8] {
        let deadline = Date().addingTimeInterval(seconds)
        guard let fd = open(address) else { throw TimedOut(what: "connect refused") }
        defer { close(fd) }
        func wait(_ events: Int32) throws {
            var p = pollfd(fd: fd, events: Int16(events), revents: 0)
            while true {
                let left = Int32(max(0, deadline.timeIntervalSinceNow * 1000))
                let n = poll(&p, 1, left)
                if n > 0 { return }
                if n == 0 { throw TimedOut(what: "\(address)") }
                if errno != EINTR { throw TimedOut(what: "poll errno \(errno)") }
            }
        }
        try wait(POLLOUT)
        for chunk in chunks {
            var offset = 0
            while offset < chunk.count {
                let n = chunk.withUnsafeBytes { send(fd, $0.baseAddress! + offset, chunk.count - offset, Int32(MSG_NOSIGNAL)) }
                if n > 0 { offset += n; continue }
                if n < 0 && (errno == EAGAIN || errno == EINTR) { try wait(POLLOUT); continue }
                // The server closed on us (an oversized request): read what it said.
                offset = chunk.count
                break
            }
        }
        if shutWrite { shutdown(fd, Int32(SHUT_WR)) }
        var answer = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            try wait(POLLIN)
            let n = recv(fd, &buffer, buffer.count, 0)
            if n > 0 { answer += buffer[0..<n]; continue }
            if n == 0 || errno == ECONNRESET { return answer }
            if errno != EAGAIN && errno != EINTR { return answer }
        }
    }

    /// `ferry ARGS` with its output; throws when it has not ended within `seconds`.
    static func ferry(_ arguments: [String], seconds: Double) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try BuiltProducts.require("ferry"))
        p.arguments = arguments
        let out = try makeTemporaryDirectory("ferry-endpoint") + "/out"
        FileManager.default.createFile(atPath: out, contents: nil)
        let handle = FileHandle(forWritingAtPath: out)!
        p.standardOutput = handle
        p.standardError = handle
        try runWithDefaultSignalMask(p)
        let deadline = Date().addingTimeInterval(seconds)
        while p.isRunning {
            if Date() >= deadline {
                p.terminate()
                p.waitUntilExit()
                throw TimedOut(what: "ferry \(arguments.joined(separator: " "))")
            }
            usleep(20_000)
        }
        return (p.terminationStatus, (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
    }
}

/// Clients that send a request one byte a second, on a thread of their own, until stopped.
/// @unchecked Sendable: `thread` is set once, in init, before the thread starts; the
/// trickling thread reads only `let`s and the two atomics.
final class TricklingClients: @unchecked Sendable {
    private let fds: [Int32]
    private let request: [UInt8]
    private let stopping = Atomic<Bool>(false)
    private let finished = Atomic<Bool>(false)
    private var thread: Thread?

    init(_ address: EndpointClient.Address, count: Int, request: [UInt8]) {
        fds = (0..<count).compactMap { _ in EndpointClient.open(address) }
        self.request = request
        let thread = Thread { [self] in
            var next = 0
            while !stopping.load(ordering: .acquiring) && next < request.count {
                for fd in fds { _ = withUnsafePointer(to: request[next]) { send(fd, $0, 1, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) } }
                next += 1
                sleep(1)
            }
            finished.store(true, ordering: .releasing)
        }
        self.thread = thread
        thread.start()
    }

    var count: Int { fds.count }
    var descriptors: [Int32] { fds }

    func stop() {
        stopping.store(true, ordering: .releasing)
        // Close only once the thread is done sending, so it never writes to a reused number.
        while !finished.load(ordering: .acquiring) { usleep(10_000) }
        for fd in fds { close(fd) }
    }
}
