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
