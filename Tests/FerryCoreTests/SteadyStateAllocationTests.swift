import CMallocCounter
import FerryCore
import FerryFUSE
import FerryPOSIX
import Foundation
import Logging
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The request path allocates nothing once warm: the real POSIX driver over a real
/// directory, driven the way the /dev/fuse transport drives it (its own buffers, no
/// per-request copies), with every heap allocation on this thread counted.
@Suite(.serialized) struct SteadyStateAllocationTests {
    final class Fixture {
        let directory: String
        let server: FUSEServer<POSIXDriver>
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 << 20, alignment: 4096)
        let vector = UnsafeMutablePointer<iovec>.allocate(capacity: 1)
        var requests: [UnsafeMutableRawBufferPointer] = []

        init() throws {
            var template = Array("/tmp/ferry-alloc-XXXXXX".utf8CString)
            directory = String(cString: mkdtemp(&template)!)
            let fd = open(directory + "/file", O_CREAT | O_WRONLY, 0o644)
            let data = [UInt8](repeating: 0x5A, count: 256 * 1024)
            _ = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
            for i in 0..<20 { close(open(directory + "/entry\(i)", O_CREAT | O_WRONLY, 0o644)) }
            server = try FUSEServer(driver: POSIXDriver(root: directory), policy: ExportPolicy(), logger: Logger(label: "alloc"))
            _ = send(RequestBuilder.initRequest())
        }

        deinit {
            scratch.deallocate(); vector.deallocate()
            for r in requests { r.deallocate() }
            _ = system("rm -rf '\(directory)'")
        }

        /// Copies a request into memory the transport owns, as /dev/fuse would deliver it.
        func prepare(_ bytes: [UInt8]) -> UnsafeRawBufferPointer {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 8)
            buffer.copyBytes(from: bytes)
            requests.append(buffer)
            return UnsafeRawBufferPointer(buffer)
        }

        @discardableResult
        func send(_ request: UnsafeRawBufferPointer) -> ReplyDisposition {
            vector.pointee = iovec(iov_base: scratch.baseAddress! + 16, iov_len: scratch.count - 16)
            var area = ReplyArea(scratch: scratch, readVectors: IOVectors(base: vector, count: 1))
            return server.handle(request: request, reply: &area)
        }

        func send(_ bytes: [UInt8]) -> ReplyDisposition { send(prepare(bytes)) }

        var replyError: Int32 { scratch.loadUnaligned(fromByteOffset: 4, as: Int32.self) }
        func replyU64(_ offset: Int) -> UInt64 { scratch.loadUnaligned(fromByteOffset: 16 + offset, as: UInt64.self) }
    }

    @Test func getattrLookupReadWriteAndReaddirAllocateNothingWhenWarm() throws {
        let f = try Fixture()
        var lookup = RequestBuilder(); lookup.name("file")
        f.send(lookup.request(.lookup))
        let node = f.replyU64(0)
        var open = RequestBuilder(); open.u32(UInt32(O_RDWR)); open.u32(0)
        f.send(open.request(.open, nodeID: node))
        let fh = f.replyU64(0)
        var opendir = RequestBuilder(); opendir.u32(0); opendir.u32(0)
        f.send(opendir.request(.opendir))
        let dh = f.replyU64(0)

        var getattr = RequestBuilder(); getattr.u32(0); getattr.u32(0); getattr.u64(0)
        var read = RequestBuilder(); read.u64(fh); read.u64(4096); read.u32(4096); read.u32(0); read.u64(0); read.u32(0); read.u32(0)
        var bigRead = RequestBuilder(); bigRead.u64(fh); bigRead.u64(0); bigRead.u32(128 * 1024); bigRead.u32(0); bigRead.u64(0); bigRead.u32(0); bigRead.u32(0)
        var write = RequestBuilder(); write.u64(fh); write.u64(8192); write.u32(4096); write.u32(0); write.u64(0); write.u32(0); write.u32(0)
        write.bytes([UInt8](repeating: 0xA5, count: 4096))
        var readdir = RequestBuilder(); readdir.u64(dh); readdir.u64(0); readdir.u32(4096); readdir.u32(0); readdir.u64(0); readdir.u32(0); readdir.u32(0)
        var forget = RequestBuilder(); forget.u64(1)

        let steady: [(String, UnsafeRawBufferPointer)] = [
            ("GETATTR root", f.prepare(getattr.request(.getattr))),
            ("GETATTR file", f.prepare(getattr.request(.getattr, nodeID: node))),
            ("LOOKUP known", f.prepare(lookup.request(.lookup))),
            ("FORGET", f.prepare(forget.request(.forget, nodeID: node))),
            ("READ 4 KiB", f.prepare(read.request(.read, nodeID: node))),
            ("READ 128 KiB", f.prepare(bigRead.request(.read, nodeID: node))),
            ("WRITE 4 KiB", f.prepare(write.request(.write, nodeID: node))),
            ("READDIR", f.prepare(readdir.request(.readdir))),
        ]
        // Warm up: first uses may set up per-thread state once.
        for _ in 0..<3 { for (_, r) in steady { f.send(r) } }

        // WRITE whose data stays in the caller's buffers (as from a guest's descriptors).
        var head = RequestBuilder(); head.u64(fh); head.u64(16384); head.u32(8192); head.u32(0); head.u64(0); head.u32(0); head.u32(0)
        var headBytes = head.request(.write, nodeID: node)
        let total = UInt32(headBytes.count + 8192)
        withUnsafeBytes(of: total.littleEndian) { headBytes.replaceSubrange(0..<4, with: $0) }
        let writeHead = f.prepare(headBytes)
        let guestData = UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: 4096)
        defer { guestData.deallocate() }
        for i in 0..<8192 { guestData[i] = UInt8(truncatingIfNeeded: i * 7) }
        let payloadVectors = UnsafeMutablePointer<iovec>.allocate(capacity: 2)
        defer { payloadVectors.deallocate() }
        payloadVectors[0] = iovec(iov_base: guestData.baseAddress, iov_len: 3000)          // split like guest pages
        payloadVectors[1] = iovec(iov_base: guestData.baseAddress! + 3000, iov_len: 5192)
        func sendPayloadWrite() -> ReplyDisposition {
            f.vector.pointee = iovec(iov_base: f.scratch.baseAddress! + 16, iov_len: f.scratch.count - 16)
            var area = ReplyArea(scratch: f.scratch, readVectors: IOVectors(base: f.vector, count: 1))
            return f.server.handle(request: writeHead, payload: IOVectors(base: payloadVectors, count: 2), reply: &area)
        }
        _ = sendPayloadWrite()
        ferry_malloc_counting_begin()
        for _ in 0..<200 { _ = sendPayloadWrite() }
        let payloadAllocations = ferry_malloc_counting_end()
        #expect(payloadAllocations == 0, "WRITE from caller buffers allocated \(payloadAllocations) times")
        #expect(f.replyError == 0 && f.scratch.loadUnaligned(fromByteOffset: 16, as: UInt32.self) == 8192)
        let onDisk = try Data(contentsOf: URL(fileURLWithPath: f.directory + "/file"))[16384..<(16384 + 8192)]
        #expect(Array(onDisk) == Array(guestData))

        for (name, request) in steady {
            ferry_malloc_counting_begin()
            for _ in 0..<200 { f.send(request) }
            let allocations = ferry_malloc_counting_end()
            #expect(allocations == 0, "\(name) allocated \(allocations) times in 200 requests")
            if name != "FORGET" { #expect(f.replyError == 0, "\(name) failed: \(f.replyError)") }
        }
    }

    /// The counter itself must see allocations, or the test above proves nothing.
    @Test func theCounterSeesAllocations() {
        ferry_malloc_counting_begin()
        let p = malloc(64)
        let array = [Int](repeating: 1, count: 1000)
        let count = ferry_malloc_counting_end()
        free(p)
        #expect(count >= 2, "saw \(count)")
        #expect(array.count == 1000)
    }
}
