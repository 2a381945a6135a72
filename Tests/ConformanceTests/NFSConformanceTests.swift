import Foundation
import FerryTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// One `ferry mount` of the shared ganesha per NFS version, for all checks of that version.
enum NFSSharedMount {
    private static let lock = NSLock()
    private static var mounts: [Int: Result<FerryMount, Error>] = [:]

    static func get(version: Int) throws -> FerryMount {
        lock.lock()
        defer { lock.unlock() }
        if let mount = mounts[version] { return try mount.get() }
        let result = Result {
            let server = try NFSTestServer.shared()
            let export = try server.makeExport("conformance-v\(version)")
            return try FerryMount(source: server.url(export, version: version), extraArguments: ["--xattr"])
        }
        if mounts.isEmpty { atexit { NFSSharedMount.stopAtExit() } }
        mounts[version] = result
        return try result.get()
    }

    private static func stopAtExit() {
        for case .success(let mount) in mounts.values { mount.stop() }
    }
}

let nfsConformanceCases: [(Int, String)] = [3, 4].flatMap { v in conformanceCheckNames.map { (v, $0) } }

@Suite("POSIX conformance through ferry mount nfs://", .serialized,
       .requires(.root, .devFUSE, .ganesha))
struct NFSConformanceThroughFerryMount {
    @Test("Check passes (or is reported unsupported) on an NFS export", .timeLimit(.minutes(10)),
          arguments: nfsConformanceCases)
    func check(_ version: Int, _ name: String) throws {
        try #require(name != missingProgramSentinel, "ferry-conformance is not built")
        let server = try NFSTestServer.shared()
        try server.shared {
            let mount = try NFSSharedMount.get(version: version)
            let result = try runConformance(in: mount.mountpoint, ["--check", name])
            if let unsupported = NFSTestServer.unsupportedChecks[version]?[name] {
                let failedAsExpected = !result.succeeded || result.output.hasPrefix("skip ")
                #expect(failedAsExpected && result.output.contains(unsupported.expect),
                        "\(name) over NFSv\(version) was expected to fail with \(unsupported.expect) (\(unsupported.reason)):\n\(result.output)")
                print("unsupported over NFSv\(version): \(name): \(unsupported.reason)")
            } else {
                #expect(result.succeeded, "\(name) through ferry (source \(mount.source)):\n\(result.output)\nferry's log:\n\(mount.log.suffix(2000))")
            }
        }
    }
}
