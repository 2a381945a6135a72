import FerryTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A `ferry serve` process on a configuration directory it owns, in a fresh temp dir:
/// `ferry.toml` (control socket, metrics on a free port) and `tenants/*.toml` the test writes.
/// Sockets live in `run/` of their own, as in /run/ferry: the daemon's sandbox shows their
/// directory read-write, and the export directories next to it stay outside.
final class ServeFixture {
    let top: String
    var config: String { top + "/config" }
    var controlSocket: String { top + "/run/control.sock" }
    /// `[sandbox] exports_root`, when the fixture has one.
    var exportsRoot: String { top + "/pool" }
    let metricsPort: UInt16
    var process: Process?
    var logPath: String { top + "/serve.log" }

    /// `sandboxed`: the sandbox's defaults (namespace, seccomp kill), with `exports_root` if
    /// asked; otherwise none.
    init(metrics: Bool = true, sandboxed: Bool = false, withExportsRoot: Bool = false) throws {
        top = try makeTemporaryDirectory("ferry-serve")
        for directory in ["/config/tenants", "/run", "/pool"] {
            try FileManager.default.createDirectory(atPath: top + directory, withIntermediateDirectories: true)
        }
        metricsPort = metrics ? freeTCPPort() : 0
        var daemon = "control_socket = \"\(controlSocket)\"\nlog_level = \"debug\"\n"
        if metrics { daemon += "metrics = \"127.0.0.1:\(metricsPort)\"\n" }
        if !sandboxed { daemon += "[sandbox]\nmode = \"none\"\nseccomp = \"none\"\n" }
        if sandboxed && withExportsRoot { daemon += "[sandbox]\nexports_root = \"\(exportsRoot)\"\n" }
        try daemon.write(toFile: config + "/ferry.toml", atomically: true, encoding: .utf8)
    }

    deinit {
        if let process, process.isRunning { process.terminate(); process.waitUntilExit() }
        try? FileManager.default.removeItem(atPath: top)
    }

    /// A directory for a posix export, created under the fixture.
    func directory(_ name: String) throws -> String {
        let path = top + "/" + name
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    func socket(_ name: String) -> String { top + "/run/\(name).sock" }

    /// One `[[export]]` block with a posix backend and extra keys (TOML lines).
    func posixExport(_ name: String, tenant: String, path: String, extra: String = "") -> String {
        export(name, tenant: tenant, backend: "kind = \"posix\"\npath = \"\(path)\"", extra: extra)
    }

    /// One `[[export]]` block with the keys of `[export.backend]` and extra keys (TOML lines);
    /// its tag is TENANT-NAME and its socket `socket("TENANT-NAME")`.
    func export(_ name: String, tenant: String, backend: String, extra: String = "") -> String {
        """
        [[export]]
        name = "\(name)"
        tag = "\(tenant)-\(name)"
        socket = "\(socket("\(tenant)-\(name)"))"
        \(extra)
        [export.backend]
        \(backend)

        """
    }

    func writeTenant(_ name: String, _ exports: String) throws {
        try "name = \"\(name)\"\n\n\(exports)".write(toFile: config + "/tenants/\(name).toml", atomically: true, encoding: .utf8)
    }

    func removeTenant(_ name: String) throws { try FileManager.default.removeItem(atPath: config + "/tenants/\(name).toml") }

    /// Starts `ferry serve` and waits until its control socket answers.
    func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try BuiltProducts.require("ferry"))
        p.arguments = ["serve", "--config", config]
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = FileHandle(forWritingAtPath: logPath)!
        p.standardOutput = log
        p.standardError = log
        try runWithDefaultSignalMask(p)
        process = p
        let deadline = Date().addingTimeInterval(30)
        while !(try ferry(["exports", "list", "--config", config]).output.contains("listening")) {
            guard p.isRunning, Date() < deadline else { throw ServeError("ferry serve did not come up; log:\n\(self.log)") }
            usleep(50_000)
        }
    }

    /// SIGTERM and the exit status.
    func stop() -> Int32 {
        guard let process else { return -1 }
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        return process.terminationStatus
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    @discardableResult
    func ferry(_ arguments: [String]) throws -> ProcessOutput {
        try runToCompletion(try BuiltProducts.require("ferry"), arguments)
    }

    /// `exports list --json`, decoded.
    func listJSON() throws -> [[String: Any]] {
        let out = try ferry(["exports", "list", "--config", config, "--json"])
        guard out.succeeded, let array = try JSONSerialization.jsonObject(with: Data(out.output.utf8)) as? [[String: Any]] else {
            throw ServeError("exports list --json failed: \(out.output)")
        }
        return array
    }

    func state(_ tenant: String, _ export: String) throws -> String? {
        try listJSON().first { $0["tenant"] as? String == tenant && $0["export"] as? String == export }?["state"] as? String
    }

    /// GET /metrics from the daemon.
    func scrape() throws -> String {
        let fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = metricsPort.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw ServeError("cannot connect to the metrics port: errno \(errno)") }
        let request = Array("GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8)
        _ = request.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        var response = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            response += buffer[0..<n]
        }
        return String(decoding: response, as: UTF8.self)
    }
}

struct ServeError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A TCP port nothing listens on right now (bound and released by the kernel's choice).
func freeTCPPort() -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p -> Int32 in
            _ = bind(fd, p, length)
            return getsockname(fd, p, &length)
        }
    }
    return UInt16(bigEndian: address.sin_port)
}
