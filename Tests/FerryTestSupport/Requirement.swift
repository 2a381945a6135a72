import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A real component a test needs (QEMU, /dev/fuse, ganesha, Ceph, ...), as a trait:
/// `@Test(.requires(.root, .qemu))`. Without the component, a test is skipped with the
/// reason, except under CI (`CI=true`), where it fails with "missing component X: ..."
/// instead: on CI a component that is not installed is a broken machine, not a reason to
/// report fewer tests as passed.
public struct Requirement: TestTrait, SuiteTrait {
    /// One component: its name, whether it is here, and how to get it.
    public struct Component: Sendable {
        public let name: String
        public let remedy: String
        let isPresent: @Sendable () -> Bool

        public init(_ name: String, remedy: String = "install with scripts/install-deps",
                    isPresent: @escaping @Sendable () -> Bool) {
            self.name = name
            self.remedy = remedy
            self.isPresent = isPresent
        }

        public var isMissing: Bool { !isPresent() }
    }

    public let components: [Component]

    public var isRecursive: Bool { true }

    /// Whether this run treats a missing component as a failure.
    public static var failsWhenMissing: Bool {
        ProcessInfo.processInfo.environment["CI"]?.lowercased() == "true"
    }

    /// "missing component QEMU (qemu-system-x86_64): install with scripts/install-deps; ..."
    public static func message(for missing: [Component]) -> String {
        missing.map { "missing component \($0.name): \($0.remedy)" }.joined(separator: "; ")
    }

    public func prepare(for test: Test) async throws {
        let missing = components.filter(\.isMissing)
        guard !missing.isEmpty else { return }
        let message = Self.message(for: missing)
        if Self.failsWhenMissing {
            // Thrown from a trait, an error is recorded against the test, which then fails
            // without running.
            throw HarnessError(message + " (CI=true: a missing component fails the run)")
        }
        // Outside CI: skip, with the reason, exactly as `.enabled(if:)` does.
        try await ConditionTrait.enabled(if: false, Comment(rawValue: message)).prepare(for: test)
    }
}

extension Trait where Self == Requirement {
    /// The test needs every one of `components`.
    public static func requires(_ components: Requirement.Component...) -> Self {
        Requirement(components: components)
    }
}

private func executable(_ path: String) -> Bool { FileManager.default.isExecutableFile(atPath: path) }

extension Requirement.Component {
    public static let root = Self("root", remedy: "run the tests as root (as CI does)") { geteuid() == 0 }

    public static let devFUSE = Self("/dev/fuse", remedy: "load the fuse module; install fuse3 with scripts/install-deps") {
        FileManager.default.fileExists(atPath: "/dev/fuse")
    }

    public static let qemu = Self("QEMU (qemu-system-x86_64)") {
        executable("/usr/bin/qemu-system-x86_64") || executable("/usr/local/bin/qemu-system-x86_64")
    }

    public static let ganesha = Self("nfs-ganesha (ganesha.nfsd, nfs-ganesha-vfs, rpcbind, libnfs-utils)") {
        ["/usr/bin/ganesha.nfsd", "/usr/sbin/rpcbind", "/usr/bin/nfs-ls"].allSatisfy(executable)
            && FileManager.default.fileExists(atPath: "/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so")
    }

    public static let ceph = Self("Ceph (ceph-mon, ceph-osd, ceph, rados)") { CephCluster.isInstalled }

    public static let referenceVirtiofsd = Self("the reference virtiofsd (/usr/lib/qemu/virtiofsd, QEMU 7.2)") {
        executable("/usr/lib/qemu/virtiofsd")
    }

    public static let systemdAnalyze = Self("systemd-analyze", remedy: "install systemd") {
        executable("/usr/bin/systemd-analyze")
    }

    public static let setpriv = Self("setpriv", remedy: "install util-linux") { executable("/usr/bin/setpriv") }

    public static let stressNG = Self("stress-ng") {
        executable("/usr/bin/stress-ng") || executable("/usr/local/bin/stress-ng")
    }
}
