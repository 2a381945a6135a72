import FerryFUSE
import Testing

/// FUSE_INIT version and capability negotiation.
@Suite struct InitNegotiationTests {
    static let config = FUSEInitConfig(wanted: [.asyncRead, .maxPages, .setxattrExt, .securityCtx, .writebackCache])

    func accepted(_ result: FUSEInitResult, sourceLocation: SourceLocation = #_sourceLocation)
        -> (reply: FUSEInitOut, agreed: FUSEInitFlags, minor: UInt32)? {
        guard case let .accepted(reply, agreed, minor) = result else {
            Issue.record("expected accepted, got \(result)", sourceLocation: sourceLocation)
            return nil
        }
        return (reply, agreed, minor)
    }

    @Test func kernel738IsAcceptedAtItsMinor() throws {
        let kernel = FUSEInitIn(major: 7, minor: 38, maxReadahead: 131072, flags: FUSEInitFlags([.asyncRead, .maxPages]).rawValue)
        let r = try #require(accepted(FUSEInitNegotiation.negotiate(kernel, config: Self.config)))
        #expect(r.minor == 38)
        #expect(r.reply.major == 7 && r.reply.minor == 38)
        #expect(r.agreed == [.asyncRead, .maxPages])
        #expect(r.reply.maxReadahead == 131072)
        #expect(r.reply.maxBackground == 64 && r.reply.congestionThreshold == 48 && r.reply.timeGranularity == 1)
    }

    @Test func kernel731KeepsItsMinor() throws {
        let r = try #require(accepted(FUSEInitNegotiation.negotiate(FUSEInitIn(major: 7, minor: 31, maxReadahead: 0, flags: 0), config: Self.config)))
        #expect(r.minor == 31 && r.reply.minor == 31)
    }

    @Test func newerKernelMinorIsCappedAtOurs() throws {
        let r = try #require(accepted(FUSEInitNegotiation.negotiate(FUSEInitIn(major: 7, minor: 44, maxReadahead: 0, flags: 0), config: Self.config)))
        #expect(r.minor == 42 && r.reply.minor == 42)
    }

    @Test func newerMajorGetsRetryWithOurVersion() {
        let result = FUSEInitNegotiation.negotiate(FUSEInitIn(major: 8, minor: 1, maxReadahead: 0, flags: 0), config: Self.config)
        guard case let .retryWithVersion(reply) = result else { Issue.record("\(result)"); return }
        #expect(reply.major == 7 && reply.minor == 42)
    }

    @Test(arguments: [(UInt32(6), UInt32(40)), (7, 26), (7, 0), (0, 0)])
    func oldKernelIsRefusedWithEPROTO(major: UInt32, minor: UInt32) {
        let result = FUSEInitNegotiation.negotiate(FUSEInitIn(major: major, minor: minor, maxReadahead: 0, flags: UInt64.max), config: Self.config)
        #expect(result == .refused(errno: 71))
    }

    @Test func minimumMinorIsAccepted() {
        let result = FUSEInitNegotiation.negotiate(FUSEInitIn(major: 7, minor: 27, maxReadahead: 0, flags: 0), config: Self.config)
        #expect(accepted(result)?.minor == 27)
    }

    @Test func agreedFlagsAreTheIntersection() throws {
        let offered: FUSEInitFlags = [.asyncRead, .posixLocks, .setxattrExt, .doReaddirplus]
        let r = try #require(accepted(FUSEInitNegotiation.negotiate(
            FUSEInitIn(major: 7, minor: 38, maxReadahead: 0, flags: offered.rawValue), config: Self.config)))
        #expect(r.agreed == [.asyncRead, .setxattrExt])
        #expect(r.reply.flags == r.agreed.rawValue)   // no INIT_EXT: the kernel did not offer it
    }

    @Test func highFlagsNeedInitExtAndInitExtIsEchoed() throws {
        let withExt = FUSEInitFlags([.initExt, .securityCtx, .asyncRead])
        let r = try #require(accepted(FUSEInitNegotiation.negotiate(
            FUSEInitIn(major: 7, minor: 38, maxReadahead: 0, flags: withExt.rawValue), config: Self.config)))
        #expect(r.agreed == [.asyncRead, .securityCtx])
        #expect(FUSEInitFlags(rawValue: r.reply.flags) == [.asyncRead, .securityCtx, .initExt])

        // A high bit without INIT_EXT cannot have come from flags2: ignore it.
        let noExt = FUSEInitFlags([.securityCtx, .asyncRead])
        let r2 = try #require(accepted(FUSEInitNegotiation.negotiate(
            FUSEInitIn(major: 7, minor: 38, maxReadahead: 0, flags: noExt.rawValue), config: Self.config)))
        #expect(r2.agreed == [.asyncRead])
        #expect(!FUSEInitFlags(rawValue: r2.reply.flags).contains(.initExt))
    }

    @Test func initExtFlags2RoundTripsThroughDecoderAndEncoder() throws {
        // Kernel sends INIT_EXT with SECURITY_CTX in flags2; our reply carries it back in flags2.
        let bytes = request(.`init`) { w in w.u32(7); w.u32(38); w.u32(0); w.u32(1 << 30 | 1); w.u32(1); w.zeros(44) }
        try withDecoded(bytes) { d in
            guard case let .initialize(kernel) = d.request else { return unexpected(d.request) }
            let r = try #require(accepted(FUSEInitNegotiation.negotiate(kernel, config: Self.config)))
            let out = body(r.reply)
            #expect(Array(out[12..<16]) == [1, 0, 0, 0x40])   // flags: ASYNC_READ | INIT_EXT
            #expect(Array(out[32..<36]) == [1, 0, 0, 0])      // flags2: SECURITY_CTX
        }
    }

    @Test func maxPagesIsComputedFromMaxWrite() throws {
        let kernel = FUSEInitIn(major: 7, minor: 38, maxReadahead: 0, flags: FUSEInitFlags.maxPages.rawValue)
        let cases: [(UInt32, UInt16, UInt32)] = [
            (1 << 20, 256, 1 << 20),
            (1 << 20 + 1, 257, 1 << 20 + 1),
            (4096, 1, 4096),
            (UInt32.max, 65535, 65535 * 4096),
        ]
        for (maxWrite, pages, effective) in cases {
            var config = Self.config
            config.maxWrite = maxWrite
            let r = try #require(accepted(FUSEInitNegotiation.negotiate(kernel, config: config)))
            #expect(r.reply.maxPages == pages, "maxWrite \(maxWrite)")
            #expect(r.reply.maxWrite == effective, "maxWrite \(maxWrite)")
        }
    }

    @Test func withoutMaxPagesMaxWriteIsCappedAt128KiB() throws {
        let kernel = FUSEInitIn(major: 7, minor: 38, maxReadahead: 0, flags: FUSEInitFlags.asyncRead.rawValue)
        let r = try #require(accepted(FUSEInitNegotiation.negotiate(kernel, config: Self.config)))
        #expect(r.reply.maxPages == 0)
        #expect(r.reply.maxWrite == 128 * 1024)
        var small = Self.config
        small.maxWrite = 65536
        let r2 = try #require(accepted(FUSEInitNegotiation.negotiate(kernel, config: small)))
        #expect(r2.reply.maxWrite == 65536)
    }

    @Test func maxReadaheadIsTheSmallerOfBoth() throws {
        let kernel = FUSEInitIn(major: 7, minor: 38, maxReadahead: 131072, flags: 0)
        var config = Self.config
        config.maxReadahead = 65536
        #expect(accepted(FUSEInitNegotiation.negotiate(kernel, config: config))?.reply.maxReadahead == 65536)
        config.maxReadahead = 1 << 30
        #expect(accepted(FUSEInitNegotiation.negotiate(kernel, config: config))?.reply.maxReadahead == 131072)
    }

    @Test func decodeOptionsFollowSetxattrExt() {
        #expect(FUSEDecodeOptions(agreed: [.setxattrExt, .asyncRead]).setxattrExtended)
        #expect(!FUSEDecodeOptions(agreed: [.asyncRead]).setxattrExtended)
    }

    @Test func flagBitsMatchFuseH() {
        #expect(FUSEInitFlags.asyncRead.rawValue == 1)
        #expect(FUSEInitFlags.maxPages.rawValue == 1 << 22)
        #expect(FUSEInitFlags.setxattrExt.rawValue == 1 << 29)
        #expect(FUSEInitFlags.initExt.rawValue == 1 << 30)
        #expect(FUSEInitFlags.securityCtx.rawValue == 1 << 32)
        #expect(FUSEInitFlags.hasInodeDax.rawValue == 1 << 33)
        #expect(FUSEInitFlags.createSuppGroup.rawValue == 1 << 34)
        #expect(FUSEInitFlags.hasExpireOnly.rawValue == 1 << 35)
        #expect(FUSEInitFlags.directIOAllowMmap.rawValue == 1 << 36)   // 7.39; the host's fuse.h may lack it
    }

    @Test func directIOAllowMmapTravelsInFlags2() throws {
        // A 6.12 kernel: INIT_EXT, and DIRECT_IO_ALLOW_MMAP as bit 4 of flags2.
        let bytes = request(.`init`) { w in w.u32(7); w.u32(41); w.u32(0); w.u32(1 << 30); w.u32(1 << 4); w.zeros(44) }
        try withDecoded(bytes) { d in
            guard case let .initialize(kernel) = d.request else { return unexpected(d.request) }
            let r = try #require(accepted(FUSEInitNegotiation.negotiate(kernel, config: FUSEInitConfig(wanted: [.directIOAllowMmap]))))
            #expect(r.agreed == [.directIOAllowMmap])
            let out = body(r.reply)
            #expect(Array(out[12..<16]) == [0, 0, 0, 0x40])   // flags: INIT_EXT
            #expect(Array(out[32..<36]) == [0x10, 0, 0, 0])   // flags2: DIRECT_IO_ALLOW_MMAP
        }
    }
}
