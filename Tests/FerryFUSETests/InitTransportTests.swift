import FerryFUSE
import Testing

/// A transport's part in INIT: reading FUSE_OVER_IO_URING from the kernel's offer and adding
/// it to the reply the core encoded, in golden bytes.
@Suite struct InitTransportTests {
    /// INIT from a 7.45 kernel offering INIT_EXT | ASYNC_READ and, in flags2, `flags2`.
    func initRequest(major: UInt32 = 7, flags: UInt32 = 1 << 30 | 1, flags2: UInt32) -> [UInt8] {
        request(.`init`) { w in w.u32(major); w.u32(45); w.u32(0); w.u32(flags); w.u32(flags2); w.zeros(44) }
    }

    /// The core's reply for 7.42 with INIT_EXT | ASYNC_READ and flags2 = SECURITY_CTX.
    func reply(error: Int32 = 0) -> [UInt8] {
        var out = FUSEInitOut()
        out.major = 7; out.minor = 42; out.flags = (1 << 30 | 1) | (1 << 32)
        var bytes = [UInt8](repeating: 0xEE, count: 16 + FUSEInitOut.size + 8)
        let length = bytes.withUnsafeMutableBytes { FUSEReply.encode(out, unique: 9, into: $0) }
        #expect(length == 80)
        if error != 0 { bytes.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(bitPattern: -error).littleEndian, toByteOffset: 4, as: UInt32.self) } }
        return bytes
    }

    @Test func overIOUringIsBit9OfFlags2() {
        #expect(FUSEInitFlags.overIOUring.rawValue == 1 << 41)
        #expect(FUSEInitNegotiation.serverMinor == 42)
    }

    @Test func theOfferIsReadFromFlags2UnderInitExt() {
        let offered = initRequest(flags2: 1 << 9 | 1).withUnsafeBytes { FUSEInitTransport.offered(request: $0) }
        #expect(offered == [.asyncRead, .initExt, .securityCtx, .overIOUring])
    }

    @Test func flags2WithoutInitExtIsNoOffer() {
        let offered = initRequest(flags: 1, flags2: 1 << 9).withUnsafeBytes { FUSEInitTransport.offered(request: $0) }
        #expect(offered == [.asyncRead])
    }

    @Test func anotherMajorOrATruncatedInitIsNoOffer() {
        #expect(initRequest(major: 8, flags2: 1 << 9).withUnsafeBytes { FUSEInitTransport.offered(request: $0) } == nil)
        #expect(Array(initRequest(flags2: 1 << 9).prefix(50)).withUnsafeBytes { FUSEInitTransport.offered(request: $0) } == nil)
        #expect(request(FUSEOpcode.getattr.rawValue, args: [UInt8](repeating: 0, count: 64)).withUnsafeBytes { FUSEInitTransport.offered(request: $0) } == nil)
    }

    @Test func theFlagIsAddedToFlags2OfTheReply() {
        var bytes = reply()
        let added = bytes.withUnsafeMutableBytes { FUSEInitTransport.add(.overIOUring, toReply: $0, length: 80) }
        #expect(added)
        #expect(Array(bytes[16 + 12..<16 + 16]) == [1, 0, 0, 0x40])        // flags untouched
        #expect(Array(bytes[16 + 32..<16 + 36]) == [1, 0x02, 0, 0])        // SECURITY_CTX | OVER_IO_URING
        #expect(Array(bytes[80...]) == [UInt8](repeating: 0xEE, count: 8))  // nothing past the reply
    }

    @Test func lockFlagsTheTransportCannotCarryAreTakenOutOfTheReply() {
        var out = FUSEInitOut()
        out.major = 7; out.minor = 42; out.flags = (1 << 30 | 1 << 10 | 1 << 1 | 1) | (1 << 32)
        var bytes = [UInt8](repeating: 0xEE, count: 16 + FUSEInitOut.size + 8)
        _ = bytes.withUnsafeMutableBytes { FUSEReply.encode(out, unique: 9, into: $0) }
        let removed = bytes.withUnsafeMutableBytes { FUSEInitTransport.remove([.posixLocks, .flockLocks], fromReply: $0, length: 80) }
        #expect(removed)
        #expect(Array(bytes[16 + 12..<16 + 16]) == [1, 0, 0, 0x40])        // ASYNC_READ | INIT_EXT left
        #expect(Array(bytes[16 + 32..<16 + 36]) == [1, 0, 0, 0])           // flags2 untouched
        var failed = reply(error: 71)
        let before = failed
        #expect(!failed.withUnsafeMutableBytes { FUSEInitTransport.remove([.posixLocks], fromReply: $0, length: 80) })
        #expect(failed == before)
    }

    @Test func anErrorReplyIsLeftAlone() {
        var bytes = reply(error: 71)
        let before = bytes
        #expect(!bytes.withUnsafeMutableBytes { FUSEInitTransport.add(.overIOUring, toReply: $0, length: 80) })
        #expect(bytes == before)
        var short = reply()
        #expect(!short.withUnsafeMutableBytes { FUSEInitTransport.add(.overIOUring, toReply: $0, length: 16) })
    }
}
