import FerryCore
import FerryFUSE
import FerryPOSIX
import Foundation
import Logging
import Testing
#if canImport(Glibc)
import Glibc
#endif

func makeServer(_ driver: MemoryDriver = MemoryDriver(), policy: ExportPolicy = ExportPolicy()) throws -> FUSEServer<MemoryDriver> {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    return try FUSEServer(driver: driver, policy: policy, logger: logger)
}

@Suite struct NodeLifetimeTests {
    @Test func repeatedLookupsShareOneNodeAndCountEach() throws {
        let server = try makeServer()
        let t = TestTransport(server)
        let made = t.mkdir("a")
        #expect(made.error == 0)
        let first = t.lookup("a"), second = t.lookup("a")
        #expect(first.nodeID == made.nodeID && second.nodeID == made.nodeID)
        #expect(server.lookupCount(of: made.nodeID) == 3)     // mkdir + 2 lookups
    }

    @Test func forgetFreesWhatLookupTook() throws {
        let driver = MemoryDriver()
        let server = try makeServer(driver)
        let t = TestTransport(server)
        let id = t.mkdir("a").nodeID
        t.lookup("a")
        t.forget(id, 1)
        #expect(server.lookupCount(of: id) == 1)
        #expect(t.getattr(id).error == 0)
        t.forget(id, 1)
        #expect(server.lookupCount(of: id) == nil)
        #expect(t.getattr(id).error == -EBADF)
        #expect(server.nodeCount == 1)
        // The core held the only reference besides the driver's tree; dropping the tree
        // entry shows the core released its own.
        _ = try? driver.unlink(driver.rootNode, withName("a"), .root)
        #expect(driver.releasedInodes == 1)
    }

    @Test func batchForgetPaysBackEveryListedNode() throws {
        let server = try makeServer()
        let t = TestTransport(server)
        let ids = (0..<5).map { t.mkdir("d\($0)").nodeID }
        var b = RequestBuilder()
        b.u32(UInt32(ids.count)); b.u32(0)
        for id in ids { b.u64(id); b.u64(1) }
        #expect(t.send(b.request(.batchForget)) == nil)
        #expect(server.nodeCount == 1)
    }

    @Test func forgettingMoreThanWasLookedUpIsClampedAndHarmless() throws {
        let server = try makeServer()
        let t = TestTransport(server)
        let id = t.mkdir("a").nodeID
        t.forget(id, UInt64.max)
        #expect(server.lookupCount(of: id) == nil)
        t.forget(id, 5)             // already gone
        t.forget(1, UInt64.max)     // the root is never forgotten
        t.forget(999_999, 1)        // never existed
        #expect(t.getattr(1).error == 0)
        #expect(server.nodeCount == 1)
    }

    @Test func reusedNodeIdsGetANewGeneration() throws {
        let server = try makeServer()
        let t = TestTransport(server)
        let a = t.mkdir("a")
        t.forget(a.nodeID, 1)
        let b = t.mkdir("b")
        #expect(b.nodeID == a.nodeID)
        #expect(b.generation != a.generation)
    }

    @Test func generationsStayUniqueAcrossAConnectionReset() throws {
        let server = try makeServer()
        let before = TestTransport(server).mkdir("a")
        server.connectionLost()
        let after = TestTransport(server).mkdir("b")
        #expect(after.nodeID == before.nodeID)
        #expect(after.generation != before.generation)
    }

    /// The kernel holds the node of a directory that is then removed (a process's cwd, an
    /// O_PATH descriptor, a FORGET still queued); the host gives its inode number to a new
    /// directory. A LOOKUP of the new one must not answer with the old node: the kernel
    /// would take it for the deleted directory, and every request on it would fail.
    @Test func aDirectoryOnAReusedInodeNumberGetsItsOwnNode() throws {
        var template = Array("/tmp/ferry-reuse-XXXXXX".utf8CString)
        let source = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileManager.default.removeItem(atPath: source) }
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        // Handles only, no cached descriptor: nothing on the host pins a node's inode.
        let driver = try POSIXDriver(root: source, options: POSIXOptions(fileHandles: .mandatory, maxCachedDescriptors: 0))
        let server = try FUSEServer(driver: driver, policy: ExportPolicy(), logger: logger)
        let t = TestTransport(server)

        let old = t.mkdir("old")
        try #require(old.error == 0)
        var st = stat()
        try #require(lstat(source + "/old", &st) == 0)
        let number = st.st_ino
        try #require(rmdir(source + "/old") == 0)
        var reused: String?
        for i in 0..<256 where reused == nil {
            let path = source + "/new\(i)"
            try #require(mkdir(path, 0o755) == 0)
            if lstat(path, &st) == 0 && st.st_ino == number { reused = "new\(i)" }
        }
        let name = try #require(reused, "the host never reused inode \(number) (this test needs ext4, as /tmp is here)")

        let new = t.lookup(name)
        #expect(new.error == 0)
        #expect(new.nodeID != old.nodeID || new.generation != old.generation)
        #expect(t.mkdir("inside", in: new.nodeID).error == 0)
        #expect(FileManager.default.fileExists(atPath: source + "/" + name + "/inside"))
    }

    @Test func eachExportHasItsOwnNodeIds() throws {
        let one = TestTransport(try makeServer()), two = TestTransport(try makeServer())
        let a = one.mkdir("x"), b = two.mkdir("y")
        #expect(a.nodeID == b.nodeID)       // same number, different tables
        #expect(one.lookup("y").error == -ENOENT)
        #expect(two.lookup("x").error == -ENOENT)
    }

    @Test func theInodeTableIsBounded() throws {
        let server = try makeServer(policy: ExportPolicy(maxNodes: 4))
        let t = TestTransport(server)
        for i in 0..<3 { #expect(t.mkdir("d\(i)").error == 0) }
        #expect(t.mkdir("d3").error == -ENFILE)
        #expect(server.nodeCount == 4)
    }

    @Test func aLostConnectionDropsEveryNodeAndHandle() throws {
        let server = try makeServer()
        let t = TestTransport(server)
        let id = t.mkdir("a").nodeID
        var o = RequestBuilder(); o.u32(UInt32(O_RDONLY)); o.u32(0)
        #expect(t.send(o.request(.opendir, nodeID: id))?.error == 0)
        server.connectionLost()
        #expect(server.nodeCount == 1 && server.openHandleCount == 0)
        #expect(t.getattr(1).error == -EIO)     // a new session must INIT first
        let fresh = TestTransport(server)
        #expect(fresh.getattr(id).error == -EBADF)
    }
}

/// A validated name for driver calls made directly from tests.
func withName(_ s: String) -> FileName {
    let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: s.utf8.count + 1, alignment: 1)
    storage.copyBytes(from: Array(s.utf8) + [0])
    // Leaked on purpose: test-only, a few bytes.
    return try! FileName.validated(UnsafeRawBufferPointer(rebasing: storage[0..<s.utf8.count])).get()
}
