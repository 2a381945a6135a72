import FerryCore
import FerryFUSE
import Logging
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Every open the driver made is paid back, also when the kernel never gets its `fh`: a
/// full handle table, or a CREATE whose entry cannot be stored. A driver that counts opens
/// (NFS hides the name of a file unlinked while open) would otherwise see the file open
/// until the session ends.
@Suite struct HandleReleaseTests {
    static func server(_ driver: ScriptedDriver, maxNodes: Int = 1_000, maxOpenHandles: Int) throws -> (FUSEServer<ScriptedDriver>, TestTransport) {
        var logger = Logger(label: "release")
        logger.logLevel = .critical
        let server = try FUSEServer(driver: driver, policy: ExportPolicy(maxNodes: maxNodes, maxOpenHandles: maxOpenHandles), logger: logger)
        return (server, TestTransport(server))
    }

    static func open(_ opcode: FUSEOpcode, _ nodeID: UInt64, _ t: TestTransport) -> Reply {
        var b = RequestBuilder(); b.u32(UInt32(O_RDWR)); b.u32(0)
        return t.send(b.request(opcode, nodeID: nodeID))!
    }

    static func create(_ name: String, _ t: TestTransport) -> Reply {
        var b = RequestBuilder(); b.u32(UInt32(O_RDWR | O_CREAT)); b.u32(0o644); b.u32(0); b.u32(0); b.name(name)
        return t.send(b.request(.create))!
    }

    @Test func anOpenRefusedAtTheHandleLimitIsReleased() throws {
        let driver = ScriptedDriver()
        let (server, t) = try Self.server(driver, maxOpenHandles: 1)
        let first = Self.create("a", t)
        try #require(first.error == 0)
        #expect(Self.open(.open, first.nodeID, t).error == -ENFILE)
        #expect(driver.openFiles == 1, "only the open the kernel holds is still open")
        #expect(server.openHandleCount == 1)
    }

    @Test func aCreateRefusedAtTheHandleLimitIsReleased() throws {
        let driver = ScriptedDriver()
        let (_, t) = try Self.server(driver, maxOpenHandles: 1)
        try #require(Self.create("a", t).error == 0)
        #expect(Self.create("b", t).error == -ENFILE)
        #expect(driver.openFiles == 1)
    }

    @Test func aCreateWhoseEntryCannotBeStoredIsReleased() throws {
        let driver = ScriptedDriver()
        // The root alone fills the node table: the created file's entry cannot be interned.
        let (server, t) = try Self.server(driver, maxNodes: 1, maxOpenHandles: 10)
        #expect(Self.create("a", t).error == -ENFILE)
        #expect(driver.openFiles == 0)
        #expect(server.openHandleCount == 0)
    }

    @Test func aDirectoryOpenRefusedAtTheHandleLimitIsReleased() throws {
        let driver = ScriptedDriver()
        let (_, t) = try Self.server(driver, maxOpenHandles: 1)
        try #require(Self.open(.opendir, 1, t).error == 0)
        #expect(Self.open(.opendir, 1, t).error == -ENFILE)
        #expect(driver.openDirectories == 1)
    }

    /// A node id no kernel was given, however large, is simply unknown: the public
    /// statistics call answers nil instead of trapping on the conversion to a slot index.
    @Test(arguments: [UInt64(Int.max) + 2, UInt64.max, 0])
    func lookupCountOfAnIdBeyondTheTableIsNil(nodeID: UInt64) throws {
        let (server, _) = try Self.server(ScriptedDriver(), maxOpenHandles: 1)
        #expect(server.lookupCount(of: nodeID) == nil)
        #expect(server.lookupCount(of: 1) != nil)
    }
}
