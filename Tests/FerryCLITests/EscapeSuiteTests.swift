import CFerry
import FerryFUSE
import FerryTestSupport
import FerryVhostFrontend
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A hostile guest, through the project's vhost-user front-end, against `ferry virtiofsd`
/// with the sandbox on (the default: namespaces, pivot_root, seccomp kill) and off. Every
/// attempt is refused or stays inside the export, and nothing outside it is ever opened,
/// created or changed.
@Suite(.serialized, .requires(.root))
struct EscapeSuiteTests {
    enum Mode: String, CaseIterable { case sandboxed, unsandboxed }

    final class Setup {
        let top: String
        var export: String { top + "/export" }
        var outside: String { top + "/outside" }
        let process = Process()
        let session: FUSESession

        init(_ mode: Mode) throws {
            top = try makeTemporaryDirectory("ferry-escape")
            let fm = FileManager.default
            for d in ["export", "outside", "export/shared"] { try fm.createDirectory(atPath: top + "/" + d, withIntermediateDirectories: false) }
            try "secret".write(toFile: top + "/outside/secret", atomically: false, encoding: .utf8)
            try "inside".write(toFile: top + "/export/file", atomically: false, encoding: .utf8)
            try fm.createSymbolicLink(atPath: top + "/export/escape", withDestinationPath: top + "/outside")
            try fm.createSymbolicLink(atPath: top + "/export/up", withDestinationPath: "..")
            // In a child process: this test process's threads may carry another test's fsuid.
            let e = top + "/export"
            let made = try runToCompletion("/bin/sh", ["-c", "mkfifo \(e)/fifo && mknod \(e)/null c 1 3 && mknod \(e)/loop b 7 0"
                + " && chown 0:5555 \(e)/shared && chmod 2777 \(e)/shared"])
            // The last two: a setgid directory of a group the guest user is not in (CVE-2022-0358).
            #expect(made.succeeded, "\(made.output)")
            process.executableURL = URL(fileURLWithPath: try BuiltProducts.require("ferry"))
            process.arguments = ["virtiofsd", "--socket-path=\(top)/vhost.sock", "--shared-dir=\(top)/export", "--xattr"]
                + (mode == .sandboxed ? [] : ["--sandbox=none", "--seccomp=none"])
            process.standardError = FileHandle(forWritingAtPath: "/dev/null")
            try runWithDefaultSignalMask(process)
            let deadline = Date().addingTimeInterval(20)
            while !fm.fileExists(atPath: top + "/vhost.sock") && Date() < deadline { usleep(20_000) }
            usleep(100_000)
            session = try FUSESession(socketPath: top + "/vhost.sock")
        }

        deinit {
            if process.isRunning { process.terminate(); process.waitUntilExit() }
            try? FileManager.default.removeItem(atPath: top)
        }

        /// Everything outside the export: names, sizes, modes, owners, contents.
        func outsideSnapshot() throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: outside).sorted().map { name in
                let path = outside + "/" + name
                var st = stat()
                lstat(path, &st)
                let content = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
                return "\(name) \(st.st_size) \(st.st_mode) \(st.st_uid):\(st.st_gid) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec) \(content)"
            }
        }

        /// A raw request (header + arguments) as uid/gid, with `groups` as FUSE_EXT_GROUPS;
        /// the reply's errno (0 on success) and bytes.
        func send(_ opcode: FUSEOpcode, nodeID: UInt64 = 1, _ arguments: [UInt8], uid: UInt32 = 0, gid: UInt32 = 0,
                  groups: [UInt32] = [], replySize: Int = 4096) throws -> (error: Int32, reply: [UInt8]) {
            var extensions: [UInt8] = []
            if !groups.isEmpty {
                var ext: [UInt8] = []
                func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { ext += $0 } }
                let size = (8 + 4 + 4 * groups.count + 7) & ~7
                u32(UInt32(size)); u32(32)   // fuse_ext_header: size, FUSE_EXT_GROUPS
                u32(UInt32(groups.count)); groups.forEach(u32)
                ext += [UInt8](repeating: 0, count: size - ext.count)
                extensions = ext
            }
            // As the kernel lays it out: the extension area follows the arguments directly.
            let padded = arguments
            var header = [UInt8](repeating: 0, count: FUSEInHeader.size)
            header.withUnsafeMutableBytes {
                FUSEInHeader(length: UInt32(FUSEInHeader.size + padded.count + extensions.count), opcode: opcode.rawValue,
                             unique: 0x5151, nodeID: nodeID, uid: uid, gid: gid, pid: 1,
                             totalExtensionLength: UInt16(extensions.count / 8)).encode(to: $0.baseAddress!)
            }
            let q = session.queue
            guard let posted = q.submitRaw(readable: [header + padded + extensions], writableSizes: [replySize]) else {
                throw ServeError("no free slot")
            }
            let c = try q.wait(for: posted.slot)
            let bytes = q.rawReply(c, writableSizes: [replySize])
            return (c.header?.error ?? -9999, bytes)
        }

        static func name(_ s: String) -> [UInt8] { Array(s.utf8) + [0] }
        static func u32s(_ values: UInt32...) -> [UInt8] { values.flatMap { v in withUnsafeBytes(of: v.littleEndian) { Array($0) } } }

        func lookup(_ name: [UInt8], in parent: UInt64 = 1) throws -> Int32 { try send(.lookup, nodeID: parent, name).error }
        func nodeID(_ name: String, in parent: UInt64 = 1) throws -> UInt64 { try session.queue.lookup(parent: parent, name: name).nodeID }
        func mkdir(_ name: [UInt8], in parent: UInt64 = 1) throws -> Int32 { try send(.mkdir, nodeID: parent, Self.u32s(0o755, 0) + name).error }
        func create(_ name: [UInt8], in parent: UInt64 = 1, mode: UInt32 = 0o644, uid: UInt32 = 0, gid: UInt32 = 0,
                    groups: [UInt32] = []) throws -> Int32 {
            try send(.create, nodeID: parent, Self.u32s(UInt32(O_WRONLY | O_CREAT), mode, 0, 0) + name, uid: uid, gid: gid, groups: groups).error
        }
        func open(_ nodeID: UInt64, flags: Int32) throws -> Int32 { try send(.open, nodeID: nodeID, Self.u32s(UInt32(flags), 0)).error }
    }

    @Test(arguments: Mode.allCases)
    func badNamesAreRefusedBeforeAnythingIsTouched(_ mode: Mode) throws {
        let s = try Setup(mode)
        let before = try s.outsideSnapshot()
        for bad in ["..", ".", "../outside/secret", "a/b", "/etc/passwd", String(repeating: "x", count: 256)] {
            let expected = bad.utf8.count > 255 ? -ENAMETOOLONG : -EINVAL
            #expect(try s.lookup(Setup.name(bad)) == expected, "lookup \(bad)")
            #expect(try s.mkdir(Setup.name(bad)) == expected, "mkdir \(bad)")
            #expect(try s.create(Setup.name(bad)) == expected, "create \(bad)")
        }
        // A NUL inside a name: the name is refused, never cut short to "file".
        #expect(try s.send(.lookup, Array("file".utf8) + [0] + Array("/x".utf8) + [0]).error != 0)
        #expect(try s.create(Array("fi".utf8) + [0] + Array("../outside/evil".utf8) + [0]) != 0)
        // LOOKUP of ".." on the root.
        #expect(try s.lookup(Setup.name("..")) == -EINVAL)
        // RENAME and LINK out of the export by name.
        #expect(try s.send(.rename, Setup.u32s(1, 0) + Setup.name("file") + Setup.name("../outside/stolen")).error == -EINVAL)
        #expect(try s.outsideSnapshot() == before)
        #expect(FileManager.default.fileExists(atPath: s.export + "/file"))
    }

    @Test(arguments: Mode.allCases)
    func symlinksAreNeverFollowedAndAbsoluteTargetsStayText(_ mode: Mode) throws {
        let s = try Setup(mode)
        let before = try s.outsideSnapshot()
        // An absolute symlink target is stored as text; using it leads nowhere outside.
        #expect(try s.send(.symlink, Setup.name("abs") + Setup.name(s.outside + "/secret")).error == 0)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: s.export + "/abs") == s.outside + "/secret")
        for link in ["escape", "up", "abs"] {
            let node = try s.nodeID(link)
            #expect(try s.open(node, flags: O_RDONLY) != 0, "open through \(link)")
            #expect(try s.create(Setup.name("planted"), in: node) != 0, "create through \(link)")
            #expect(try s.mkdir(Setup.name("planted-dir"), in: node) != 0, "mkdir through \(link)")
        }
        #expect(try s.outsideSnapshot() == before)
    }

    @Test(arguments: Mode.allCases)
    func specialFilesCannotBeOpenedAsFiles(_ mode: Mode) throws {
        let s = try Setup(mode)
        for special in ["fifo", "null", "loop"] {
            let node = try s.nodeID(special)
            let error = try s.open(node, flags: O_RDWR)
            #expect(error == -ENXIO || error == -EPERM || error == -EACCES || error == -EINVAL, "\(special): \(error)")
        }
        // Making device nodes is refused without --allow-devices.
        #expect(try s.send(.mknod, Setup.u32s(UInt32(S_IFCHR) | 0o666, deviceNumber(1, 3), 0, 0) + Setup.name("newnull")).error == -EPERM)
        #expect(!FileManager.default.fileExists(atPath: s.export + "/newnull"))
        // The server is still serving.
        #expect(try s.session.queue.getattr(nodeID: 1).attr.mode & 0o170000 == 0o040000)
    }

    @Test(arguments: Mode.allCases)
    func aSetgidDirectoryGivesNoSetgidFileToANonMember(_ mode: Mode) throws {
        // CVE-2022-0358: a guest user outside the directory's group asks for a setgid file in
        // a setgid directory; the file must not come out setgid in that group.
        let s = try Setup(mode)
        let shared = try s.nodeID("shared")
        #expect(try s.create(Setup.name("exploit"), in: shared, mode: 0o2755, uid: 1000, gid: 1000, groups: [1000]) == 0)
        var st = stat()
        #expect(stat(s.export + "/shared/exploit", &st) == 0)
        #expect(st.st_gid == 5555, "inherited from the setgid directory")
        #expect(st.st_uid == 1000)
        #expect(st.st_mode & S_ISGID == 0, "mode \(String(st.st_mode, radix: 8)): setgid kept for a non-member")
    }

    @Test(arguments: Mode.allCases)
    func aDirectorySwappedForASymlinkWhileTheGuestWorksLeadsNowhereOutside(_ mode: Mode) throws {
        let s = try Setup(mode)
        let fm = FileManager.default
        try fm.createDirectory(atPath: s.export + "/d", withIntermediateDirectories: false)
        try fm.createSymbolicLink(atPath: s.export + "/d-link", withDestinationPath: s.outside)
        let before = try s.outsideSnapshot()
        let stop = Locked(false)
        let (directory, link) = (s.export + "/d", s.export + "/d-link")
        let swapper = Thread {
            // renameat2(RENAME_EXCHANGE) swaps the directory and the symlink atomically.
            while !stop.value { _ = renameat2Exchange(directory, link) }
        }
        swapper.start()
        defer { stop.update { $0 = true } }
        var created = 0
        for i in 0..<300 {
            // Whatever "d" is at this instant, a name under it must stay in the export.
            guard let node = try? s.nodeID("d") else { continue }
            if try s.create(Setup.name("f\(i)"), in: node) == 0 { created += 1 }
            _ = try s.mkdir(Setup.name("m\(i)"), in: node)
            _ = try s.lookup(Setup.name("secret"), in: node)
        }
        stop.update { $0 = true }
        usleep(50_000)
        #expect(try s.outsideSnapshot() == before, "something outside changed")
        #expect(!fm.fileExists(atPath: s.outside + "/f0"))
        #expect(created > 0, "the guest got some work done inside")
        #expect(s.process.isRunning)
    }
}

/// renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE).
func renameat2Exchange(_ a: String, _ b: String) -> Int32 {
    ferry_renameat2(AT_FDCWD, a, AT_FDCWD, b, 2)
}

/// glibc's makedev (a macro Swift does not see), for small numbers.
func deviceNumber(_ major: UInt32, _ minor: UInt32) -> UInt32 { (major << 8) | minor }
