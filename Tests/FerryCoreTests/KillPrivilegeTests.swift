import FerryCore
import FerryFUSE
import FerryPOSIX
import Foundation
import Logging
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// With HANDLE_KILLPRIV_V2 the kernel leaves dropping set-id bits to the server, and two of its
/// requests for that (chown(f, -1, -1), and the privilege removal before another user's
/// write) are SETATTRs that name no change. The core passes them on as FATTR_KILL_SUIDGID,
/// so the reply the kernel caches already shows the bits gone.
@Suite(.serialized) struct KillPrivilegeTests {
    /// A SETATTR with `valid` and nothing else, as `uid`; the reply's mode.
    static func setattr(_ transport: TestTransport, node: UInt64, valid: UInt32, uid: UInt32) -> (error: Int32, mode: UInt32) {
        var b = RequestBuilder()
        b.u32(valid); b.u32(0)               // valid, padding
        b.u64(0); b.u64(0); b.u64(0)         // fh, size, lock_owner
        b.u64(0); b.u64(0); b.u64(0)         // atime, mtime, ctime
        b.u32(0); b.u32(0); b.u32(0)         // atimensec, mtimensec, ctimensec
        b.u32(0); b.u32(0); b.u32(0); b.u32(0); b.u32(0)  // mode, unused, uid, gid, unused
        let r = transport.send(b.request(.setattr, nodeID: node, uid: uid, gid: uid))!
        return (r.error, r.error == 0 ? r.u32(at: 16 + 60) : 0)
    }

    static func withServer(_ body: (String, TestTransport) throws -> Void) throws {
        var template = Array("/tmp/ferry-killpriv-XXXXXX".utf8CString)
        let root = String(cString: mkdtemp(&template)!)
        defer {
            // Requests as uid 1001 left this thread acting as it; other tests share the thread.
            POSIXDriver.resetThreadCredentials()
            _ = try? FileManager.default.removeItem(atPath: root)
        }
        var logger = Logger(label: "killpriv")
        logger.logLevel = .critical
        let server = try FUSEServer(driver: POSIXDriver(root: root), policy: ExportPolicy(), logger: logger)
        try body(root, TestTransport(server))
    }

    static func hostMode(_ path: String) -> UInt32 {
        var st = stat()
        return stat(path, &st) == 0 ? UInt32(st.st_mode) & 0o7777 : 0xFFFF
    }

    @Test func aSetattrNamingNoChangeDropsSetIDBitsOfAFile() throws {
        try Self.withServer { root, transport in
            let path = root + "/prog"
            #expect(FileManager.default.createFile(atPath: path, contents: Data("x".utf8)))
            #expect(chown(path, 1000, 1000) == 0)
            #expect(chmod(path, 0o6755) == 0)
            let node = transport.lookup("prog").nodeID
            let reply = Self.setattr(transport, node: node, valid: 0, uid: 1001)
            #expect(reply.error == 0)
            #expect(reply.mode & 0o7777 == 0o755)
            #expect(Self.hostMode(path) == 0o755)
        }
    }

    @Test func aSetattrNamingNoChangeKeepsSetGIDWithoutGroupExecute() throws {
        try Self.withServer { root, transport in
            let path = root + "/locked"
            #expect(FileManager.default.createFile(atPath: path, contents: Data("x".utf8)))
            #expect(chmod(path, 0o6745) == 0)
            let node = transport.lookup("locked").nodeID
            #expect(Self.setattr(transport, node: node, valid: 0, uid: 1001).mode & 0o7777 == 0o2745)
        }
    }

    @Test func aDirectoryKeepsItsSetGIDAndATimeChangeKeepsAFilesBits() throws {
        try Self.withServer { root, transport in
            #expect(mkdir(root + "/shared", 0o755) == 0)
            #expect(chmod(root + "/shared", 0o2775) == 0)
            let dir = transport.lookup("shared").nodeID
            #expect(Self.setattr(transport, node: dir, valid: 0, uid: 0).mode & 0o7777 == 0o2775)
            #expect(Self.hostMode(root + "/shared") == 0o2775)

            let path = root + "/prog"
            #expect(FileManager.default.createFile(atPath: path, contents: Data("x".utf8)))
            #expect(chmod(path, 0o4755) == 0)
            let file = transport.lookup("prog").nodeID
            // Root setting the access time to now: a real change, no request to drop anything.
            #expect(Self.setattr(transport, node: file, valid: FUSESetattrValid.atimeNow | FUSESetattrValid.atime, uid: 0).mode & 0o7777 == 0o4755)
            #expect(Self.hostMode(path) == 0o4755)
        }
    }
}
