import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Whether process `pid` or one of its descendants has a thread named `name`
/// (/proc/PID/task/TID/comm). Descendants count: a sandboxed daemon serves from a child
/// in its own PID namespace.
public func processTreeHasThread(_ pid: Int32, named name: String) -> Bool {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
    for task in tasks {
        if (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/comm", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) == name { return true }
        let children = (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/children", encoding: .utf8)) ?? ""
        for child in children.split(separator: " ").compactMap({ Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) })
        where processTreeHasThread(child, named: name) {
            return true
        }
    }
    return false
}

/// Polls `condition` every 10 ms until it holds or `seconds` pass (a bound only so that a
/// broken build ends; the condition decides); returns whether it held.
public func eventually(within seconds: Double = 60, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while !condition() {
        if Date() > deadline { return false }
        usleep(10_000)
    }
    return true
}

/// Whether `path` is a mount point (its device differs from its parent's).
public func isMountPoint(_ path: String) -> Bool {
    var here = stat(), parent = stat()
    return stat(path, &here) == 0 && stat(path + "/..", &parent) == 0 && here.st_dev != parent.st_dev
}

/// Whether a socket bound to `path` is listening, as the network namespace of `pid` sees
/// Unix sockets (/proc/PID/net/unix: __SO_ACCEPTCON in the flags). A daemon's socket file
/// exists from its bind(); a connect() before its listen() is refused, so a test that waits
/// only for the file can race the daemon. This looks without connecting, for daemons that
/// serve one connection only.
public func unixSocketIsListening(_ path: String, inNetworkNamespaceOf pid: Int32) -> Bool {
    guard let table = try? String(contentsOfFile: "/proc/\(pid)/net/unix", encoding: .utf8) else { return false }
    let acceptingConnections: UInt32 = 0x10000
    return table.split(separator: "\n").dropFirst().contains { line in
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count >= 8, let flags = UInt32(fields[3], radix: 16) else { return false }
        return flags & acceptingConnections != 0 && fields[7...].joined(separator: " ") == path
    }
}
