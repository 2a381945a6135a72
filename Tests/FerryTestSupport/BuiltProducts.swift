import CFerry
import FerrySystem
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Finds the executables SwiftPM built alongside this test bundle and runs them.
public enum BuiltProducts {
    /// Three levels up from Tests/FerryTestSupport/BuiltProducts.swift.
    public static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Directories that may hold the products, most specific first: the test bundle's own
    /// build directory is the configuration actually being tested.
    public static var searchDirectories: [URL] {
        var dirs: [URL] = []
        if let exe = Bundle.main.executablePath {
            dirs.append(URL(fileURLWithPath: exe).deletingLastPathComponent())
        }
        if let arg0 = CommandLine.arguments.first, arg0.contains("/") {
            dirs.append(URL(fileURLWithPath: arg0).deletingLastPathComponent())
        }
        dirs.append(packageRoot.appendingPathComponent(".build/debug"))
        dirs.append(packageRoot.appendingPathComponent(".build/release"))
        return dirs
    }

    /// FERRY_CONFORMANCE_FERRY=/path/to/ferry tests another build (a release build, or a
    /// stand-in while `ferry mount` is unfinished) without rebuilding this package.
    public static func path(of product: String) -> String? {
        if product == "ferry", let override = ProcessInfo.processInfo.environment["FERRY_CONFORMANCE_FERRY"] {
            return override
        }
        for dir in searchDirectories {
            let candidate = dir.appendingPathComponent(product).path
            if FileManager.default.isExecutableFile(atPath: candidate) {
                return candidate
            }
        }
        return nil
    }

    public static func require(_ product: String) throws -> String {
        guard let path = path(of: product) else {
            throw HarnessError("'\(product)' is not built; looked in "
                + searchDirectories.map(\.path).joined(separator: ", ")
                + " (run `swift build` first)")
        }
        return path
    }
}

public struct HarnessError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// What a finished child process printed and how it ended.
public struct ProcessOutput {
    public let status: Int32
    public let exitedNormally: Bool
    public let output: String

    public var succeeded: Bool { exitedNormally && status == 0 }
}

/// Runs a program to completion with stdout and stderr merged, as a person would read them.
public func runToCompletion(_ executable: String, _ arguments: [String]) throws -> ProcessOutput {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try runWithDefaultSignalMask(process)
    // Read before waiting: a full pipe would otherwise block the child forever.
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return ProcessOutput(
        status: process.terminationStatus,
        exitedNormally: process.terminationReason == .exit,
        output: String(decoding: data, as: UTF8.self))
}

/// Makes a fresh private directory under the system temporary directory.
public func makeTemporaryDirectory(_ prefix: String) throws -> String {
    let base = NSTemporaryDirectory() as NSString
    var template = Array(base.appendingPathComponent("\(prefix).XXXXXX").utf8CString)
    guard let made = mkdtemp(&template) else {
        throw HarnessError("mkdtemp: \(String(cString: strerror(errno)))")
    }
    return String(cString: made)
}

/// Starts `process` with no signals blocked, as a shell would. The test runner's threads block
/// most signals and spawned children inherit that mask, which would hide SIGTERM from ferry
/// and SIGALRM (the per-check timeout) from ferry-conformance.
public func runWithDefaultSignalMask(_ process: Process) throws {
    var empty = sigset_t(), saved = sigset_t()
    sigemptyset(&empty)
    // Foundation spawns the child synchronously from this thread, so this thread's mask is
    // the one it inherits; restore ours right after.
    pthread_sigmask(SIG_SETMASK, &empty, &saved)
    defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
    try process.run()
}

/// Runs `/bin/bash` with `arguments` through posix_spawn and a blocking waitpid: standard
/// input from /dev/null, output and errors into one file, no signal blocked, and no other
/// descriptor of this process inherited. That last matters: the scripts leave daemons
/// running (ganesha, Ceph) for the rest of the run, and a daemon holding the write end of
/// another test's output pipe (Foundation's `Pipe` is not close-on-exec) keeps that test's
/// read from ever seeing EOF: it waits until the daemon is restarted. For the scripts
/// that start daemons (ganesha, Ceph): Foundation's Process was seen never to notice the end
/// of a script whose children daemonize. `status` is nil when the script was reaped by
/// someone else (ECHILD); its output then tells how it went.
public func runBashScript(_ arguments: [String]) throws -> (status: Int32?, output: String) {
    let log = try makeTemporaryDirectory("ferry-script") + "/output"
    defer { try? FileManager.default.removeItem(atPath: (log as NSString).deletingLastPathComponent) }
    let argv = (["/bin/bash"] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    let closing = ferry_spawn_actions_close_from(&actions, 3)
    guard closing == 0 else { throw HarnessError("posix_spawn_file_actions_addclosefrom_np: \(String(cString: strerror(closing)))") }
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
    let waited = (try? systemCall { waitpid(pid, &status, 0) }) ?? -1
    let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
    return (waited == pid ? status : nil, output)
}
