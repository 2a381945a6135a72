import CFerry
import FerryConfig
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// `GET /metrics` over HTTP/1.1, one request per connection, on an `EndpointServer`.
final class MetricsServer: Sendable {
    let address: HostPort
    private let server: EndpointServer

    /// Prometheus sends a few hundred bytes of headers and waits 10 s by default; a
    /// connection gets as long for its request, and longer to take a large answer.
    static let limits = EndpointLimits(
        maxRequestBytes: 8192, maxConnections: 512, requestSeconds: 10, answerSeconds: 30,
        oversized: httpResponse("431 Request Header Fields Too Large", "request headers too large\n"))

    init(address: HostPort, daemon: Daemon, logger: Logger) throws(CLIError) {
        self.address = address
        server = EndpointServer(listening: try Self.listen(on: address), limits: Self.limits, logger: logger) { request, peerClosed in
            metricsVerdict(request, peerClosed: peerClosed) { renderMetrics(daemon.statuses(withOperations: true)) }
        }
    }

    static func listen(on address: HostPort) throws(CLIError) -> Int32 {
        var hints = addrinfo()
        hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var found: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(address.host, "\(address.port)", &hints, &found)
        guard rc == 0, let info = found else {
            throw CLIError("metrics address \(address): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(found) }
        let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw CLIError("metrics socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard bind(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0, Glibc.listen(fd, SOMAXCONN) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw CLIError("cannot listen for metrics on \(address): \(reason)")
        }
        return fd
    }

    func start() { server.start() }
    func stop() { server.stop() }
}

/// The metrics endpoint's answer to the bytes a connection has sent so far: nothing until
/// the header ends, then the scrape (`body` renders it), or an error status for anything
/// else. Every connection is closed after one answer, so no body or keep-alive is read.
func metricsVerdict(_ request: [UInt8], peerClosed: Bool, body: () -> String) -> EndpointVerdict {
    guard let headEnd = headerEnd(request) else {
        if !peerClosed || request.isEmpty { return .incomplete }
        return .answer(httpResponse("400 Bad Request", "incomplete request\n"))
    }
    let line = request[..<headEnd].prefix { $0 != 13 && $0 != 10 }
    let parts = line.split(separator: 32, omittingEmptySubsequences: false)
    guard parts.count == 3, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0 > 32 && $0 < 127 } }),
          parts[2].starts(with: "HTTP/1.".utf8) else {
        return .answer(httpResponse("400 Bad Request", "malformed request line\n"))
    }
    let method = String(decoding: parts[0], as: UTF8.self)
    let path = String(decoding: parts[1].prefix { $0 != UInt8(ascii: "?") }, as: UTF8.self)
    guard method == "GET" || method == "HEAD" else {
        return .answer(httpResponse("405 Method Not Allowed", "ferry serves metrics at GET /metrics\n", extra: "Allow: GET, HEAD\r\n"))
    }
    guard path == "/metrics" || path == "/" else {
        return .answer(httpResponse("404 Not Found", "ferry serves metrics at GET /metrics\n", headOnly: method == "HEAD"))
    }
    return .answer(httpResponse("200 OK", body(), headOnly: method == "HEAD"))
}

/// Where the request head ends (the blank line: CRLF CRLF, or bare LF LF from a lenient
/// client), or nil while it has not.
private func headerEnd(_ bytes: [UInt8]) -> Int? {
    var i = 0
    while i + 1 < bytes.count {
        if bytes[i] == 10 {
            if bytes[i + 1] == 10 { return i }
            if bytes[i + 1] == 13, i + 2 < bytes.count, bytes[i + 2] == 10 { return i }
        }
        i += 1
    }
    return nil
}

/// A whole HTTP/1.1 answer that closes the connection.
func httpResponse(_ status: String, _ body: String, headOnly: Bool = false, extra: String = "") -> [UInt8] {
    let head = "HTTP/1.1 \(status)\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
        + "Content-Length: \(body.utf8.count)\r\n\(extra)Connection: close\r\n\r\n"
    return Array((headOnly ? head : head + body).utf8)
}
