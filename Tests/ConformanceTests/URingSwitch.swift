import Foundation
import FerryTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The fuse module's `enable_uring`, which decides whether INIT offers FUSE over io_uring.
/// It is read when a connection starts (by ferry before mounting, by the kernel at INIT), so a
/// test holds it at the value it needs only while its mount starts, under one lock for the
/// whole test process, and puts the old value back.
enum URingSwitch {
    static let path = "/sys/module/fuse/parameters/enable_uring"
    private static let lock = Mutex<Void>(())

    /// Whether this kernel has the switch (Linux 6.14+ with CONFIG_FUSE_IO_URING) and we may set it.
    static var isPresent: Bool { FileManager.default.isWritableFile(atPath: path) }

    /// Runs `body` (which mounts) with the switch at `enabled`, then restores the old value.
    static func with<T>(_ enabled: Bool, _ body: () throws -> T) throws -> T {
        try lock.withLock { _ in
            let old = try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            try write(enabled ? "1" : "0")
            defer { try? write(old == "Y" || old == "1" ? "1" : "0") }
            return try body()
        }
    }

    private static func write(_ value: String) throws {
        let fd = open(path, O_WRONLY)
        guard fd >= 0 else { throw HarnessError("open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard Glibc.write(fd, value, 1) == 1 else { throw HarnessError("write \(path): \(String(cString: strerror(errno)))") }
    }
}

extension Requirement.Component {
    /// FUSE over io_uring in the running kernel, with its switch writable.
    static let fuseURing = Requirement.Component(
        "FUSE over io_uring (Linux 6.14+, CONFIG_FUSE_IO_URING, \(URingSwitch.path))",
        remedy: "run on a kernel with FUSE over io_uring, as root") { URingSwitch.isPresent }
}

/// Which transport a parametrized suite mounts with.
enum Transport: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case classic
    case uring

    var testDescription: String { rawValue }

    /// Mounts with this transport: `--uring off`, or `--uring on` with the kernel switch on
    /// while the mount starts.
    func mount(source: String? = nil, extraArguments: [String] = ["--xattr"]) throws -> FerryMount {
        switch self {
        case .classic:
            return try FerryMount(source: source, extraArguments: extraArguments + ["--uring", "off"])
        case .uring:
            try #require(URingSwitch.isPresent, Comment(rawValue: Requirement.message(for: [.fuseURing])))
            return try URingSwitch.with(true) {
                try FerryMount(source: source, extraArguments: extraArguments + ["--uring", "on"])
            }
        }
    }
}

extension FerryMount {
    /// Asks ferry for its counters (SIGUSR2) and returns them once logged.
    func counters(timeout: TimeInterval = 10) throws -> [String: String] {
        let before = counterLines().count
        kill(process.processIdentifier, SIGUSR2)
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let lines = counterLines()
            if lines.count > before { return Self.metadata(of: lines[lines.count - 1]) }
            usleep(20_000)
        }
        throw HarnessError("ferry logged no counters within \(Int(timeout)) s:\n\(log.suffix(2000))")
    }

    private func counterLines() -> [String] {
        log.split(separator: "\n").filter { $0.hasSuffix(" counters") }.map(String.init)
    }

    /// The `key=value` pairs of a log line.
    static func metadata(of line: String) -> [String: String] {
        var result: [String: String] = [:]
        for word in line.split(separator: " ") {
            guard let eq = word.firstIndex(of: "=") else { continue }
            result[String(word[..<eq])] = String(word[word.index(after: eq)...])
        }
        return result
    }
}
