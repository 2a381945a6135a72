import FerryCore
import FerryFUSE
import Testing

@Suite struct HostileInputTests {
    /// Random bytes behind valid-looking headers, for every opcode: each gets an error
    /// reply or is dropped; none crashes the server, and the server keeps answering.
    @Test func randomRequestsNeverCrashTheServer() throws {
        let server = try makeServer()
        let t = TestTransport(server)
        var rng = SystemRandomNumberGenerator()
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 { seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17; return seed }
        _ = rng
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
