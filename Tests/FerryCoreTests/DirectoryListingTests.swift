import FerryCore
import FerryFUSE
import Logging
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// READDIR and READDIRPLUS send only names a client kernel accepts, and an open directory
/// a migration could not restore answers EIO, as failed files and nodes do.
@Suite struct DirectoryListingTests {
    static func session(_ driver: ScriptedDriver) throws -> (FUSEServer<ScriptedDriver>, TestTransport) {
        var logger = Logger(label: "listing")
        logger.logLevel = .critical
        let server = try FUSEServer(driver: driver, logger: logger)
        return (server, TestTransport(server))
    }

    static func opendir(_ t: TestTransport) -> UInt64 {
        var b = RequestBuilder(); b.u32(0); b.u32(0)
        let r = t.send(b.request(.opendir))!
        precondition(r.error == 0, "OPENDIR failed")
        return r.u64(at: 0)
    }

    static func read(_ opcode: FUSEOpcode, _ fh: UInt64, _ t: TestTransport) -> Reply {
        var b = RequestBuilder()
        b.u64(fh); b.u64(0); b.u32(64 * 1024); b.u32(0); b.u64(0); b.u32(0); b.u32(0)
        return t.send(b.request(opcode))!
    }

    static func fsyncdir(_ fh: UInt64, _ t: TestTransport) -> Reply {
        var b = RequestBuilder(); b.u64(fh); b.u32(0); b.u32(0)
        return t.send(b.request(.fsyncdir))!
    }

    /// The names in a READDIR (fuse_dirent) or READDIRPLUS (fuse_direntplus) reply.
    static func names(_ r: Reply, plus: Bool) -> [String] {
        var out: [String] = []
        var at = 16
        let header = plus ? 128 : 0   // fuse_entry_out before each fuse_dirent
        while at + header + 24 <= r.bytes.count {
            let d = at + header
            let length = Int(r.bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: d + 16, as: UInt32.self) })
            out.append(String(decoding: r.bytes[(d + 24)..<(d + 24 + length)], as: UTF8.self))
            at = d + ((24 + length + 7) & ~7)
        }
        return out
    }

    static let hostile: [[UInt8]] = [Array("good".utf8), [], Array("a/b".utf8), Array("..".utf8), Array("also-good".utf8)]

    @Test(arguments: [false, true])
    func namesNoClientCanTakeAreLeftOutOfTheListing(plus: Bool) throws {
        let (_, t) = try Self.session(ScriptedDriver(listing: Self.hostile))
        let fh = Self.opendir(t)
        let r = Self.read(plus ? .readdirplus : .readdir, fh, t)
        try #require(r.error == 0)
        #expect(Self.names(r, plus: plus) == ["good", "..", "also-good"])
    }

    @Test func aDirectoryAMigrationCouldNotRestoreAnswersEIO() throws {
        let (source, t) = try Self.session(ScriptedDriver())
        let fh = Self.opendir(t)
        let state = try source.saveMigrationState(MigrationOptions())
        var logger = Logger(label: "listing")
        logger.logLevel = .critical
        let destination = try FUSEServer(driver: ScriptedDriver(losesDirectories: true), logger: logger)
        let report = try destination.loadMigrationState(state, MigrationOptions(onError: .guestError))
        #expect(report.failed == 1)
        let moved = TestTransport(destination, initialize: false)
        #expect(Self.read(.readdir, fh, moved).error == -EIO)
        #expect(Self.read(.readdirplus, fh, moved).error == -EIO)
        #expect(Self.fsyncdir(fh, moved).error == -EIO)
        #expect(Self.read(.readdir, fh &+ 1, moved).error == -EBADF, "a handle never given stays EBADF")
        var b = RequestBuilder(); b.u64(fh); b.u32(0); b.u32(0); b.u64(0)
        #expect(moved.send(b.request(.releasedir))!.error == 0)
        #expect(destination.openHandleCount == 0)
    }
}
