@testable import FerryNFS
import FerryCore
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A large reply's data received straight into the call's buffers (`DirectData`), against a
/// server played by the other end of a socketpair: the bytes land where they belong however
/// the stream is cut, a reply that does not fit is read the usual way, and a call abandoned
/// halfway never has its buffers written again.
@Suite struct DirectReadTests {
    typealias Server = NFS4WireTests.Server

    /// Two iovecs of `sizes` bytes, filled with 0xEE, and the IOVectors over them.
    final class Buffers {
        let storage: [UnsafeMutableRawBufferPointer]
        let vectors: UnsafeMutablePointer<iovec>
        init(_ sizes: [Int]) {
            storage = sizes.map { size in
                let b = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
                b.initializeMemory(as: UInt8.self, repeating: 0xEE)
                return b
            }
            vectors = .allocate(capacity: sizes.count)
            for (i, b) in storage.enumerated() { vectors[i] = iovec(iov_base: b.baseAddress, iov_len: b.count) }
        }
        deinit { storage.forEach { $0.deallocate() }; vectors.deallocate() }
        var io: IOVectors { IOVectors(base: vectors, count: storage.count) }
        var bytes: [UInt8] { storage.flatMap { Array($0) } }
    }

    /// The reply layout these tests use: xid, accepted SUCCESS header, then a length word and
    /// that many bytes of data (padded), then a trailer word.
    static func reply(xid: UInt32, data: [UInt8], claimed: UInt32? = nil) -> [UInt8] {
        var w = XDRWriter()
        w.u32(0)
        w.u32(xid); w.u32(1); w.u32(0); w.u32(0); w.u32(0); w.u32(0)
        w.u32(claimed ?? UInt32(data.count))
        w.fixed(data)
        w.fixed([UInt8](repeating: 0, count: (4 - data.count % 4) % 4))
        w.u32(0x7A7A_7A7A)
        w.patch(UInt32(w.count - 4) | 0x8000_0000, at: 0)
        return w.bytes
    }

    static func direct(_ buffers: Buffers, start: Int = 0, capacity: Int) -> DirectData {
        let d = DirectData(buffers: buffers.io, start: start, capacity: capacity)
        d.locate = { prefix in
            var r = XDRReader(prefix)
            guard r.u32() != nil, RPCSocket.acceptedResults(&r) != nil, let length = r.u32() else { return nil }
            return (r.offset, Int(length))
        }
        return d
    }

    static func pattern(_ count: Int, seed: UInt8) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7) ^ seed } }

    @Test(arguments: [1, 333, 4096, 70_000])
    func theDataLandsInTheBuffersHoweverTheStreamIsCut(piece: Int) throws {
        let server = Server(replyLimit: 1 << 20)
        var header: UInt32?, trailerSeen = false
        let (xid, call) = server.call { r in
            header = r.u32()
            return true
        }
        let buffers = Buffers([10_001, 90_000])
        let d = Self.direct(buffers, start: 5, capacity: 100_000 - 5)
        call.direct = d
        let data = Self.pattern(65_537, seed: 0x5A)
        let bytes = Self.reply(xid: xid, data: data)
        var at = 0
        while at < bytes.count {
            let end = min(bytes.count, at + piece)
            try server.send(Array(bytes[at..<end]))
            at = end
        }
        trailerSeen = call.finished
        #expect(trailerSeen && d.placed == data.count)
        #expect(header == UInt32(data.count), "the call still reads its headers")
        let out = buffers.bytes
        let landed = Array(out[5..<5 + data.count]) == data
        #expect(landed, "the data is not where it belongs")
        #expect(out[0..<5].allSatisfy { $0 == 0xEE } && out[(5 + data.count)...].allSatisfy { $0 == 0xEE },
                "nothing written outside the data's place")
    }

    @Test func dataLargerThanTheCallsRoomIsReadTheUsualWay() throws {
        let server = Server(replyLimit: 1 << 20)
        var inline: [UInt8] = []
        let (xid, call) = server.call { r in
            _ = r.u32()
            if let bytes = r.fixed(40_000) { inline = Array(bytes) }
            return true
        }
        let buffers = Buffers([20_000])
        let d = Self.direct(buffers, capacity: 20_000)
        call.direct = d
        let data = Self.pattern(40_000, seed: 1)
        try server.send(Self.reply(xid: xid, data: data))
        #expect(call.finished && d.placed == nil)
        let same = inline == data
        #expect(same, "the inline data differs")
        #expect(buffers.bytes.allSatisfy { $0 == 0xEE })
    }

    @Test func aLengthPastTheRecordIsNotPlaced() throws {
        let server = Server(replyLimit: 1 << 20)
        let (xid, call) = server.call()
        let buffers = Buffers([200_000])
        let d = Self.direct(buffers, capacity: 200_000)
        call.direct = d
        try server.send(Self.reply(xid: xid, data: Self.pattern(30_000, seed: 2), claimed: 150_000))
        #expect(call.finished && d.placed == nil)
        #expect(buffers.bytes.allSatisfy { $0 == 0xEE })
    }

    @Test func anAbandonedCallsBuffersAreNotWrittenAgainAndTheStreamStaysInStep() throws {
        let server = Server(replyLimit: 1 << 20)
        var ran = false
        let (xid, call) = server.call { _ in ran = true; return true }
        var nextHeader: UInt32?
        let (xid2, next) = server.call { r in nextHeader = r.u32(); return true }
        let buffers = Buffers([64 << 10])
        let d = Self.direct(buffers, capacity: 64 << 10)
        call.direct = d
        let data = Self.pattern(60_000, seed: 3)
        let bytes = Self.reply(xid: xid, data: data)
        try server.send(Array(bytes[0..<20_000]))
        #expect(d.placed == data.count)
        let before = buffers.bytes
        call.abandoned = true
        try server.send(Array(bytes[20_000...]) + Self.reply(xid: xid2, data: [9, 9, 9, 9]))
        let unchanged = buffers.bytes == before
        #expect(unchanged, "the abandoned call's buffers were written after it gave up")
        #expect(!ran)
        #expect(next.finished && nextHeader == 4)
    }
}
