import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The nfs-ganesha every NFS test in this process shares (scripts/nfs/start-ganesha): it
/// binds port 2049, so there is one per machine. It exports one directory; each test works
/// in its own subdirectory (`makeExport`), mounted as `nfs://127.0.0.1/THAT/DIR`.
///
/// Tests that stop or restart the server take `exclusive`; every other NFS test takes
/// `shared`, so a restart never lands in the middle of someone else's check.
/// @unchecked Sendable: its paths are immutable; starting and stopping the server is ordered by `lock`.
public final class NFSTestServer: @unchecked Sendable {
    public let root: String
    let state: String
    private let lock = AsyncReadersWriterLock()

    /// Whether this machine has what the NFS tests need.
    public static var isInstalled: Bool {
        ["/usr/bin/ganesha.nfsd", "/usr/sbin/rpcbind", "/usr/bin/nfs-ls"].allSatisfy {
            FileManager.default.isExecutableFile(atPath: $0)
        } && FileManager.default.fileExists(atPath: "/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so") && geteuid() == 0
    }

    /// Checks NFS cannot pass, each with the text its failure must contain and the reason
    /// (docs/backends/nfs.md, "What NFS cannot express"). Listed per protocol version. A check
    /// listed here that starts passing fails the test, so the list stays true.
    public static let unsupportedChecks: [NFSTestVersion: [String: (expect: String, reason: String)]] = [
        .v3: common(version: "NFSv3").merging(v3Only) { $1 },
        .v4_0: common(version: "NFSv4.0"),
        .v4_1: common(version: "NFSv4.1"),
        .v4_2: v42,
    ]

    /// NFSv4.2 on nfs-ganesha 4.3: ALLOCATE/DEALLOCATE work; SEEK answers offset 0 to every
    /// question (Ferry does not trust the inconsistent answer and says ENOSYS: the kernel then
    /// treats the whole file as data); no extended attributes (RFC 8276 answered NOTSUPP).
    private static let v42: [String: (expect: String, reason: String)] = {
        var checks = common(version: "NFSv4.2")
        checks["fallocate_punch_hole"] = nil
        checks["seek_data_hole"] = ("expected a hole", "nfs-ganesha 4.3's VFS FSAL answers SEEK with offset 0 whatever is asked: Ferry does not trust it")
        checks["xattr_create_replace"] = ("skip", "nfs-ganesha 4.3 answers the RFC 8276 extended-attribute operations NOTSUPP")
        checks["xattr_limits"] = ("skip", "nfs-ganesha 4.3 answers the RFC 8276 extended-attribute operations NOTSUPP")
        return checks
    }()

    /// NFSv3 carries times as unsigned 32-bit seconds (nfstime3). The file system must say it
    /// cannot store the others (the check then skips); storing a wrapped time fails it.
    private static let v3Only: [String: (expect: String, reason: String)] = [
        "times_before_1970": ("skip", "NFSv3 times (nfstime3) are unsigned: nothing before 1970"),
        "times_after_2038": ("skip", "NFSv3 times (nfstime3) are 32-bit: nothing from 7 Feb 2106 on"),
    ]

    private static func common(version: String) -> [String: (expect: String, reason: String)] {
        [
            "fallocate_punch_hole": ("EOPNOTSUPP", "\(version) has no ALLOCATE/DEALLOCATE (NFSv4.2 does)"),
            "seek_data_hole": ("expected a hole", "\(version) has no SEEK: the kernel reports the whole file as data"),
            "rename_noreplace": ("EINVAL", "NFS RENAME has no flags; emulating RENAME_NOREPLACE would race"),
            "rename_exchange": ("EINVAL", "NFS RENAME has no flags; there is no atomic exchange"),
            "utimens_nsec": ("EOPNOTSUPP", "nfs-ganesha 4.3's VFS FSAL answers SETATTR of a symlink's times with success and leaves them (FSAL_VFS: \"Setting time on symlinks is illegal\"); Ferry says so"),
            "utimensat_symlink": ("EOPNOTSUPP", "the same FSAL_VFS refusal as utimens_nsec: a symlink's own times cannot be stored on nfs-ganesha's VFS FSAL, so Ferry refuses rather than pretend"),
            "xattr_create_replace": ("skip", "\(version) has no extended attributes"),
            "xattr_limits": ("skip", "\(version) has no extended attributes"),
        ]
    }

    public static let whyNotInstalled = "needs root and nfs-ganesha, nfs-ganesha-vfs, rpcbind, libnfs-utils (scripts/install-deps)"

    private static let instance: Result<NFSTestServer, HarnessError> = {
        do { return .success(try NFSTestServer()) } catch let error as HarnessError {
            return .failure(error)
        } catch {
            return .failure(HarnessError("\(error)"))
        }
    }()

    /// The server, started on first use and stopped when the test process exits.
    public static func shared() throws -> NFSTestServer { try instance.get() }

    private init() throws {
        let base = try makeTemporaryDirectory("ferry-nfs-test")
        root = base + "/export"
        state = base + "/state"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try start()
        runningState = state
        atexit { if let state = runningState { _ = try? NFSTestServer.runScript("stop-ganesha", [state]) } }
    }

    static func script(_ name: String) -> String { BuiltProducts.packageRoot.path + "/scripts/nfs/" + name }

    /// Runs one of scripts/nfs and returns its output, or throws it (see `runBashScript`).
    /// `environment`: variables set for the script alone.
    static func runScript(_ name: String, _ arguments: [String], environment: [String: String] = [:]) throws -> String {
        let assignments = environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        let command = environment.isEmpty ? [script(name)]
            : ["-c", "exec env \(assignments.joined(separator: " ")) \"$0\" \"$@\"", script(name)]
        let (status, output) = try runBashScript(command + arguments)
        // Reaped by someone else: the script's own output says how it went.
        let succeeded = status.map { $0 & 0x7f == 0 && ($0 >> 8) & 0xff == 0 } ?? !output.contains("start-ganesha:")
        guard succeeded else { throw HarnessError("scripts/nfs/\(name) failed:\n\(output)") }
        return output
    }

    /// Starts (or restarts) ganesha; returns once it answers. `lease`: its NFSv4 lease in
    /// seconds (default 60). `grace`: a grace period of that many seconds after the start, in
    /// which the clients it knew before reclaim their locks and other LOCKs wait; without it
    /// (the default) a restart forgets every lock. Under `exclusive`, which should start the
    /// default server again before it ends.
    public func start(lease: Int? = nil, grace: Int? = nil) throws {
        var environment: [String: String] = [:]
        if let lease { environment["FERRY_GANESHA_LEASE"] = String(lease) }
        if let grace { environment["FERRY_GANESHA_GRACE"] = String(grace) }
        _ = try NFSTestServer.runScript("start-ganesha", [state, root], environment: environment)
    }

    /// Stops ganesha (a real server outage: clients see refused connections).
    public func stop() throws {
        _ = try NFSTestServer.runScript("stop-ganesha", [state])
    }

    /// Freezes ganesha (SIGSTOP), a server that hangs rather than goes away: connections
    /// stay open, calls are accepted by the kernel and never answered. `resume` lets it go on.
    /// Under `exclusive` only.
    public func pause() throws { try signal(SIGSTOP) }
    public func resume() throws { try signal(SIGCONT) }

    private func signal(_ number: Int32) throws {
        let text = try String(contentsOfFile: state + "/ganesha.pid", encoding: .utf8)
        guard let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), kill(pid, number) == 0 else {
            throw HarnessError("cannot signal nfs-ganesha (pid file says '\(text)'): \(String(cString: strerror(errno)))")
        }
    }

    /// Established connections to the NFS port holding bytes the server has not read:
    /// calls waiting for a frozen server, one per connection a client is using at once.
    public static func connectionsWithUnreadCalls() -> Int {
        // ganesha listens on a dual-stack socket: its end of a connection from 127.0.0.1
        // is listed in tcp6. Fields: sl local_address rem_address st tx_queue:rx_queue ...;
        // port 0801 is 2049, state 01 ESTABLISHED.
        ["/proc/net/tcp", "/proc/net/tcp6"].reduce(0) { count, table in
            let text = (try? String(contentsOfFile: table, encoding: .utf8)) ?? ""
            return count + text.split(separator: "\n").dropFirst().filter { line in
                let fields = line.split(separator: " ")
                guard fields.count > 4, fields[1].hasSuffix(":0801"), fields[3] == "01" else { return false }
                let queues = fields[4].split(separator: ":")
                return queues.count == 2 && (UInt64(queues[1], radix: 16) ?? 0) > 0
            }.count
        }
    }

    /// A fresh, empty, world-writable directory inside the export, for one test.
    public func makeExport(_ name: String) throws -> String {
        let path = root + "/" + name + "-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        chmod(path, 0o777)
        return path
    }

    /// `nfs://127.0.0.1/PATH?version=V` plus extra URL parameters (`timeout=5`, ...).
    public func url(_ path: String, version: Int, _ parameters: [String] = []) -> String {
        "nfs://127.0.0.1\(path)?" + (["version=\(version)"] + parameters).joined(separator: "&")
    }

    public func url(_ path: String, version: NFSTestVersion, _ parameters: [String] = []) -> String {
        "nfs://127.0.0.1\(path)?" + (["version=\(version)"] + parameters).joined(separator: "&")
    }

    /// Waiting for either costs no thread (see `AsyncReadersWriterLock`); a restart waits
    /// for the checks running now, and checks that come after it wait for the restart.
    public func shared<R>(_ body: () async throws -> R) async rethrows -> R { try await lock.shared(body) }

    public func exclusive<R>(_ body: () async throws -> R) async rethrows -> R { try await lock.exclusive(body) }
}

/// For the exit handler, which cannot capture.
nonisolated(unsafe) private var runningState: String?

/// The NFS protocol versions the tests run on: v3 through libnfs, v4.0 to 4.2 through Ferry's
/// own client. An integer literal is a major version (4 is 4.0), as in a URL.
public enum NFSTestVersion: String, CaseIterable, Hashable, Sendable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    case v3 = "3", v4_0 = "4.0", v4_1 = "4.1", v4_2 = "4.2"

    public init(integerLiteral value: Int) { self = value == 3 ? .v3 : .v4_0 }

    public var description: String { rawValue }
    public var isV4: Bool { self != .v3 }
}
