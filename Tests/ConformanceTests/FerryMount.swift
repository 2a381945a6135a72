import Foundation
import FerryTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// FUSE_SUPER_MAGIC: what statfs reports for any FUSE mount.
let fuseSuperMagic = 0x6573_5546

/// glibc's statfs(2) wrapper, looked up at run time: the Glibc module does not export
/// <sys/vfs.h>, and this test target may not add a C shim of its own.
private let statfsFunction: (@convention(c) (UnsafePointer<CChar>, UnsafeMutableRawPointer) -> Int32)? = {
    // A nil handle is glibc's RTLD_DEFAULT: search the libraries already loaded.
    guard let symbol = dlsym(nil, "statfs") else { return nil }
    return unsafeBitCast(symbol, to: (@convention(c) (UnsafePointer<CChar>, UnsafeMutableRawPointer) -> Int32).self)
}()

/// True when `path` is currently the root of a FUSE mount that answers.
func isFUSEMount(_ path: String) -> Bool {
    guard let statfsFunction else { return false }
    // struct statfs is 120 bytes on 64-bit Linux with f_type, a long, first; 512 bytes and
    // 8-byte alignment leave ample room, so the call never writes outside the buffer.
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: 512, alignment: 8)
    defer { buffer.deallocate() }
    guard statfsFunction(path, buffer) == 0 else { return false }
    return buffer.load(as: Int.self) == fuseSuperMagic
}

/// Whether this machine can run FUSE tests at all.
let canMountFUSE = FileManager.default.fileExists(atPath: "/dev/fuse") && geteuid() == 0

/// One running `ferry mount SOURCE MOUNTPOINT` child process.
final class FerryMount: Sendable {
    let source: String
    let mountpoint: String
    let process: Process
    let logPath: String
    private let ownsSource: Bool

    /// Starts ferry and returns once the mountpoint is a FUSE mount, or throws with ferry's log.
    init(source requested: String? = nil, extraArguments: [String] = ["--xattr"],
         timeout: TimeInterval = 20) throws {
        let ferry = try BuiltProducts.require("ferry")
        if let requested {
            source = requested
            ownsSource = false
        } else {
            source = try makeTemporaryDirectory("ferry-conformance-src")
            ownsSource = true
        }
        mountpoint = try makeTemporaryDirectory("ferry-conformance-mnt")
        logPath = mountpoint + ".log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)

        process = Process()
        process.executableURL = URL(fileURLWithPath: ferry)
        // The /dev/fuse loop unless a test asks for the rings: `--uring auto` would follow the
        // machine-wide enable_uring switch, which the io_uring suites turn on while they mount.
        let transport = extraArguments.contains("--uring") ? [] : ["--uring", "off"]
        process.arguments = ["mount"] + transport + extraArguments + [source, mountpoint]
        let logHandle = FileHandle(forWritingAtPath: logPath)
        process.standardOutput = logHandle
        process.standardError = logHandle
        try runWithDefaultSignalMask(process)

        let deadline = Date().addingTimeInterval(timeout)
        while !isFUSEMount(mountpoint) {
            if !process.isRunning {
                let status = process.terminationStatus
                let output = log
                cleanUpDirectories()
                throw HarnessError("ferry \(process.arguments!.joined(separator: " ")) exited with "
                    + "status \(status) before the mount appeared; its log:\n\(output)")
            }
            if Date() > deadline {
                let output = log
                stop()
                throw HarnessError("\(mountpoint) did not become a FUSE mount within "
                    + "\(Int(timeout)) s; ferry's log:\n\(output)")
            }
            usleep(50_000)
        }
    }

    /// Everything ferry wrote to stdout and stderr so far.
    var log: String {
        (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "(no log)"
    }

    /// SIGTERMs ferry and waits up to `timeout` seconds; returns whether it exited by itself.
    @discardableResult
    func terminate(timeout: TimeInterval = 20) -> Bool {
        guard process.isRunning else { return true }
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline {
            usleep(20_000)
        }
        return !process.isRunning
    }

    /// Best-effort teardown that never leaves a dead mount behind, even if ferry hung or crashed.
    func stop() {
        if !terminate() {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        if isFUSEMount(mountpoint) || errno == ENOTCONN {
            umount2(mountpoint, Int32(MNT_DETACH))
        }
        cleanUpDirectories()
    }

    private func cleanUpDirectories() {
        rmdir(mountpoint)
        unlink(logPath)
        if ownsSource {
            try? FileManager.default.removeItem(atPath: source)
        }
    }
}

/// The mounts the conformance checks share, one per mode (transport and passthrough),
/// started on first use and stopped at exit.
enum SharedMount {
    private static let started = Mutex<[MountMode: Result<FerryMount, Error>]>([:])

    static func get(_ mode: MountMode = .default) throws -> FerryMount {
        try started.withLock { started in
            if let mount = started[mode] {
                return try mount.get()
            }
            let result = Result {
                try mode.mount(source: ProcessInfo.processInfo.environment["FERRY_CONFORMANCE_SOURCE"])
            }
            if started.isEmpty, case .success = result {
                atexit { SharedMount.stopAtExit() }
            }
            started[mode] = result
            return try result.get()
        }
    }

    private static func stopAtExit() {
        for case .success(let mount) in started.withLock({ Array($0.values) }) { mount.stop() }
    }
}

/// How a `ferry mount` serves a directory: its transport (the /dev/fuse loop or io_uring
/// rings) and whether the kernel reads and writes open files itself (FUSE passthrough).
/// The conformance and concurrency suites run in each, so every combination is one a user gets.
struct MountMode: Hashable, Sendable, CustomTestStringConvertible {
    let transport: Transport
    let passthrough: Bool

    static let `default` = MountMode(transport: .classic, passthrough: true)
    static let all: [MountMode] = Transport.allCases.flatMap { t in [true, false].map { MountMode(transport: t, passthrough: $0) } }

    var testDescription: String { "\(transport), passthrough \(passthrough ? "on" : "off")" }

    func mount(source: String? = nil, extraArguments: [String] = ["--xattr"]) throws -> FerryMount {
        try transport.mount(source: source, extraArguments: extraArguments + ["--passthrough", passthrough ? "on" : "off"])
    }
}
