import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Finds the executables SwiftPM built alongside this test bundle and runs them.
enum BuiltProducts {
    /// Three levels up from Tests/ConformanceTests/BuiltProducts.swift.
    static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Directories that may hold the products, most specific first: the test bundle's own
    /// build directory is the configuration actually being tested.
    static var searchDirectories: [URL] {
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

    static func path(of product: String) -> String? {
        for dir in searchDirectories {
            let candidate = dir.appendingPathComponent(product).path
            if FileManager.default.isExecutableFile(atPath: candidate) {
                return candidate
            }
        }
        return nil
    }

    static func require(_ product: String) throws -> String {
        guard let path = path(of: product) else {
            throw HarnessError("'\(product)' is not built; looked in "
                + searchDirectories.map(\.path).joined(separator: ", ")
                + " (run `swift build` first)")
        }
        return path
    }
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// What a finished child process printed and how it ended.
struct ProcessOutput {
    let status: Int32
    let exitedNormally: Bool
    let output: String

    var succeeded: Bool { exitedNormally && status == 0 }
}

/// Runs a program to completion with stdout and stderr merged, as a person would read them.
func runToCompletion(_ executable: String, _ arguments: [String]) throws -> ProcessOutput {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    // Read before waiting: a full pipe would otherwise block the child forever.
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return ProcessOutput(
        status: process.terminationStatus,
        exitedNormally: process.terminationReason == .exit,
        output: String(decoding: data, as: UTF8.self))
}

/// Makes a fresh private directory under the system temporary directory.
func makeTemporaryDirectory(_ prefix: String) throws -> String {
    let base = NSTemporaryDirectory() as NSString
    var template = Array(base.appendingPathComponent("\(prefix).XXXXXX").utf8CString)
    guard let made = mkdtemp(&template) else {
        throw HarnessError("mkdtemp: \(String(cString: strerror(errno)))")
    }
    return String(cString: made)
}
