import FerryTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The guest to boot: its kernel, vCPUs and request queues.
struct GuestMachine: Sendable {
    /// `scripts/guest/build-image --kernel`.
    enum Kernel: String, Sendable {
        /// Debian 12's default kernel (modules loaded by /init); spreads nothing over queues.
        case linux6_1 = "6.1"
        /// Debian 12's 6.12 (virtio and virtiofs built in): spreads requests over
        /// min(request queues, vCPUs) queues, offers FUSE_DIRECT_IO_ALLOW_MMAP.
        case linux6_12 = "6.12"
    }
    var kernel: Kernel = .linux6_1
    var smp = 1
    var queues = 1

    /// The default test guest: 6.1, one vCPU, one request queue.
    static let linux61 = GuestMachine()
    /// 6.12 with 2 vCPUs and 4 request queues, so its requests really go over two queues at once.
    static let linux612 = GuestMachine(kernel: .linux6_12, smp: 2, queues: 4)
}

/// Boots the project's test guest (scripts/guest) and reads what it printed.
enum Guest {
    static let repo = BuiltProducts.packageRoot.path
    static let qemu = "/usr/bin/qemu-system-x86_64"
    static let referenceVirtiofsd = "/usr/lib/qemu/virtiofsd"

    static var available: Bool { FileManager.default.isExecutableFile(atPath: qemu) && getuid() == 0 }
    static var referenceAvailable: Bool { FileManager.default.isExecutableFile(atPath: referenceVirtiofsd) }

    /// Each kernel's default image (.build/guest, .build/guest-6.12), built once per test
    /// process (the script caches across runs too).
    static let image61 = buildImage(kernel: .linux6_1)
    static let image612 = buildImage(kernel: .linux6_12)
    /// The default (6.1) image, as suites written before `GuestMachine` ask for it.
    static var image: Result<Void, HarnessError> { image61.map { _ in () } }

    static func image(for kernel: GuestMachine.Kernel) throws -> String {
        try (kernel == .linux6_1 ? image61 : image612).get()
    }

    /// Builds an image for `kernel` into `directory` (default: that kernel's default image),
    /// with `extras` in the guest's /opt/ferry/bin. Images with extras go to their own
    /// directory, so the default ones stay as they are.
    static func buildImage(kernel: GuestMachine.Kernel, directory: String? = nil, extras: [String] = []) -> Result<String, HarnessError> {
        let outdir = directory ?? repo + (kernel == .linux6_1 ? "/.build/guest" : "/.build/guest-6.12")
        do {
            let r = try runToCompletion(repo + "/scripts/guest/build-image",
                                        [outdir, "--kernel", kernel.rawValue] + extras.flatMap { ["--extra", $0] })
            return r.succeeded ? .success(outdir) : .failure(HarnessError("build-image failed:\n\(r.output)"))
        } catch {
            return .failure(HarnessError("build-image: \(error)"))
        }
    }

    /// Compiles one C file of scripts/guest/programs statically (the guest has no libc)
    /// into a fresh directory; returns the program's path.
    static func compileGuestProgram(_ name: String) throws -> String {
        let output = try makeTemporaryDirectory("ferry-guest-program") + "/" + name
        let r = try runToCompletion("/usr/bin/gcc", ["-static", "-O2", "-Wall", "-o", output,
                                                     repo + "/scripts/guest/programs/\(name).c"])
        guard r.succeeded else { throw HarnessError("gcc \(name).c failed:\n\(r.output)") }
        return output
    }

    /// The result of one guest run.
    struct Run {
        /// The guest command's exit status, or 124 (timeout) / 125 (no exit marker).
        let status: Int32
        /// What the command printed (between the mount and exit markers).
        let output: String
        /// The whole console log.
        let log: String
    }

    /// Boots the default 6.1 guest against the back-end listening on `socket` and runs
    /// `command` in it.
    static func run(socket: String, command: String, timeout: Int = 300, queues: Int = 1, smp: Int = 1,
                    pidfile: String? = nil) throws -> Run {
        try run(socket: socket, command: command, timeout: timeout,
                machine: GuestMachine(kernel: .linux6_1, smp: smp, queues: queues), pidfile: pidfile)
    }

    /// Boots `machine` (`.linux612`: 6.12, 2 vCPUs, 4 request queues) against the back-end
    /// listening on `socket` and runs `command` in it; `image`: a directory made by
    /// `buildImage` with the same kernel, instead of that kernel's default image.
    static func run(socket: String, command: String, timeout: Int = 300, machine: GuestMachine,
                    image: String? = nil, pidfile: String? = nil) throws -> Run {
        let imageDirectory = try image ?? Guest.image(for: machine.kernel)
        let log = try makeTemporaryDirectory("ferry-guest-log") + "/console.log"
        var arguments = ["--socket", socket, "--cmd", command, "--timeout", "\(timeout)", "--quiet", "--log", log,
                         "--image", imageDirectory, "--kernel", machine.kernel.rawValue]
        if machine.queues > 1 { arguments += ["--queues", "\(machine.queues)"] }
        if machine.smp > 1 { arguments += ["--smp", "\(machine.smp)"] }
        if let pidfile { arguments += ["--pidfile", pidfile] }
        let result = try runToCompletion(repo + "/scripts/guest/run-guest", arguments)
        let text = ((try? String(contentsOfFile: log, encoding: .utf8)) ?? result.output).replacingOccurrences(of: "\r", with: "")
        return Run(status: result.status, output: commandOutput(text), log: text)
    }

    /// The lines between `FERRY-GUEST: mounted` and `FERRY-GUEST: exit=`.
    static func commandOutput(_ log: String) -> String {
        var inside = false
        var lines: [Substring] = []
        for line in log.split(separator: "\n", omittingEmptySubsequences: false) {
            if line == "FERRY-GUEST: mounted" { inside = true; continue }
            if line.hasPrefix("FERRY-GUEST: exit=") { break }
            if inside { lines.append(line) }
        }
        return lines.joined(separator: "\n")
    }
}

/// The conformance run every guest test makes. `readdir_churn` lists 10,000 entries here, not
/// the host's 100,000: a TCG guest takes about 2 ms an entry on a local export (100,000 would add
/// 3.5 minutes to each of the five guest runs) and a RADOS export several times that.
let guestConformanceCommand = "ferry-conformance --dir /mnt --timeout 240 --entries 10000"

/// Outcome of `ferry-conformance` as printed: check name → passed (true), failed (false);
/// skipped checks are left out.
func conformanceResults(_ output: String) -> [String: Bool] {
    var results: [String: Bool] = [:]
    for line in output.split(separator: "\n") {
        if line.hasPrefix("ok ") { results[String(line.dropFirst(3))] = true }
        if line.hasPrefix("FAIL ") {
            let rest = line.dropFirst(5)
            results[String(rest.prefix { $0 != ":" })] = false
        }
    }
    return results
}

/// A vhost-user-fs back-end process on a socket in a fresh directory, serving `export`.
final class Daemon: Sendable {
    let process = Process()
    let socket: String
    let logPath: String

    private init(executable: String, arguments: [String], socket: String, logPath: String) throws {
        self.socket = socket
        self.logPath = logPath
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = FileHandle(forWritingAtPath: logPath)!
        process.standardOutput = log
        process.standardError = log
        try runWithDefaultSignalMask(process)
        let deadline = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: socket) {
            guard process.isRunning, Date() < deadline else {
                throw HarnessError("\(executable) did not create \(socket); its log:\n\(self.log)")
            }
            usleep(20_000)
        }
    }

    /// `ferry virtiofsd` on `export` (a directory, or any source: --shared-dir takes them all).
    static func ferry(export: String, socket: String? = nil, extra: [String] = []) throws -> Daemon {
        try virtiofsd("--shared-dir=\(export)", socket: socket, extra: extra)
    }

    /// `ferry virtiofsd` on any source `ferry mount` takes (nfs://…, rados://…), as --source.
    static func ferry(source: String, socket: String? = nil, extra: [String] = []) throws -> Daemon {
        try virtiofsd("--source=\(source)", socket: socket, extra: extra)
    }

    private static func virtiofsd(_ sourceArgument: String, socket: String?, extra: [String]) throws -> Daemon {
        let ferry = try BuiltProducts.require("ferry")
        let dir = try makeTemporaryDirectory("ferry-daemon")
        let socket = socket ?? dir + "/vhost.sock"
        return try Daemon(executable: ferry,
                          arguments: ["virtiofsd", "--socket-path=\(socket)", sourceArgument, "--cache=auto"] + extra,
                          socket: socket, logPath: dir + "/ferry.log")
    }

    /// `ferry serve` on the configuration directory `config`; ready once `socket` (one of
    /// its exports') exists.
    static func serve(config: String, socket: String) throws -> Daemon {
        let ferry = try BuiltProducts.require("ferry")
        let dir = try makeTemporaryDirectory("ferry-serve-daemon")
        return try Daemon(executable: ferry, arguments: ["serve", "--config", config], socket: socket, logPath: dir + "/serve.log")
    }

    /// `ferry serve` with one tenant and one POSIX export of `directory` (default: a fresh
    /// one), `keys` (TOML lines) added to its `[[export]]`; ready once its socket exists.
    static func serveOnePOSIXExport(keys: String = "", directory: String? = nil) throws -> (daemon: Daemon, export: String) {
        let top = try makeTemporaryDirectory("ferry-serve-guest")
        let export = directory ?? top + "/export"
        try FileManager.default.createDirectory(atPath: export, withIntermediateDirectories: true)
        return (try serveOneExport(in: top, keys: keys, backend: "kind = \"posix\"\npath = \"\(export)\""), export)
    }

    /// `ferry serve` on TOP/config with tenant "guest" and its one export "data" (tag
    /// "data", socket TOP/run/data.sock): `keys` (TOML lines) in its `[[export]]`, `backend`
    /// the lines of its `[export.backend]`; ready once its socket exists.
    static func serveOneExport(in top: String, keys: String = "", backend: String) throws -> Daemon {
        let config = top + "/config"
        try FileManager.default.createDirectory(atPath: config + "/tenants", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: top + "/run", withIntermediateDirectories: true)
        try "control_socket = \"\(top)/run/control.sock\"\n".write(toFile: config + "/ferry.toml", atomically: true, encoding: .utf8)
        try """
            name = "guest"
            [[export]]
            name = "data"
            tag = "data"
            socket = "\(top)/run/data.sock"
            \(keys)
            [export.backend]
            \(backend)
            """.write(toFile: config + "/tenants/guest.toml", atomically: true, encoding: .utf8)
        return try serve(config: config, socket: top + "/run/data.sock")
    }

    /// The reference C virtiofsd (QEMU 7.2): serves one guest, then exits.
    static func reference(export: String, extra: [String] = []) throws -> Daemon {
        let dir = try makeTemporaryDirectory("virtiofsd-daemon")
        let socket = dir + "/vhost.sock"
        return try Daemon(executable: Guest.referenceVirtiofsd,
                          arguments: ["--socket-path=\(socket)", "-o", "source=\(export)", "-o", "cache=auto"] + extra,
                          socket: socket, logPath: dir + "/virtiofsd.log")
    }

    var isRunning: Bool { process.isRunning }
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// SIGTERM, then the exit status (SIGKILL after `timeout` seconds, status -1).
    @discardableResult
    func stop(timeout: TimeInterval = 20) -> Int32 {
        guard process.isRunning else { return process.terminationStatus }
        process.terminate()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return -1
        }
        return process.terminationReason == .exit ? process.terminationStatus : -Int32(process.terminationStatus)
    }

    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
}
