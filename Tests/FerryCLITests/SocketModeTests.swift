import CFerrySandbox
import CSeccomp
import FerryCore
import FerryPOSIX
import FerryVhostUser
import Foundation
import Logging
import Testing
@testable import FerryCLI
@testable import FerryDaemon

/// The vhost-user and control sockets are never more open than their final mode, not even
/// between bind and a chmod: the mode they are created with is observed on a thread whose
/// umask is 0 (the worst a process can have; `ferry` commands set it) and whose path-based
/// chmod calls do nothing, so what a client could connect to right after bind is what is
/// checked.
@Suite struct SocketModeTests {
    @Test func theVhostUserSocketIsCreatedOwnerOnly() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try FUSEServer(driver: POSIXDriver(root: dir), logger: Logger(label: "socket"))
        for group: UInt32? in [nil, 4242] {
            let path = dir + "/vu\(group ?? 0).sock"
            let st = try atCreation { () throws -> stat in
                let backend = try VhostUserFSBackend(socketPath: path, socketGroup: group, handler: server,
                                                     logger: Logger(label: "socket"))
                defer { withExtendedLifetime(backend) {} }
                return try statOf(path)
            }
            #expect(st.st_mode & 0o777 == 0o600, "group \(String(describing: group))")
            if let group { #expect(st.st_gid == group) }
            unlink(path)
        }
    }

    @Test func theControlSocketIsCreatedOwnerOnly() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/control.sock"
        let st = try atCreation { () throws -> stat in
            let fd = try ControlServer.listen(at: path)
            defer { close(fd) }
            return try statOf(path)
        }
        #expect(st.st_mode & 0o777 == 0o600)
    }

    /// The premise of the two tests above: on such a thread a socket bound the plain way is
    /// world-writable, and a chmod by path does not change that.
    @Test func aPlainBindThereIsWorldWritable() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/plain.sock"
        let st = try atCreation { () throws -> stat in
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                let bytes = Array(path.utf8)
                raw.copyBytes(from: bytes)
                raw[bytes.count] = 0
            }
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            try #require(bound == 0)
            #expect(chmod(path, 0o600) == 0)
            return try statOf(path)
        }
        #expect(st.st_mode & 0o777 == 0o777)
    }
}

private func temporaryDirectory() throws -> String {
    var template = Array("/tmp/ferry-sockets-XXXXXX".utf8CString)
    let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    try #require(made != nil)
    return String(cString: made!)
}

private func statOf(_ path: String) throws -> stat {
    var st = stat()
    try #require(lstat(path, &st) == 0, "lstat \(path): errno \(errno)")
    return st
}

/// Runs `body` on a new thread with its own file-system context and umask 0, where chmod,
/// fchmodat and fchmodat2 (changing a mode by path) succeed without doing anything: a
/// seccomp filter on that thread alone (no TSYNC) answers them with 0. fchmod on a
/// descriptor still works.
private func atCreation<R>(_ body: () throws -> R) throws -> R {
    var result: Result<R, any Error>?
    withoutActuallyEscaping(body) { body in
        let job = Job {
            result = Result {
                guard ferry_sb_unshare(0x200) == 0 else { throw Errno.current }  // CLONE_FS
                umask(0)
                try ignorePathChmods()
                return try body()
            }
        }
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            Unmanaged<Job>.fromOpaque(raw!).takeRetainedValue().run()
            return nil
        }, Unmanaged.passRetained(job).toOpaque())
        precondition(rc == 0, "pthread_create failed")
        pthread_join(thread, nil)
    }
    return try result!.get()
}

private func ignorePathChmods() throws {
    let allow: UInt32 = 0x7fff_0000       // SCMP_ACT_ALLOW
    let succeed: UInt32 = 0x0005_0000     // SCMP_ACT_ERRNO(0): return 0, do nothing
    guard let filter = seccomp_init(allow) else { throw Errno(ENOMEM) }
    defer { seccomp_release(filter) }
    for name in ["chmod", "fchmodat", "fchmodat2"] {
        let number = seccomp_syscall_resolve_name(name)
        if number < 0 { continue }  // not known to this libseccomp: not used by this libc either
        try #require(seccomp_rule_add_array(filter, succeed, number, 0, nil) == 0)
    }
    try #require(seccomp_load(filter) == 0)
}

/// @unchecked Sendable: `run` is set once and called by the one thread it is handed to.
private final class Job: @unchecked Sendable {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}
