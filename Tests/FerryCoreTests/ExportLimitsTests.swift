import FerryCore
import FerryFUSE
import FerryPOSIX
import Foundation
import Logging
import Testing

/// Quota, QoS, id mapping and statistics as the server core applies them, over a real
/// POSIX export driven with raw FUSE requests.
@Suite(.serialized) struct ExportLimitsTests {
    final class Export {
        let root: String
        let server: FUSEServer<POSIXDriver>
        let transport: TestTransport

        init(policy: ExportPolicy, prepare: (String) throws -> Void = { _ in }) throws {
            var template = Array("/tmp/ferry-limits-XXXXXX".utf8CString)
            root = String(cString: mkdtemp(&template)!)
            try prepare(root)
            var logger = Logger(label: "limits")
            logger.logLevel = .critical
            server = try FUSEServer(driver: POSIXDriver(root: root), policy: policy, logger: logger)
            transport = TestTransport(server)
        }

        deinit {
            // Requests with callers other than root left this thread acting as them (fsuid and
            // groups are per thread); other tests on the same thread must not inherit that.
            POSIXDriver.resetThreadCredentials()
            _ = try? FileManager.default.removeItem(atPath: root)
        }

        /// CREATE as `uid`/`gid`: the reply's node id and fh.
        func create(_ name: String, uid: UInt32 = 0, gid: UInt32 = 0) -> (error: Int32, node: UInt64, fh: UInt64, reply: Reply) {
            var b = RequestBuilder(); b.u32(UInt32(O_RDWR | O_CREAT)); b.u32(0o644); b.u32(0); b.u32(0); b.name(name)
            let r = transport.send(b.request(.create, uid: uid, gid: gid))!
            return (r.error, r.error == 0 ? r.nodeID : 0, r.error == 0 ? r.u64(at: 128) : 0, r)
        }

        func write(node: UInt64, fh: UInt64, offset: UInt64, count: Int) -> Reply {
            var b = RequestBuilder()
            b.u64(fh); b.u64(offset); b.u32(UInt32(count)); b.u32(0); b.u64(0); b.u32(0); b.u32(0)
            b.bytes([UInt8](repeating: 0x61, count: count))
            return transport.send(b.request(.write, nodeID: node))!
        }

        func unlink(_ name: String) -> Reply {
            var b = RequestBuilder(); b.name(name)
            return transport.send(b.request(.unlink))!
        }

        func rmdir(_ name: String) -> Reply {
            var b = RequestBuilder(); b.name(name)
            return transport.send(b.request(.rmdir))!
        }

        func statfs() -> Reply { transport.send(RequestBuilder().request(.statfs))! }

        func size(_ name: String) throws -> Int {
            (try FileManager.default.attributesOfItem(atPath: root + "/" + name)[.size] as! NSNumber).intValue
        }
    }

    @Test func writesPastTheByteQuotaGetEDQUOTAndUsageCountsWhatWasThere() throws {
        var policy = ExportPolicy()
        policy.quota = QuotaLimits(bytes: 1000)
        let e = try Export(policy: policy) { root in
            try Data(repeating: 1, count: 600).write(to: URL(fileURLWithPath: root + "/old"))
        }
        #expect(e.server.quota?.bytesUsed == 600)
        let f = e.create("new")
        #expect(f.error == 0)
        #expect(e.write(node: f.node, fh: f.fh, offset: 0, count: 300).error == 0)
        // Rewriting bytes already there costs nothing.
        #expect(e.write(node: f.node, fh: f.fh, offset: 0, count: 300).error == 0)
        let refused = e.write(node: f.node, fh: f.fh, offset: 300, count: 200)
        #expect(refused.error == -EDQUOT)
        #expect(try e.size("new") == 300, "a refused write changes nothing")
        #expect(e.unlink("old").error == 0)
        #expect(e.server.quota?.bytesUsed == 300)
        #expect(e.write(node: f.node, fh: f.fh, offset: 300, count: 200).error == 0)
        #expect(try e.size("new") == 500)
        #expect(e.server.statistics.snapshot().quotaRefusals == 1)
    }

    /// Ranges whose end does not fit a file offset (found by the server fuzz target: the
    /// sum trapped and took the daemon down): EFBIG, with or without a quota, and the
    /// export keeps serving.
    @Test(arguments: [false, true])
    func rangesPastTheLargestOffsetGetEFBIG(withQuota: Bool) throws {
        var policy = ExportPolicy()
        if withQuota { policy.quota = QuotaLimits(bytes: 1 << 20) }
        let e = try Export(policy: policy)
        let f = e.create("file")
        let huge: UInt64 = 0xFFFF_FFFF_FFFF_FFCD
        #expect(e.write(node: f.node, fh: f.fh, offset: huge, count: 100).error == -EFBIG)
        #expect(e.write(node: f.node, fh: f.fh, offset: UInt64(Int64.max) - 10, count: 100).error == -EFBIG)
        var fallocate = RequestBuilder()
        fallocate.u64(f.fh); fallocate.u64(huge); fallocate.u64(4096); fallocate.u32(0); fallocate.u32(0)
        #expect(e.transport.send(fallocate.request(.fallocate, nodeID: f.node))!.error == -EFBIG)
        for (offsetIn, offsetOut) in [(UInt64(0), huge), (huge, UInt64(0))] {
            var copy = RequestBuilder()
            copy.u64(f.fh); copy.u64(offsetIn); copy.u64(f.node); copy.u64(f.fh); copy.u64(offsetOut)
            copy.u64(0xFFFF_FFFF_FFFF_FF00); copy.u64(0)
            #expect(e.transport.send(copy.request(.copyFileRange, nodeID: f.node))!.error == -EFBIG)
        }
        #expect(e.write(node: f.node, fh: f.fh, offset: 0, count: 100).error == 0)
        #expect(try e.size("file") == 100)
    }

    /// Preallocation past the end of a file (FALLOC_FL_KEEP_SIZE) takes host blocks that no
    /// file size shows: under a byte quota it is refused, inside the file it is fine, and a
    /// hole can still be punched.
    @Test func preallocationPastTheEndIsRefusedUnderAByteQuota() throws {
        var policy = ExportPolicy()
        policy.quota = QuotaLimits(bytes: 1 << 20)
        let e = try Export(policy: policy)
        let f = e.create("file")
        #expect(e.write(node: f.node, fh: f.fh, offset: 0, count: 8192).error == 0)
        func fallocate(mode: UInt32, offset: UInt64, length: UInt64) -> Int32 {
            var b = RequestBuilder()
            b.u64(f.fh); b.u64(offset); b.u64(length); b.u32(mode); b.u32(0)
            return e.transport.send(b.request(.fallocate, nodeID: f.node))!.error
        }
        #expect(fallocate(mode: 0x01, offset: 0, length: 1 << 30) == -EOPNOTSUPP)
        #expect(fallocate(mode: 0x01, offset: 0, length: 4096) == 0)
        #expect(fallocate(mode: 0x03, offset: 0, length: 4096) == 0)
        #expect(fallocate(mode: 0, offset: 0, length: 2 << 20) == -EDQUOT)
        var st = stat()
        #expect(stat(e.root + "/file", &st) == 0 && st.st_blocks * 512 < 1 << 20)
    }

    @Test func truncatingGivesSpaceBackAndGrowingPastTheQuotaIsRefused() throws {
        var policy = ExportPolicy()
        policy.quota = QuotaLimits(bytes: 4096)
        let e = try Export(policy: policy)
        let f = e.create("file")
        #expect(e.write(node: f.node, fh: f.fh, offset: 0, count: 4000).error == 0)
        func setSize(_ size: UInt64) -> Reply {
            var b = RequestBuilder()
            b.u32(FUSESetattrValid.size); b.u32(0); b.u64(0); b.u64(size); b.zeros(64)
            return e.transport.send(b.request(.setattr, nodeID: f.node))!
        }
        #expect(setSize(1 << 20).error == -EDQUOT)
        #expect(setSize(1000).error == 0)
        #expect(e.server.quota?.bytesUsed == 1000)
        #expect(setSize(4096).error == 0)
        #expect(try e.size("file") == 4096)
    }

    @Test func creatingPastTheInodeQuotaGetsEDQUOT() throws {
        var policy = ExportPolicy()
        policy.quota = QuotaLimits(inodes: 3)   // the root, "existing", one more
        let e = try Export(policy: policy) { root in
            try FileManager.default.createDirectory(atPath: root + "/existing", withIntermediateDirectories: false)
        }
        #expect(e.server.quota?.inodesUsed == 2)
        #expect(e.transport.mkdir("one").error == 0)
        #expect(e.transport.mkdir("two").error == -EDQUOT)
        #expect(e.create("file").error == -EDQUOT)
        #expect(!FileManager.default.fileExists(atPath: e.root + "/two"))
        #expect(e.rmdir("one").error == 0)
        #expect(e.create("file").error == 0)
    }

    @Test func statfsShowsTheQuotaAsTheFileSystemSize() throws {
        var policy = ExportPolicy()
        policy.quota = QuotaLimits(bytes: 1 << 20, inodes: 100)
        let e = try Export(policy: policy) { root in
            try Data(repeating: 1, count: 256 << 10).write(to: URL(fileURLWithPath: root + "/quarter"))
        }
        let s = e.statfs()
        #expect(s.error == 0)
        let frsize = UInt64(s.u32(at: 48))
        #expect(s.u64(at: 0) * frsize == 1 << 20, "blocks")
        #expect(s.u64(at: 16) * frsize == 768 << 10, "bavail")
        #expect(s.u64(at: 24) == 100, "files")
        #expect(s.u64(at: 32) == 98, "ffree")
    }

    @Test func rootSquashMakesGuestRootTheAnonymousOwner() throws {
        var policy = ExportPolicy()
        policy.idMap = IDMap(squash: .root, anonymousUID: 4242, anonymousGID: 4343)
        let e = try Export(policy: policy)
        let asRoot = e.create("by-root", uid: 0, gid: 0)
        #expect(asRoot.error == 0)
        let asUser = e.create("by-user", uid: 1000, gid: 1000)
        #expect(asUser.error == 0)
        let owners = { (name: String) throws -> (Int, Int) in
            let a = try FileManager.default.attributesOfItem(atPath: e.root + "/" + name)
            return ((a[.ownerAccountID] as! NSNumber).intValue, (a[.groupOwnerAccountID] as! NSNumber).intValue)
        }
        #expect(try owners("by-root") == (4242, 4343))
        #expect(try owners("by-user") == (1000, 1000))
    }

    @Test func rangesMapGuestIdsToHostIdsAndBack() throws {
        var policy = ExportPolicy()
        policy.idMap = IDMap(uidRanges: [.init(guest: 1000, host: 200_000, count: 100)],
                             gidRanges: [.init(guest: 1000, host: 300_000, count: 100)])
        let e = try Export(policy: policy) { root in
            try Data().write(to: URL(fileURLWithPath: root + "/foreign"))
            chown(root + "/foreign", 5000, 5000)
        }
        let made = e.create("mine", uid: 1005, gid: 1007)
        #expect(made.error == 0)
        let a = try FileManager.default.attributesOfItem(atPath: e.root + "/mine")
        #expect((a[.ownerAccountID] as! NSNumber).intValue == 200_005)
        #expect((a[.groupOwnerAccountID] as! NSNumber).intValue == 300_007)
        // The guest sees its own ids; a host id outside every range shows as the anonymous ids.
        #expect(made.reply.u32(at: 108) == 1005 && made.reply.u32(at: 112) == 1007)
        let foreign = e.transport.lookup("foreign")
        #expect(foreign.u32(at: 108) == 65534 && foreign.u32(at: 112) == 65534)
    }

    @Test func iopsLimitSpacesRequestsOut() throws {
        var policy = ExportPolicy()
        policy.qos = QoSLimits(iops: 50)
        let e = try Export(policy: policy)
        let started = Date()
        // The bucket starts full (50); 100 more requests must wait for 50 new tokens: ≥ 1 s.
        for _ in 0..<150 { #expect(e.transport.getattr(1).error == 0) }
        let elapsed = Date().timeIntervalSince(started)
        #expect(elapsed >= 0.95)
        // A request passes without waiting only on a token the bucket already had: the 50 it
        // started with and the 50 a second it earned meanwhile (a slow machine earns more, so
        // the bound follows the time the loop took, not a fixed count).
        let unthrottledAtMost = 50 + Int((50 * elapsed).rounded(.up)) + 1
        #expect(e.server.statistics.snapshot().throttledRequests >= UInt64(max(0, 150 - unthrottledAtMost)))
    }

    @Test func bandwidthLimitThrottlesWrites() throws {
        var policy = ExportPolicy()
        policy.qos = QoSLimits(bytesPerSecond: 256 << 10)
        let e = try Export(policy: policy)
        let f = e.create("file")
        let started = Date()
        // 256 KiB are free at once; 512 KiB more need 2 s of refill.
        for i in 0..<6 { #expect(e.write(node: f.node, fh: f.fh, offset: UInt64(i) << 17, count: 128 << 10).error == 0) }
        #expect(Date().timeIntervalSince(started) >= 1.9)
        #expect(try e.size("file") == 768 << 10)
    }

    @Test func statisticsCountOperationsErrorsAndBytes() throws {
        let e = try Export(policy: ExportPolicy())
        let f = e.create("file")
        #expect(e.write(node: f.node, fh: f.fh, offset: 0, count: 1000).error == 0)
        #expect(e.transport.lookup("missing").error == -ENOENT)
        #expect(e.transport.lookup("file").error == 0)
        let s = e.server.statistics.snapshot()
        let lookup = try #require(s.operations.first { $0.name == "lookup" })
        #expect(lookup.requests == 2 && lookup.errors == 1)
        #expect(lookup.latencyBuckets.reduce(0, +) == 2)
        #expect(lookup.percentile(0.99) > 0)
        #expect(s.operations.contains { $0.name == "create" && $0.requests == 1 })
        #expect(s.operations.contains { $0.name == "write" && $0.requests == 1 })
        #expect(s.bytesWritten == 1000)
    }
}
