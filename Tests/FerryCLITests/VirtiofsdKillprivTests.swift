import FerryCore
import FerryFUSE
import FerryPOSIX
import Foundation
import Logging
import Testing
@testable import FerryCLI
@testable import FerryDaemon

/// What `ferry virtiofsd` says about FUSE_HANDLE_KILLPRIV_V2 is what its server negotiates:
/// offered by default, as virtiofsd does, and not with `--no-killpriv-v2`.
@Suite struct VirtiofsdKillprivTests {
    @Test func killprivV2IsNegotiatedExactlyWhenTheCommandLineAsksForIt() throws {
        let source = NSTemporaryDirectory() + "ferry-killpriv-\(getpid())"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: source) }
        let cases: [(String, Bool)] = [
            ("", true), ("--killpriv-v2", true), ("-o killpriv_v2", true),
            ("--no-killpriv-v2", false), ("-o no_killpriv_v2", false),
        ]
        for (options, expected) in cases {
            let line = "--socket-path=/run/vfs.sock --shared-dir=\(source) \(options)"
            let invocation = try VirtiofsdPlan.parse(line.split(separator: " ").map(String.init))
            guard case .serve(let plan) = invocation else {
                Issue.record("\(line): expected a plan, got \(invocation)")
                continue
            }
            let server = try FUSEServer(driver: POSIXDriver(root: source, options: plan.posixOptions),
                                        policy: plan.policy, logger: Logger(label: "killpriv"))
            let agreed = try #require(initialize(server), "\(line)")
            #expect(agreed.contains(.handleKillprivV2) == expected, "\(line)")
        }
    }

    /// Sends the INIT a 7.38 kernel offering everything sends; the flags the reply agrees to.
    private func initialize(_ server: some FUSERequestHandler) -> FUSEInitFlags? {
        var body: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { body.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { body.append(contentsOf: $0) } }
        u32(40 + 64); u32(FUSEOpcode.`init`.rawValue); u64(1); u64(0); u32(0); u32(0); u32(1); u32(0)
        u32(7); u32(38); u32(128 * 1024); u32(0xFFFF_FFFF); u32(0x3)
        body.append(contentsOf: [UInt8](repeating: 0, count: 44))
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { scratch.deallocate() }
        var vector = iovec(iov_base: scratch.baseAddress! + 16, iov_len: scratch.count - 16)
        return withUnsafeMutablePointer(to: &vector) { vectors -> FUSEInitFlags? in
            var area = ReplyArea(scratch: scratch, readVectors: IOVectors(base: vectors, count: 1))
            guard case .inline(let length) = body.withUnsafeBytes({ server.handle(request: $0, reply: &area) }),
                  length > 16, scratch.load(fromByteOffset: 4, as: Int32.self) == 0,
                  let out = FUSEClientDecoder.initOut(UnsafeRawBufferPointer(rebasing: scratch[16..<length])) else { return nil }
            return FUSEInitFlags(rawValue: out.flags)
        }
    }
}
