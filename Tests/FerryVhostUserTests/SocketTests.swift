import CFerry
import FerryCore
import FerryTestSupport
@testable import FerryVhostUser
import FerryVirtio
import Foundation
import Logging
import Testing

/// The backend over its real unix socket, with a minimal hand-written front-end.
@Suite(.serialized) struct SocketTests {
    final class Harness {
        let dir: String
        var path: String { dir + "/s.sock" }
        let handler = RecordingHandler()
        let backend: VhostUserFSBackend
        let done = DispatchSemaphore(value: 0)

        init() throws {
            var template = Array("/tmp/ferry-vsock-XXXXXX".utf8CString)
            dir = String(cString: mkdtemp(&template)!)
            var logger = Logger(label: "test"); logger.logLevel = .critical
            backend = try VhostUserFSBackend(socketPath: dir + "/s.sock", handler: handler, logger: logger)
            let b = backend, d = done
            Thread { b.run(); d.signal() }.start()
        }

        func stop() -> Bool {
            backend.stop()
            return done.wait(timeout: .now() + 5) == .success
        }

        deinit {
            backend.stop()
            _ = try? FileManager.default.removeItem(atPath: dir)
        }

        func connect() -> Int32 {
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var a = SocketTests.unixAddress(path)
            let rc = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
            precondition(rc == 0)
            var tv = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            return fd
        }
    }

    static func send(_ fd: Int32, _ request: VhostUserRequest, flags: UInt32 = 1, size: UInt32? = nil, _ payload: [UInt8] = []) {
        var b = [UInt8](repeating: 0, count: 12)
        b.withUnsafeMutableBytes { VhostUserHeader(request: request.rawValue, flags: flags, size: size ?? UInt32(payload.count)).encode(to: $0.baseAddress!) }
        b += payload
        _ = b.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) }
    }

    /// Reads one reply: (request, flags, payload), nil on EOF/timeout.
    static func receive(_ fd: Int32) -> (UInt32, UInt32, [UInt8])? {
        var h = [UInt8](repeating: 0, count: 12)
        guard h.withUnsafeMutableBytes({ recv(fd, $0.baseAddress, 12, Int32(MSG_WAITALL)) }) == 12 else { return nil }
        let header = h.withUnsafeBytes { VhostUserHeader.decode($0)! }
        var p = [UInt8](repeating: 0, count: Int(header.size))
        if header.size > 0 {
            guard p.withUnsafeMutableBytes({ recv(fd, $0.baseAddress, $0.count, Int32(MSG_WAITALL)) }) == Int(header.size) else { return nil }
        }
        return (header.request, header.flags, p)
    }

    static func u64(_ p: [UInt8]) -> UInt64 { p.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) } }

    static func isClosed(_ fd: Int32) -> Bool {
        var b: UInt8 = 0
        return recv(fd, &b, 1, 0) == 0
    }

    @Test func repliesAcksAndReconnects() throws {
        let h = try Harness()
        var st = stat()
        #expect(stat(h.path, &st) == 0 && st.st_mode & 0o777 == 0o600)
        let fd = h.connect()
        Self.send(fd, .getFeatures)
        let f = Self.receive(fd)
        #expect(f?.0 == VhostUserRequest.getFeatures.rawValue && f?.1 == 0x5 && f.map { Self.u64($0.2) } == VhostUserFSDevice.offeredFeatures)
        Self.send(fd, .setProtocolFeatures, VhostUserFSDevice.bytes(VhostUserProtocolFeature.replyAck | VhostUserProtocolFeature.multiqueue))
        Self.send(fd, .getQueueNum)
        #expect(Self.receive(fd).map { Self.u64($0.2) } == 17)
        // REPLY_ACK: 0 on success, non-zero on failure.
        Self.send(fd, .setOwner, flags: 1 | VhostUserHeader.needReplyFlag)
        #expect(Self.receive(fd).map { Self.u64($0.2) } == 0)
        Self.send(fd, .setVringNum, flags: 1 | VhostUserHeader.needReplyFlag, VhostUserFSDevice.bytes(VringState(index: 1, num: 3)))
        #expect(Self.receive(fd).map { Self.u64($0.2) } != 0)
        Self.send(fd, .setLogFD, flags: 1 | VhostUserHeader.needReplyFlag)
        #expect(Self.receive(fd).map { Self.u64($0.2) } != 0)
        #expect(h.backend.state == .connected)
        close(fd)
        // The next front-end is served; the handler heard the first one go.
        let fd2 = h.connect()
        Self.send(fd2, .getProtocolFeatures)
        #expect(Self.receive(fd2).map { Self.u64($0.2) } == VhostUserFSDevice.offeredProtocolFeatures)
        #expect(h.handler.lost.load(ordering: .relaxed) == 1)
        #expect(h.backend.connectionsServed == 2)
        // A bad version closes the connection, and the backend goes on listening.
        Self.send(fd2, .getFeatures, flags: 2)
        #expect(Self.isClosed(fd2))
        close(fd2)
        let fd3 = h.connect()
        Self.send(fd3, .setOwner, size: 5000)                  // payload > 4096: closed
        #expect(Self.isClosed(fd3))
        close(fd3)
        let fd4 = h.connect()
        Self.send(fd4, .getFeatures)
        #expect(Self.receive(fd4) != nil)
        // stop() with a front-end still connected: run() returns promptly, the socket file goes.
        #expect(h.stop())
        #expect(h.backend.state == .stopped)
        #expect(Self.isClosed(fd4))
        close(fd4)
        #expect(!FileManager.default.fileExists(atPath: h.path))
    }

    @Test func socketFileHandling() throws {
        var template = Array("/tmp/ferry-vsock-XXXXXX".utf8CString)
        let dir = String(cString: mkdtemp(&template)!)
        defer { _ = try? FileManager.default.removeItem(atPath: dir) }
        var logger = Logger(label: "test"); logger.logLevel = .critical
        let handler = RecordingHandler()
        // A regular file is never replaced.
        _ = FileManager.default.createFile(atPath: dir + "/file", contents: Data("keep".utf8))
        #expect(throws: VhostUserError.self) { try VhostUserFSBackend(socketPath: dir + "/file", handler: handler, logger: logger) }
        #expect(FileManager.default.contents(atPath: dir + "/file") == Data("keep".utf8))
        // A stale socket is.
        do {
            let first = try VhostUserFSBackend(socketPath: dir + "/s", socketGroup: getgid(), handler: handler, logger: logger)
            var st = stat()
            #expect(stat(dir + "/s", &st) == 0 && st.st_mode & 0o777 == 0o660)
            _ = first
        }
        let second = try VhostUserFSBackend(socketPath: dir + "/s", handler: handler, logger: logger)
        second.stop()
        second.run()                                            // returns at once: already stopped
        #expect(second.state == .stopped)
        // Nonsense options are refused clearly.
        #expect(throws: VhostUserError.self) {
            try VhostUserFSBackend(socketPath: dir + "/p", handler: handler, options: .init(threadPoolSize: -1), logger: logger)
        }
        #expect(throws: VhostUserError.self) {
            try VhostUserFSBackend(socketPath: dir + "/p", handler: handler, options: .init(maxQueueSize: 1000), logger: logger)
        }
    }

    static func unixAddress(_ path: String) -> sockaddr_un {
        var a = sockaddr_un(); a.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &a.sun_path) { $0.copyBytes(from: bytes); $0[bytes.count] = 0 }
        return a
    }

    /// A front-end (or a test) that connects as soon as the socket file appears is refused
    /// until listen(): the backend's socket listens by the time its file can be seen with
    /// the group's access, and `unixSocketIsListening`, which the tests wait with, tells a
    /// bound socket from a listening one.
    @Test func theSocketListensOnceItsFileIsThere() throws {
        var template = Array("/tmp/ferry-vsock-XXXXXX".utf8CString)
        let dir = String(cString: mkdtemp(&template)!)
        defer { _ = try? FileManager.default.removeItem(atPath: dir) }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var a = Self.unixAddress(dir + "/bound")
        #expect(VhostUserFSBackend.bindPrivately(fd, &a) == 0)
        #expect(!unixSocketIsListening(dir + "/bound", inNetworkNamespaceOf: getpid()))
        #expect(listen(fd, 1) == 0)
        #expect(unixSocketIsListening(dir + "/bound", inNetworkNamespaceOf: getpid()))
        #expect(!unixSocketIsListening(dir + "/bou", inNetworkNamespaceOf: getpid()))

        var logger = Logger(label: "test"); logger.logLevel = .critical
        let backend = try VhostUserFSBackend(socketPath: dir + "/s", socketGroup: getgid(), handler: RecordingHandler(), logger: logger)
        defer { backend.stop() }
        var st = stat()
        #expect(stat(dir + "/s", &st) == 0 && st.st_mode & 0o777 == 0o660)
        #expect(unixSocketIsListening(dir + "/s", inNetworkNamespaceOf: getpid()))
    }

    @Test func inheritedListeningSocket() throws {
        var logger = Logger(label: "test"); logger.logLevel = .critical
        let handler = RecordingHandler()
        var pair: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        defer { close(pair[0]); close(pair[1]) }
        #expect(throws: VhostUserError.self) { try VhostUserFSBackend(listeningFD: pair[0], handler: handler, logger: logger) }
        // A listening socket (as virtiofsd --fd gets it): served like our own.
        var template = Array("/tmp/ferry-vsock-XXXXXX".utf8CString)
        let dir = String(cString: mkdtemp(&template)!)
        defer { _ = try? FileManager.default.removeItem(atPath: dir) }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var a = Self.unixAddress(dir + "/s.sock")
        let rc = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        #expect(rc == 0 && listen(fd, 1) == 0)
        let backend = try VhostUserFSBackend(listeningFD: fd, handler: handler, logger: logger)
        let done = DispatchSemaphore(value: 0)
        Thread { backend.run(); done.signal() }.start()
        let c = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        let rc2 = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(c, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        #expect(rc2 == 0)
        Self.send(c, .getQueueNum)
        #expect(Self.receive(c).map { Self.u64($0.2) } == 17)
        close(c)
        backend.stop()
        #expect(done.wait(timeout: .now() + 5) == .success)
        #expect(FileManager.default.fileExists(atPath: dir + "/s.sock"))     // not ours to remove
    }
}
