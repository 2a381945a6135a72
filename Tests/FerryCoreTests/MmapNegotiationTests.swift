import FerryCore
import FerryFUSE
import Testing

/// FUSE_DIRECT_IO_ALLOW_MMAP: with it, files opened in direct I/O mode (cache never and
/// metadata) can be mapped MAP_SHARED in the guest; without it the kernel says ENODEV.
@Suite struct MmapNegotiationTests {
    /// What a Linux 6.12 kernel offers: flags2 (INIT_EXT) carries DIRECT_IO_ALLOW_MMAP, bit 36.
    static let linux612Offer: UInt64 = 0xFFFF_FFFF | (0x1F << 32)
    /// What a Linux 6.1 kernel offers: nothing above bit 34.
    static let linux61Offer: UInt64 = 0xFFFF_FFFF | (0x7 << 32)
    static let allowMmapInFlags2: UInt32 = 1 << 4

    func flags2(_ policy: ExportPolicy, offer: UInt64) throws -> UInt32 {
        let t = TestTransport(try makeServer(policy: policy), initialize: false)
        let reply = try #require(t.send(RequestBuilder.initRequest(flags: offer)))
        #expect(reply.error == 0)
        return reply.u32(at: 32)
    }

    @Test(arguments: [CachePolicy.never, .metadata])
    func directIOCacheModesAllowSharedMmapByDefault(cache: CachePolicy) throws {
        #expect(try flags2(ExportPolicy(cache: cache), offer: Self.linux612Offer) & Self.allowMmapInFlags2 != 0)
    }

    @Test func turnedOffItIsNotNegotiated() throws {
        #expect(try flags2(ExportPolicy(cache: .never, allowMmap: false), offer: Self.linux612Offer) & Self.allowMmapInFlags2 == 0)
    }

    @Test func aKernelThatDoesNotOfferItDoesNotGetIt() throws {
        #expect(try flags2(ExportPolicy(cache: .never), offer: Self.linux61Offer) & Self.allowMmapInFlags2 == 0)
    }
}
