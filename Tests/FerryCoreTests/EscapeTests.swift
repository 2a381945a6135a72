import FerryCore
import FerryFUSE
import FerryPOSIX
import Foundation
import Logging
import Testing

/// A hostile client, speaking raw FUSE to the server core over a real POSIX export, tries
/// to reach outside the export. Every attempt is refused and nothing outside changes.
@Suite(.serialized) struct EscapeTests {
    final class Sandbox {
        let top: String
        var export: String { top + "/export" }
        var outside: String { top + "/outside" }
        let transport: TestTransport

        init() throws {
            var template = Array("/tmp/ferry-escape-XXXXXX".utf8CString)
            top = String(cString: mkdtemp(&template)!)
            let fm = FileManager.default
            try fm.createDirectory(atPath: top + "/export", withIntermediateDirectories: false)
            try fm.createDirectory(atPath: top + "/outside", withIntermediateDirectories: false)
            try "secret".write(toFile: top + "/outside/secret.txt", atomically: false, encoding: .utf8)
            try "inside".write(toFile: top + "/export/file", atomically: false, encoding: .utf8)
            try fm.createSymbolicLink(atPath: top + "/export/escape", withDestinationPath: top + "/outside")
            try fm.createSymbolicLink(atPath: top + "/export/up", withDestinationPath: "..")
            try fm.createSymbolicLink(atPath: top + "/export/secret-link", withDestinationPath: top + "/outside/secret.txt")
            #expect(mkfifo(top + "/export/pipe", 0o666) == 0)
            var logger = Logger(label: "escape")
            logger.logLevel = .critical
            let server = try FUSEServer(driver: POSIXDriver(root: top + "/export"), policy: ExportPolicy(), logger: logger)
            transport = TestTransport(server)
        }

        deinit { _ = try? FileManager.default.removeItem(atPath: top) }

        /// What lies outside, to compare before and after.
        func outsideSnapshot() throws -> [String: String] {
            var snapshot: [String: String] = [:]
            for name in try FileManager.default.contentsOfDirectory(atPath: outside) {
                let attributes = try FileManager.default.attributesOfItem(atPath: outside + "/" + name)
                snapshot[name] = "\(attributes[.modificationDate]!) \(attributes[.size]!) \(attributes[.posixPermissions]!)"
                    + (try String(contentsOfFile: outside + "/" + name, encoding: .utf8))
            }
            return snapshot
        }

        func create(_ name: String, in parent: UInt64 = 1) -> Reply {
            var b = RequestBuilder(); b.u32(UInt32(O_WRONLY | O_CREAT)); b.u32(0o644); b.u32(0); b.u32(0); b.name(name)
            return transport.send(b.request(.create, nodeID: parent))!
        }

        func open(_ nodeID: UInt64, flags: Int32 = O_RDONLY) -> Reply {
            var b = RequestBuilder(); b.u32(UInt32(flags)); b.u32(0)
            return transport.send(b.request(.open, nodeID: nodeID))!
        }
    }

    @Test func namesThatClimbOutAreRefused() throws {
        let s = try Sandbox()
        let before = try s.outsideSnapshot()
        let t = s.transport
        #expect(t.lookup("..").error == -EINVAL)
        #expect(t.lookup("../outside").error == -EINVAL)
        #expect(t.lookup("../outside/secret.txt").error == -EINVAL)
        #expect(t.mkdir("../outside/evil").error == -EINVAL)
        #expect(s.create("../outside/evil").error == -EINVAL)
        #expect(s.create("/tmp/evil").error == -EINVAL)
        var rename = RequestBuilder(); rename.u64(1); rename.name("file"); rename.name("../outside/stolen")
        #expect(t.send(rename.request(.rename))?.error == -EINVAL)
        let file = t.lookup("file").nodeID
        var link = RequestBuilder(); link.u64(file); link.name("../outside/linked")
        #expect(t.send(link.request(.link))?.error == -EINVAL)
        var symlink = RequestBuilder(); symlink.name("../outside/sym"); symlink.name("/etc/passwd")
        #expect(t.send(symlink.request(.symlink))?.error == -EINVAL)
        #expect(try s.outsideSnapshot() == before)
    }

    @Test func hostSymlinksAreNeverFollowed() throws {
        let s = try Sandbox()
        let before = try s.outsideSnapshot()
        let t = s.transport
        for linkName in ["escape", "up"] {
            let link = t.lookup(linkName)
            #expect(link.error == 0)
            #expect(link.u32(at: 40 + 60) & UInt32(S_IFMT) == UInt32(S_IFLNK))      // attr.mode: the link itself
            #expect(t.lookup("secret.txt", in: link.nodeID).error == -ENOTDIR)
            #expect(t.lookup("outside", in: link.nodeID).error == -ENOTDIR)
            #expect(t.mkdir("evil", in: link.nodeID).error == -ENOTDIR)
            #expect(s.create("evil", in: link.nodeID).error == -ENOTDIR)
            #expect(s.open(link.nodeID).error == -ELOOP)
        }
        let secretLink = t.lookup("secret-link")
        #expect(s.open(secretLink.nodeID).error == -ELOOP)
        #expect(s.open(secretLink.nodeID, flags: O_WRONLY | O_TRUNC).error == -ELOOP)
        #expect(try s.outsideSnapshot() == before)
    }

    @Test func aHostFifoIsNeverOpenedAsAFile() async throws {
        let s = try Sandbox()
        let pipe = s.transport.lookup("pipe")
        #expect(pipe.error == 0)
        // A naive server would block here forever in open(2) waiting for a writer.
        // nonisolated(unsafe): only the child task uses the sandbox until the group has
        // returned, which waits for that task to end.
        nonisolated(unsafe) let sandbox = s
        let result = try await withThrowingTaskGroup(of: Int32?.self) { group in
            group.addTask { sandbox.open(pipe.nodeID).error }
            group.addTask { try await Task.sleep(for: .seconds(10)); return nil }
            let first = try await group.next()!
            group.cancelAll()
            return first
        }
        #expect(result == -ENXIO)
        // Creating over the fifo's name without O_EXCL must not open it either.
        #expect(s.create("pipe").error != 0)
    }
}
