import FerryCore
import FerryFUSE
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite struct HostileInputTests {
    /// Random bytes behind valid-looking headers, for every opcode: each gets an error
    /// reply or is dropped; none crashes the server, and the server keeps answering.
    @Test func randomRequestsNeverCrashTheServer() throws {
        let server = try makeServer()
        let t = TestTransport(server)
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 { seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17; return seed }
        for _ in 0..<20_000 {
            let opcode = UInt32(next() % 60)
            let length = Int(next() % 200)
            let body = (0..<length).map { _ in UInt8(truncatingIfNeeded: next()) }
            var request = RequestBuilder.request(opcode, body: body, nodeID: next() % 4)
            if next() % 8 == 0 {   // sometimes lie about the length
                let claimed = UInt32(truncatingIfNeeded: next())
                withUnsafeBytes(of: claimed.littleEndian) { request.replaceSubrange(0..<4, with: $0) }
            }
            if opcode == FUSEOpcode.`init`.rawValue || opcode == FUSEOpcode.destroy.rawValue { continue }
            _ = t.send(request)
        }
        #expect(t.getattr(1).error == 0)
    }

    @Test func requestsShorterThanAHeaderAreDropped() throws {
        let t = TestTransport(try makeServer())
        for n in 0..<40 { #expect(t.send([UInt8](repeating: 0xFF, count: n)) == nil) }
    }

    @Test func truncatedArgumentsGetEINVAL() throws {
        let t = TestTransport(try makeServer())
        let r = t.send(RequestBuilder.request(FUSEOpcode.read.rawValue, body: [1, 2, 3]))!
        #expect(r.error == -22)
        #expect(r.unique == 7)
    }
}

@Suite struct SupplementaryGroupTests {
    /// MKDIR with a FUSE_EXT_GROUPS extension of `count` groups.
    func mkdirWithGroups(_ count: Int) -> [UInt8] {
        var b = RequestBuilder()
        // As the kernel lays it out: the extension record follows the name directly.
        b.u32(0o755); b.u32(0); b.name("d")
        let record = 8 + 4 + 4 * count
        let padded = (record + 7) & ~7
        b.u32(UInt32(padded)); b.u32(32); b.u32(UInt32(count))
        for i in 0..<count { b.u32(UInt32(1000 + i)) }
        b.zeros(padded - record)
        var request = b.request(.mkdir, uid: 1000, gid: 1000)
        request[36] = UInt8(truncatingIfNeeded: padded / 8); request[37] = UInt8(truncatingIfNeeded: (padded / 8) >> 8)
        return request
    }

    @Test func oneGroupReachesTheDriver() throws {
        let driver = MemoryDriver()
        let t = TestTransport(try makeServer(driver))
        #expect(t.send(mkdirWithGroups(1))?.error == 0)
        #expect(driver.calls.count == 1)
    }

    @Test func anAbsurdGroupListIsRefusedBeforeTheDriver() throws {
        let driver = MemoryDriver()
        let t = TestTransport(try makeServer(driver))
        #expect(t.send(mkdirWithGroups(5000))?.error == -EINVAL)
        #expect(driver.calls.isEmpty)
    }
}
