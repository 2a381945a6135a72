import CFerry
import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// What `ferry` asks the serving daemon over its control socket: one JSON object per
/// connection, answered with one JSON object, then the daemon closes the connection.
public struct ControlRequest: Codable, Sendable {
    public enum Command: String, Codable, Sendable {
        /// Every export's state and counters.
        case status
        /// One export's state, counters and per-operation table.
        case show
        /// Re-read the configuration directory (as SIGHUP does).
        case reload
    }
    public var command: Command
    public var tenant: String?
    /// TENANT/EXPORT for `show`.
    public var export: String?

    public init(command: Command, tenant: String? = nil, export: String? = nil) {
        self.command = command
        self.tenant = tenant
        self.export = export
    }
}

public struct ControlReply: Codable {
    public var ok: Bool
    public var error: String?
    public var exports: [ExportStatus]?
    public var reload: Daemon.ReloadOutcome?
    /// The daemon's configuration directory.
    public var directory: String?
}

/// The daemon's end: a Unix socket (mode 0600: the operator's, not the guests') on an
/// `EndpointServer`. Status and show are answered on its loop; a reload, which can take
/// long, on a thread of its own, so `ferry exports list` is never queued behind one.
final class ControlServer: Sendable {
    let path: String
    private let server: EndpointServer

    /// A request is one small JSON object (a few hundred bytes); the cap keeps a client from
    /// making the daemon hold or parse megabytes.
    static let limits = EndpointLimits(
        maxRequestBytes: 16384, maxConnections: 512, requestSeconds: 10, answerSeconds: 30,
        oversized: controlReplyBytes(ControlReply(ok: false, error: "request too large")))

    init(path: String, daemon: Daemon, logger: Logger) throws(CLIError) {
        self.path = path
        server = EndpointServer(listening: try Self.listen(at: path), limits: Self.limits, logger: logger) { request, peerClosed in
            controlVerdict(request, peerClosed: peerClosed) { request in
                switch request.command {
                case .status, .show: return .answer(controlReplyBytes(Self.answer(request, daemon: daemon, logger: logger)))
                case .reload: return .answerOffLoop { controlReplyBytes(Self.answer(request, daemon: daemon, logger: logger)) }
                }
            }
        }
    }

    /// The listening socket at `path`, created 0600 and never more open than that.
    static func listen(at path: String) throws(CLIError) -> Int32 {
        try createParentDirectory(of: path)
        // A socket file left by a daemon that died is in the way; a live one is not ours to take.
        if probeControlSocket(path) { throw CLIError("another ferry daemon is already answering on \(path)") }
        unlink(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw CLIError("control socket: \(String(cString: strerror(errno)))") }
        // fchmod before bind: Linux creates the socket file with the socket's mode minus the
        // umask, so it is 0600 from the start (see VhostUserFSBackend.bindPrivately), never
        // the umask's mode until a chmod after bind.
        guard fchmod(fd, 0o600) == 0, bindUnix(fd, path), Glibc.listen(fd, SOMAXCONN) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw CLIError("cannot listen on the control socket \(path): \(reason)")
        }
        return fd
    }

    func start() { server.start() }

    func stop() {
        server.stop()
        unlink(path)
    }

    private static func answer(_ request: ControlRequest, daemon: Daemon, logger: Logger) -> ControlReply {
        switch request.command {
        case .status:
            return ControlReply(ok: true, exports: daemon.statuses(tenant: request.tenant), directory: daemon.directory)
        case .show:
            let found = daemon.statuses(withOperations: true).filter { "\($0.tenant)/\($0.export)" == request.export }
            if found.isEmpty { return ControlReply(ok: false, error: "the daemon serves no export '\(request.export ?? "")'") }
            return ControlReply(ok: true, exports: found, directory: daemon.directory)
        case .reload:
            logger.info("reload requested over the control socket")
            let outcome = daemon.reload()
            return ControlReply(ok: outcome.accepted, error: outcome.accepted ? nil : "configuration rejected",
                                reload: outcome, directory: daemon.directory)
        }
    }
}

/// The control socket's answer to the bytes a connection has sent so far: one JSON object
/// makes a request (`answer` decides what to do with it); anything else is refused once the
/// client has shut its side. Parsing is tried only when the bytes could end an object, so a
/// client sending a byte at a time does not make the loop parse on every byte.
func controlVerdict(_ bytes: [UInt8], peerClosed: Bool, answer: (ControlRequest) -> EndpointVerdict) -> EndpointVerdict {
    let last = bytes.last { ![9, 10, 13, 32].contains($0) }
    guard peerClosed || last == UInt8(ascii: "}") else { return .incomplete }
    let data = Data(bytes)
    guard (try? JSONSerialization.jsonObject(with: data)) is [String: Any] else {
        if !peerClosed { return .incomplete }
        return .answer(controlReplyBytes(ControlReply(ok: false, error: "malformed request: expected one JSON object")))
    }
    guard let request = try? JSONDecoder().decode(ControlRequest.self, from: data) else {
        return .answer(controlReplyBytes(ControlReply(ok: false, error: "malformed request: not a known command")))
    }
    return answer(request)
}

func controlReplyBytes(_ reply: ControlReply) -> [UInt8] {
    // Encoding these plain structs cannot fail.
    Array((try? JSONEncoder().encode(reply)) ?? Data(#"{"ok":false}"#.utf8))
}


// MARK: - The client's end

/// Why the daemon could not be asked.
public enum ControlClientError: Error, CustomStringConvertible {
    /// Nothing listens there: no daemon runs with this configuration.
    case notRunning(String)
    case failed(String)
    public var description: String {
        switch self {
        case .notRunning(let path): return "no ferry daemon is answering on \(path)"
        case .failed(let why): return why
        }
    }
}

/// Sends one request to the daemon at `path` and waits for its answer (at most `timeout` s).
public func askDaemon(_ request: ControlRequest, at path: String, timeout: Int = 60) throws(ControlClientError) -> ControlReply {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw .failed("socket: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    guard connectUnix(fd, path) else {
        if errno == ENOENT || errno == ECONNREFUSED { throw .notRunning(path) }
        throw .failed("cannot reach the daemon at \(path): \(String(cString: strerror(errno)))")
    }
    var tv = timeval(tv_sec: timeout, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    guard let body = try? JSONEncoder().encode(request) else { throw .failed("cannot encode the request") }
    writeAll(fd, body)
    shutdown(fd, Int32(SHUT_WR))
    guard let data = readMessage(fd) else { throw .failed("the daemon at \(path) did not answer") }
    do {
        return try JSONDecoder().decode(ControlReply.self, from: data)
    } catch {
        throw .failed("the daemon at \(path) answered something unreadable: \(error)")
    }
}

/// True when a daemon answers on `path`.
func probeControlSocket(_ path: String) -> Bool {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    return connectUnix(fd, path)
}

private func withUnixAddress<T>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T? {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
}

private func bindUnix(_ fd: Int32, _ path: String) -> Bool {
    withUnixAddress(path) { bind(fd, $0, $1) == 0 } ?? false
}

private func connectUnix(_ fd: Int32, _ path: String) -> Bool {
    guard let ok = withUnixAddress(path, { connect(fd, $0, $1) == 0 }) else {
        errno = ENAMETOOLONG
        return false
    }
    return ok
}

/// Reads until EOF (at most 16 MiB); nil on error or timeout.
func readMessage(_ fd: Int32) -> Data? {
    var data = Data()
    var buffer = [UInt8](repeating: 0, count: 65536)
    while data.count < 16 << 20 {
        let n = read(fd, &buffer, buffer.count)
        if n < 0 {
            if errno == EINTR { continue }
            return nil
        }
        if n == 0 { return data }
        data.append(contentsOf: buffer[0..<n])
        // A request is one JSON object: the daemon answers as soon as it parses.
        if (try? JSONSerialization.jsonObject(with: data)) != nil { return data }
    }
    return nil
}

func writeAll(_ fd: Int32, _ data: Data) {
    data.withUnsafeBytes { raw in
        var offset = 0
        while offset < raw.count {
            let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                return
            }
            offset += n
        }
    }
}
