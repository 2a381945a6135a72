import FerryCore
import FerryTestSupport
import Foundation
import Glibc

/// A reference C virtiofsd on a temporary socket and shared directory, one per test:
/// it serves a single front-end and exits when that disconnects.
final class ReferenceVirtiofsd {
    static let path = "/usr/lib/qemu/virtiofsd"
    static var isInstalled: Bool { FileManager.default.isExecutableFile(atPath: path) }

    let top: String
    var socketPath: String { top + "/vhost.sock" }
    var sharedDirectory: String { top + "/shared" }
    let process = Process()

    init() throws {
        var template = Array("/tmp/ferry-frontend-XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw POSIXError(.EIO) }
        top = String(nulTerminated: template)
        try FileManager.default.createDirectory(atPath: sharedDirectory, withIntermediateDirectories: true)
        process.executableURL = URL(fileURLWithPath: Self.path)
        // sandbox=chroot: the namespace sandbox needs privileges a container may lack.
        process.arguments = ["--socket-path=\(socketPath)", "-o", "source=\(sharedDirectory)", "-o", "cache=auto",
                             "-o", "sandbox=chroot", "-o", "log_level=err"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        // virtiofsd binds the socket, listens, then waits for one connection. Its file
        // exists from the bind: a connect() between bind and listen is refused (CI saw
        // that once, on a loaded machine), so wait until it listens.
        let pid = process.processIdentifier, path = socketPath
        guard eventually(within: 60, { unixSocketIsListening(path, inNetworkNamespaceOf: pid) || !process.isRunning }),
              process.isRunning else {
            throw HarnessError(process.isRunning ? "the reference virtiofsd did not listen on \(path) within 60 s"
                                                 : "the reference virtiofsd exited before it listened on \(path)")
        }
    }

    deinit {
        // virtiofsd 7.2 takes SIGTERM only between events: one blocked reading a socket
        // whose peer stays silent never sees it. SIGKILL after a grace period, so a test
        // can never hang here.
        if process.isRunning {
            process.terminate()
            if !exits(within: 5) { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: top)
    }

    /// Whether virtiofsd exited within `seconds`.
    func exits(within seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        return !process.isRunning
    }
}
