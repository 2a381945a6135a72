import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A one-node Ceph cluster on loopback started by `scripts/ceph/start-cluster` (one monitor,
/// one bluestore OSD on a sparse file), for the RADOS backend's tests. Test suites share one
/// (`shared()`), each test in its own RADOS namespace; a test that restarts the OSD starts
/// its own.
public final class CephCluster: @unchecked Sendable {
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

    /// Runs a script of scripts/ceph with posix_spawn and a blocking waitpid. (Foundation's
    /// Process never noticed the end of a script whose children daemonize: the test hung.)
    static func runScript(_ arguments: [String]) throws -> ProcessOutput {
        let log = try makeTemporaryDirectory("ferry-ceph-script") + "/output"
        defer { try? FileManager.default.removeItem(atPath: (log as NSString).deletingLastPathComponent) }
        let argv = (["/bin/bash"] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, "/bin/bash", &actions, &attributes, argv, environ)
        guard rc == 0 else { throw HarnessError("posix_spawn /bin/bash: \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        let exited = status & 0x7f == 0
        return ProcessOutput(status: exited ? (status >> 8) & 0xff : status & 0x7f, exitedNormally: exited, output: output)
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
