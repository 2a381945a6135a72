import Foundation
import FerryTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// One `ferry mount` of the shared ganesha per NFS version, for all checks of that version:
/// NFSv4.1 through io_uring rings, the others through the /dev/fuse loop, so both transports
/// see NFS.
enum NFSSharedMount {
    static func transport(version: NFSTestVersion) -> Transport { version == .v4_1 ? .uring : .classic }

    private static let mounts = Mutex<[NFSTestVersion: Result<FerryMount, Error>]>([:])

    static func get(version: NFSTestVersion) throws -> FerryMount {
        try mounts.withLock { mounts in
            if let mount = mounts[version] { return try mount.get() }
            let result = Result {
                let server = try NFSTestServer.shared()
                let export = try server.makeExport("conformance-v\(version)")
                return try transport(version: version).mount(source: server.url(export, version: version))
            }
            if mounts.isEmpty { atexit { NFSSharedMount.stopAtExit() } }
            mounts[version] = result
            return try result.get()
        }
    }

    /// The mount of a major version (4: 4.0), for suites that run on 3 and 4.
    static func get(version: Int) throws -> FerryMount { try get(version: NFSTestVersion(integerLiteral: version)) }

    private static func stopAtExit() {
        for case .success(let mount) in mounts.withLock({ $0.values }) { mount.stop() }
    }
}

/// Every version. `readdir_churn` lists 100,000 entries on v3 and `nfsV4DirectoryEntries` on
/// v4.x: ganesha's v4 path costs about 1.1 ms a create and 0.6 ms a remove here (v3: 0.7 and
/// 0.45), so 100,000 would take over 3 minutes per v4 version.
let nfsConformanceVersions: [NFSTestVersion] = NFSTestVersion.allCases
let nfsConformanceCases: [(NFSTestVersion, String)] = nfsConformanceVersions.flatMap { v in conformanceCheckNames.map { (v, $0) } }

/// Still hundreds of READDIRs per listing (each about 200 entries with their attributes).
let nfsV4DirectoryEntries = 30_000

@Suite("POSIX conformance through ferry mount nfs://", .serialized,
       .requires(.root, .devFUSE, .ganesha))
struct NFSConformanceThroughFerryMount {
    @Test("Check passes (or is reported unsupported) on an NFS export", .timeLimit(.minutes(10)),
          arguments: nfsConformanceCases)
    func check(_ version: NFSTestVersion, _ name: String) async throws {
        try #require(name != missingProgramSentinel, "ferry-conformance is not built")
        let server = try NFSTestServer.shared()
        try await server.shared {
            let mount = try NFSSharedMount.get(version: version)
            let result = try runConformance(in: mount.mountpoint, ["--check", name],
                                            entries: version.isV4 ? nfsV4DirectoryEntries : nil)
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

/// What `ferry-conformance` does not reach on NFS: symlink targets of PATH_MAX - 1 bytes
/// (more than libnfs 4.0 can encode in one call) through a real mount.
@Suite("Symlinks through ferry mount nfs://", .serialized,
       .requires(.root, .devFUSE, .ganesha))
struct NFSSymlinksThroughFerryMount {
    @Test(arguments: NFSTestVersion.allCases) func aSymlinkTargetOfPathMaxMinusOneBytesIsCreatedAndReadBack(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let mount = try NFSSharedMount.get(version: version)
            let directory = mount.mountpoint + "/symlinks-" + UUID().uuidString.prefix(8)
            #expect(mkdir(directory, 0o755) == 0)
            for length in [1023, Int(PATH_MAX) - 1] {
                let target = String((0..<length).map { $0 % 16 == 15 ? "/" : Character(UnicodeScalar(UInt8(ascii: "a") + UInt8($0 % 26))) })
                let link = directory + "/l\(length)"
                #expect(symlink(target, link) == 0, "symlink of \(length) bytes over NFSv\(version): \(String(cString: strerror(errno)))")
                var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                let n = readlink(link, &buffer, buffer.count)
                #expect(n == length && String(decoding: buffer[0..<max(0, n)].map { UInt8(bitPattern: $0) }, as: UTF8.self) == target)
                var st = stat()
                #expect(lstat(link, &st) == 0 && st.st_size == length)
            }
            // PATH_MAX bytes is too long for the kernel before it reaches Ferry.
            let tooLong = String(repeating: "x", count: Int(PATH_MAX))
            #expect(symlink(tooLong, directory + "/l4096") == -1 && errno == ENAMETOOLONG)
        }
    }
}
