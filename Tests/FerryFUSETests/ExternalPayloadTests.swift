import FerryFUSE
import Testing

/// WRITE data that stays in a guest's buffers: the decoder sees only header + write_in.
@Suite struct ExternalPayloadTests {
    func writeHead(size: UInt32, claimedTotal: UInt32) -> [UInt8] {
        var b: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        u32(claimedTotal); u32(FUSEOpcode.write.rawValue); u64(9); u64(2); u32(0); u32(0); u32(0); u32(0)
        u64(77); u64(4096); u32(size); u32(0); u64(0); u32(0); u32(0)
        return b
    }

    @Test func aWriteWithExternalDataDecodesWithAnEmptyDataView() throws {
        let head = writeHead(size: 65536, claimedTotal: 80 + 65536)
        let decoded = try head.withUnsafeBytes { try FUSEDecoder.decode($0, externalPayloadLength: 65536, options: .init()) }
        guard case .write(let w, let data) = decoded.request else { Issue.record("not a write"); return }
        #expect(w.fh == 77 && w.offset == 4096 && w.size == 65536)
        #expect(data.isEmpty)
    }

    @Test func externalLengthsMustAgreeWithTheHeaderAndTheWrite() {
        let lying = writeHead(size: 65536, claimedTotal: 80 + 65536)
        #expect(throws: FUSEDecodeError.self) {
            try lying.withUnsafeBytes { try FUSEDecoder.decode($0, externalPayloadLength: 4096, options: .init()) }
        }
        let sizeMismatch = writeHead(size: 100, claimedTotal: 80 + 4096)
        #expect(throws: FUSEDecodeError.inconsistentCount(opcode: FUSEOpcode.write.rawValue)) {
            try sizeMismatch.withUnsafeBytes { try FUSEDecoder.decode($0, externalPayloadLength: 4096, options: .init()) }
        }
    }

    @Test func onlyWritesMayHaveExternalData() {
        var head = writeHead(size: 4096, claimedTotal: 80 + 4096)
        head[4] = UInt8(FUSEOpcode.read.rawValue)
        #expect(throws: FUSEDecodeError.self) {
            try head.withUnsafeBytes { try FUSEDecoder.decode($0, externalPayloadLength: 4096, options: .init()) }
        }
    }
}
