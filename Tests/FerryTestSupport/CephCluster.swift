import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A one-node Ceph cluster on loopback started by `scripts/ceph/start-cluster` (one monitor,
/// one bluestore OSD on a sparse file), for the RADOS backend's tests. Test suites share one
/// (`shared()`), each test in its own RADOS namespace; a test that restarts the OSD starts
/// its own.
public final class CephCluster: Sendable {
    public let stateDirectory: String
    public let conf: String
    public let pool = "ferry"

    /// Whether the Ceph daemons are installed at all (tests skip, saying so, when not).
    public static let isInstalled: Bool = ["ceph-mon", "ceph-osd", "ceph", "rados"].allSatisfy { tool in
        ["/usr/bin/", "/usr/local/bin/"].contains { FileManager.default.isExecutableFile(atPath: $0 + tool) }
    }

    static func script(_ name: String) -> String {
        BuiltProducts.packageRoot.appendingPathComponent("scripts/ceph/\(name)").path
    }

    /// Starts a cluster in a fresh state directory; throws with the script's output on failure.
    /// With `cephx`, the cluster requires keys; `client.ferry`'s is in `ferryKeyring`.
    public init(name: String, store: String = "bluestore", cephx: Bool = false) throws {
        stateDirectory = try makeTemporaryDirectory("ferry-ceph-\(name)")
        let result = try Self.runScript([Self.script("start-cluster"), stateDirectory, "--store", store, "--pool", pool]
                                        + (cephx ? ["--cephx"] : []))
        guard result.succeeded, let last = result.output.split(separator: "\n").last(where: { $0.hasSuffix("ceph.conf") }) else {
            _ = try? Self.runScript([Self.script("stop-cluster"), stateDirectory, "--purge"])
            throw HarnessError("scripts/ceph/start-cluster failed:\n\(result.output)")
        }
        conf = String(last)
    }

    public func stop() {
        _ = try? Self.runScript([Self.script("stop-cluster"), stateDirectory, "--purge"])
    }

    /// Kills the OSD (SIGKILL), waits `down` seconds, starts it again.
    public func restartOSD(down: Int = 3) throws {
        let result = try Self.runScript([Self.script("restart-osd"), stateDirectory, "\(down)"])
        guard result.succeeded else { throw HarnessError("scripts/ceph/restart-osd failed:\n\(result.output)") }
    }

    /// Runs a script of scripts/ceph (see `runBashScript`).
    static func runScript(_ arguments: [String]) throws -> ProcessOutput {
        let (status, output) = try runBashScript(arguments)
        let exited = (status ?? 0) & 0x7f == 0
        return ProcessOutput(status: exited ? ((status ?? 0) >> 8) & 0xff : (status ?? 0) & 0x7f, exitedNormally: exited, output: output)
    }

    /// `rados` with this cluster's conf.
    public func rados(_ arguments: [String]) throws -> ProcessOutput {
        try runToCompletion("/usr/bin/rados", ["-c", conf, "-p", pool] + arguments)
    }

    /// The keyring of `client.ferry` (a cephx cluster only).
    public var ferryKeyring: String { stateDirectory + "/client.ferry.keyring" }

    /// `rados://ferry/NAMESPACE`.
    public func source(_ namespace: String) -> String { "rados://\(pool)/\(namespace)" }

    /// `--ceph-conf CONF`.
    public var cephArguments: [String] { ["--ceph-conf", conf] }

    /// The `[export.backend]` lines of a tenant export on `namespace`. The test cluster runs
    /// without cephx, but the configuration requires a keyring: an unused one is written
    /// into `directory`.
    public func exportBackend(namespace: String, keyringIn directory: String) -> String {
        let keyring = directory + "/client.admin.keyring"
        FileManager.default.createFile(atPath: keyring, contents: Data("[client.admin]\n".utf8))
        return """
            kind = "rados"
            pool = "\(pool)"
            namespace = "\(namespace)"
            ceph_conf = "\(conf)"
            client_id = "admin"
            keyring = "\(keyring)"
            """
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var sharedCluster: Result<CephCluster, Error>?

    /// The cluster every RADOS test in this process shares, started on first use and
    /// stopped at exit.
    public static func shared() throws -> CephCluster {
        lock.lock()
        defer { lock.unlock() }
        if let sharedCluster { return try sharedCluster.get() }
        let result = Result { try CephCluster(name: "shared") }
        sharedCluster = result
        if case .success = result {
            atexit { if case .success(let c)? = CephCluster.sharedCluster { c.stop() } }
        }
        return try result.get()
    }
}
