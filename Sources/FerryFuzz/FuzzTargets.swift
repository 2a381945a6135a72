import FerryCore
import FerryFUSE
import FerryPOSIX
@_spi(Fuzzing) import FerryVhostUser
import Foundation
import Logging

/// What the fuzzers drive: each target takes arbitrary bytes and must neither crash nor
/// touch memory it does not own (the fuzz builds run with AddressSanitizer). The same
/// functions replay the seed corpora in the unit tests (FuzzCorpusTests), so every input
/// that once found a bug stays a test.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// FerryFUSE's request decoder, with and without the extended SETXATTR layout.
    case decoder
    /// The server core over a throwaway POSIX export: bytes as one request of a live session.
    case server
    /// The descriptor-chain walker over fake guest memory.
    case virtqueue
    /// The vhost-user control message handler.
    case vhostUser = "vhost-user"

    public func run(_ input: UnsafeRawBufferPointer) {
        switch self {
        case .decoder: FuzzDecoder.run(input)
        case .server: FuzzServer.shared.run(input)
        case .virtqueue: _ = VhostUserFuzzing.walkChains(input)
        case .vhostUser: _ = VhostUserFuzzing.handleMessages(input, handler: RefusingHandler.shared)
        }
    }
}

enum FuzzDecoder {
    static func run(_ input: UnsafeRawBufferPointer) {
        for extended in [false, true] {
            let options = FUSEDecodeOptions(setxattrExtended: extended)
            _ = try? FUSEDecoder.decode(input, options: options)
            // A WRITE whose data stayed in guest buffers: the header part alone, with a length.
            if input.count >= 80 { _ = try? FUSEDecoder.decode(UnsafeRawBufferPointer(rebasing: input[0..<80]), externalPayloadLength: input.count - 80, options: options) }
        }
    }
}

/// One server over a temporary directory for the whole fuzzing run, INIT done once.
/// @unchecked Sendable: the scratch buffers are used only with `lock` held, one input at a time.
final class FuzzServer: @unchecked Sendable {
    static let shared = FuzzServer()
    let server: FUSEServer<POSIXDriver>
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 << 20, alignment: 4096)
    let data = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
    let vector = UnsafeMutablePointer<iovec>.allocate(capacity: 1)
    let lock = NSLock()

    private init() {
        var template = Array("/tmp/ferry-fuzz-XXXXXX".utf8CString)
        let root = String(cString: mkdtemp(&template)!)
        _ = FileManager.default.createFile(atPath: root + "/file", contents: Data("fuzz".utf8))
        try? FileManager.default.createDirectory(atPath: root + "/dir", withIntermediateDirectories: false)
        var logger = Logger(label: "ferry.fuzz")
        logger.logLevel = .critical
        // A quota, as a tenant's export would have: its code is fuzzed too, and a FALLOCATE of
        // gigabytes is refused rather than filling the host's disk (a run without one did).
        var policy = ExportPolicy(xattr: true, maxNodes: 4096, maxOpenHandles: 1024)
        policy.quota = QuotaLimits(bytes: 256 << 20, inodes: 100_000)
        server = try! FUSEServer(driver: POSIXDriver(root: root), policy: policy, logger: logger)
        var initRequest = [UInt8](repeating: 0, count: FUSEInHeader.size + FUSEInitIn.size)
        initRequest.withUnsafeMutableBytes { b in
            FUSEInHeader(length: UInt32(b.count), opcode: FUSEOpcode.`init`.rawValue, unique: 1, nodeID: 0, uid: 0, gid: 0, pid: 0)
                .encode(to: b.baseAddress!)
            FUSEInitIn(major: 7, minor: 38, maxReadahead: 0, flags: 0xFFFF_FFFF).encode(to: b.baseAddress! + FUSEInHeader.size)
        }
        _ = initRequest.withUnsafeBytes { handle($0) }
    }

    @discardableResult
    func handle(_ request: UnsafeRawBufferPointer) -> ReplyDisposition {
        vector.pointee = iovec(iov_base: scratch.baseAddress! + 16, iov_len: scratch.count - 16)
        var area = ReplyArea(scratch: scratch, readVectors: IOVectors(base: vector, count: 1))
        return server.handle(request: request, reply: &area)
    }

    func run(_ input: UnsafeRawBufferPointer) {
        lock.lock(); defer { lock.unlock() }
        // The first byte picks the form: the whole input as one request, or a WRITE's header
        // with its data left in separate buffers.
        guard let form = input.first else { return }
        let rest = UnsafeRawBufferPointer(rebasing: input.dropFirst())
        if form & 1 == 0 || rest.count < 80 {
            handle(rest)
            return
        }
        let payloadLength = min(rest.count - 80, data.count)
        data.copyMemory(from: UnsafeRawBufferPointer(rebasing: rest[80..<(80 + payloadLength)]))
        var payload = iovec(iov_base: data.baseAddress, iov_len: payloadLength)
        vector.pointee = iovec(iov_base: scratch.baseAddress! + 16, iov_len: scratch.count - 16)
        var area = ReplyArea(scratch: scratch, readVectors: IOVectors(base: vector, count: 1))
        _ = withUnsafeMutablePointer(to: &payload) { p in
            server.handle(request: UnsafeRawBufferPointer(rebasing: rest[0..<80]), payload: IOVectors(base: p, count: 1), reply: &area)
        }
    }
}

/// The FUSE side of the vhost-user target: nothing reaches it without guest memory, but
/// the device needs one.
final class RefusingHandler: FUSERequestHandler, Sendable {
    static let shared = RefusingHandler()
    func handle(request: UnsafeRawBufferPointer, reply: inout ReplyArea) -> ReplyDisposition { .none }
    func handle(request: UnsafeRawBufferPointer, payload: IOVectors, reply: inout ReplyArea) -> ReplyDisposition { .none }
    func connectionLost() {}
}

/// What the corpus tests check about their seeds.
public enum FuzzProbe {
    public static func chainsWalked(_ input: UnsafeRawBufferPointer) -> Int { VhostUserFuzzing.walkChains(input) }
    public static func messagesHandled(_ input: UnsafeRawBufferPointer) -> Int {
        VhostUserFuzzing.handleMessages(input, handler: RefusingHandler.shared)
    }
    public static func decodes(_ input: UnsafeRawBufferPointer) -> Bool {
        (try? FUSEDecoder.decode(input, options: FUSEDecodeOptions())) != nil
    }
}
