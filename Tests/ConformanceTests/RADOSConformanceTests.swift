import Foundation
import FerryTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `ferry format` then `ferry mount` of a fresh namespace of the shared test cluster.
func mountFreshRADOS(_ namespace: String, extraArguments: [String] = ["--xattr"],
                     transport: Transport? = nil) throws -> (CephCluster, FerryMount) {
    let cluster = try CephCluster.shared()
    let ferry = try BuiltProducts.require("ferry")
    let formatted = try runToCompletion(ferry, ["format", cluster.source(namespace)] + cluster.cephArguments)
    try #require(formatted.succeeded, "ferry format \(cluster.source(namespace)):\n\(formatted.output)")
    let arguments = extraArguments + cluster.cephArguments
    let mount = try transport?.mount(source: cluster.source(namespace), extraArguments: arguments)
        ?? FerryMount(source: cluster.source(namespace), extraArguments: arguments)
    return (cluster, mount)
}

/// The conformance mount of a RADOS namespace, shared by every check and stopped at exit;
/// served through io_uring rings (the other RADOS suites mount with the /dev/fuse loop).
enum SharedRADOSMount {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var started: Result<FerryMount, Error>?

    static func get() throws -> FerryMount {
        lock.lock()
        defer { lock.unlock() }
        if let started { return try started.get() }
        let result = Result { try mountFreshRADOS("conformance", transport: .uring).1 }
        started = result
        if case .success = result {
            atexit { if case .success(let m)? = SharedRADOSMount.started { m.stop() } }
        }
        return try result.get()
    }
}

@Suite("POSIX conformance through ferry mount rados://", .serialized,
       .requires(.root, .devFUSE, .ceph))
struct RADOSConformanceThroughFerryMount {
    @Test("Check passes through ferry mount rados:// (io_uring)", .timeLimit(.minutes(10)), arguments: conformanceCheckNames)
    func check(_ name: String) throws {
        try #require(name != missingProgramSentinel, "ferry-conformance is not built")
        let mount = try SharedRADOSMount.get()
        let result = try runConformance(in: mount.mountpoint, ["--check", name], entries: radosDirectoryEntries)
        #expect(result.succeeded, "\(name) through ferry (source \(mount.source)):\n\(result.output)\nferry's log:\n\(mount.log)")
    }
}
