import FerryCore
import FerryFUSE
import FerryPOSIX
import Foundation
import Logging
import Testing

/// CREATE and TMPFILE keep O_EXCL on their way to the driver. The kernel sends CREATE
/// after its own negative LOOKUP; another client (a host process, another guest) may make
/// the name in between, and an exclusive create must then fail, not open and truncate
/// the other's file.
@Suite(.serialized) struct CreateExclusiveTests {
    /// A POSIX export over a fresh directory, with a session started.
    final class Export {
        let root: String
        let server: FUSEServer<POSIXDriver>
        let transport: TestTransport

        /// `deferral`: the transport can answer later (lock waits); `policy` the export's.
        init(policy: ExportPolicy = ExportPolicy(), deferral: (any ReplyDeferral)? = nil, initialize: Bool = true) throws {
            var template = Array("/tmp/ferry-excl-XXXXXX".utf8CString)
            root = String(cString: mkdtemp(&template)!)
            var logger = Logger(label: "excl")
            logger.logLevel = .critical
            server = try FUSEServer(driver: POSIXDriver(root: root), policy: policy, logger: logger)
            transport = TestTransport(server, initialize: initialize, deferral: deferral)
        }

        deinit { _ = try? FileManager.default.removeItem(atPath: root) }

        func create(_ name: String, flags: Int32) -> Reply {
            var b = RequestBuilder(); b.u32(UInt32(bitPattern: flags)); b.u32(0o644); b.u32(0); b.u32(0); b.name(name)
            return transport.send(b.request(.create))!
        }

        func tmpfile(flags: Int32) -> Reply {
            var b = RequestBuilder(); b.u32(UInt32(bitPattern: flags)); b.u32(0o600); b.u32(0); b.u32(0)
            return transport.send(b.request(.tmpfile))!
        }

        func link(_ nodeID: UInt64, as name: String) -> Reply {
            var b = RequestBuilder(); b.u64(nodeID); b.name(name)
            return transport.send(b.request(.link))!
        }

        func contents(_ name: String) -> Data? { FileManager.default.contents(atPath: root + "/" + name) }
    }

    @Test func exclusiveCreateOfANameMadeMeanwhileFailsAndLeavesTheFileAlone() throws {
        let e = try Export()
        // Made on the host after the guest's LOOKUP said the name was free.
        try Data("someone else's".utf8).write(to: URL(fileURLWithPath: e.root + "/taken"))
        let r = e.create("taken", flags: O_RDWR | O_CREAT | O_EXCL | O_TRUNC)
        #expect(r.error == -EEXIST)
        #expect(e.contents("taken") == Data("someone else's".utf8))
        #expect(e.server.openHandleCount == 0)
    }

    @Test func createWithoutExclusiveOpensTheNameMadeMeanwhile() throws {
        let e = try Export()
        try Data("old".utf8).write(to: URL(fileURLWithPath: e.root + "/shared"))
        let r = e.create("shared", flags: O_RDWR | O_CREAT | O_TRUNC)
        #expect(r.error == 0)
        #expect(e.contents("shared") == Data(), "O_TRUNC without O_EXCL truncates what is there")
        #expect(e.server.openHandleCount == 1)
    }

    @Test func exclusiveTmpfileCannotBeLinkedIntoTheTree() throws {
        let e = try Export()
        let linkable = e.tmpfile(flags: O_RDWR)
        try #require(linkable.error == 0)
        #expect(e.link(linkable.nodeID, as: "kept").error == 0, "without O_EXCL a tmpfile may be linked")
        let never = e.tmpfile(flags: O_RDWR | O_EXCL)
        try #require(never.error == 0)
        #expect(e.link(never.nodeID, as: "never").error == -ENOENT)
        #expect(e.contents("never") == nil)
    }
}
