import FerryCore
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite struct IOVectorsTests {
    @Test func copyInAndOutSpanSeveralBuffersFromAnOffset() {
        var a = [UInt8](repeating: 0, count: 3), b = [UInt8](repeating: 0, count: 5), c = [UInt8](repeating: 0, count: 4)
        a.withUnsafeMutableBytes { pa in b.withUnsafeMutableBytes { pb in c.withUnsafeMutableBytes { pc in
            var vectors = [iovec(iov_base: pa.baseAddress, iov_len: 3), iovec(iov_base: pb.baseAddress, iov_len: 5),
                           iovec(iov_base: pc.baseAddress, iov_len: 4)]
            vectors.withUnsafeMutableBufferPointer { v in
                let io = IOVectors(base: v.baseAddress!, count: 3)
                #expect(io.totalLength == 12)
                let source: [UInt8] = Array(1...20)
                #expect(source.withUnsafeBytes { io.copyIn($0, at: 2) } == 10)      // 12 - 2 bytes of room
                var back = [UInt8](repeating: 0, count: 6)
                #expect(back.withUnsafeMutableBytes { io.copyOut(into: $0, from: 1) } == 6)
                #expect(back == [0, 1, 2, 3, 4, 5])
            }
        } } }
        #expect(a == [0, 0, 1] && b == [2, 3, 4, 5, 6] && c == [7, 8, 9, 10])
    }
}
