// swift package conformance — mount a source with `ferry mount` and run the POSIX checks on it.
//
//   swift package conformance [--source SRC] [--check NAME]... [--skip NAME]...
//                             [--configuration debug|release] [--ferry PATH]
//
// Builds the `ferry` and `ferry-conformance` products, mounts SRC (default: a fresh empty
// temporary directory) on a temporary mount point with `ferry mount --xattr SRC MNT`, runs
// `ferry-conformance --dir MNT` with the given --check/--skip selection, prints its report,
// then SIGTERMs ferry (which unmounts) and fails if any check failed or ferry misbehaved.
// --ferry PATH mounts with another ferry executable instead of the one just built.
// SRC is passed to ferry verbatim, so later backends (nfs://…, rados://…) work unchanged.
// Needs root and /dev/fuse, like any FUSE mount without fusermount's setuid helper.
// Use `--disable-sandbox` on macOS; Linux runs plugins unsandboxed.

import Foundation
import PackagePlugin

#if canImport(Glibc)
import Glibc
#endif

@main
struct ConformancePlugin: CommandPlugin {
    func performCommand(context: PluginContext, arguments: [String]) async throws {
        var extractor = ArgumentExtractor(arguments)
        let source = extractor.extractOption(named: "source").last
        let checks = extractor.extractOption(named: "check")
        let skips = extractor.extractOption(named: "skip")
        let configuration = extractor.extractOption(named: "configuration").last ?? "debug"
        let ferryOverride = extractor.extractOption(named: "ferry").last
        guard extractor.remainingArguments.isEmpty else {
            throw PluginFailure("unexpected arguments: \(extractor.remainingArguments.joined(separator: " "))")
        }

        let ferry = try ferryOverride.map { URL(fileURLWithPath: $0) }
            ?? build("ferry", configuration: configuration)
        let conformance = try build("ferry-conformance", configuration: configuration)

        let temporary = FileManager.default.temporaryDirectory
        let runID = UUID().uuidString.prefix(8)
        let mountpoint = temporary.appendingPathComponent("ferry-conformance-mnt-\(runID)").path
        var ownedSource: String?
        let mountedSource: String
        if let source {
            mountedSource = source
        } else {
            let made = temporary.appendingPathComponent("ferry-conformance-src-\(runID)").path
            try FileManager.default.createDirectory(atPath: made, withIntermediateDirectories: false)
            ownedSource = made
            mountedSource = made
        }
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: false)
        defer {
            try? FileManager.default.removeItem(atPath: mountpoint)
            if let ownedSource { try? FileManager.default.removeItem(atPath: ownedSource) }
        }

        print("== ferry mount --xattr \(mountedSource) \(mountpoint)")
        let server = Process()
        server.executableURL = ferry
        server.arguments = ["mount", "--xattr", mountedSource, mountpoint]
        try runWithDefaultSignalMask(server)
        defer { stop(server, mountpoint: mountpoint) }
        try waitForFUSEMount(mountpoint, server: server, timeout: 20)

        let selection = checks.flatMap { ["--check", $0] } + skips.flatMap { ["--skip", $0] }
        print("== ferry-conformance --dir \(mountpoint) \(selection.joined(separator: " "))")
        let runner = Process()
        runner.executableURL = conformance
        runner.arguments = ["--dir", mountpoint] + selection
        try runWithDefaultSignalMask(runner)
        runner.waitUntilExit()

        print("== stopping ferry (SIGTERM)")
        let exitedCleanly = terminate(server)
        if runner.terminationReason != .exit || runner.terminationStatus != 0 {
            throw PluginFailure("conformance checks failed through ferry (exit status \(runner.terminationStatus))")
        }
        if !exitedCleanly {
            throw PluginFailure("ferry did not exit with status 0 after SIGTERM")
        }
        print("== all selected checks passed through ferry")
    }

    private func build(_ product: String, configuration: String) throws -> URL {
        var parameters = PackageManager.BuildParameters(
            configuration: configuration == "release" ? .release : .debug)
        parameters.logging = .concise
        let result = try packageManager.build(.product(product), parameters: parameters)
        guard result.succeeded else {
            print(result.logText)
            throw PluginFailure("building \(product) failed")
        }
        guard let artifact = result.builtArtifacts.first(where: {
            $0.kind == .executable && $0.url.lastPathComponent == product
        }) else {
            throw PluginFailure("building \(product) produced no executable")
        }
        return artifact.url
    }

    /// /proc/self/mounts lists the mount as soon as the kernel has it; its type is fuse.*.
    private func isFUSEMount(_ path: String) -> Bool {
        guard let mounts = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8) else {
            return false
        }
        return mounts.split(separator: "\n").contains { line in
            let fields = line.split(separator: " ")
            return fields.count > 2 && fields[1] == path && fields[2].hasPrefix("fuse")
        }
    }

    private func waitForFUSEMount(_ path: String, server: Process, timeout: TimeInterval) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !isFUSEMount(path) {
            guard server.isRunning else {
                throw PluginFailure("ferry exited with status \(server.terminationStatus) before mounting \(path)")
            }
            guard Date() < deadline else {
                throw PluginFailure("\(path) was not a FUSE mount after \(Int(timeout)) s")
            }
            usleep(50_000)
        }
    }

    /// SIGTERM and wait; true when ferry exited by itself with status 0 and left no mount.
    private func terminate(_ server: Process) -> Bool {
        guard server.isRunning else {
            return server.terminationReason == .exit && server.terminationStatus == 0
        }
        kill(server.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(20)
        while server.isRunning && Date() < deadline {
            usleep(20_000)
        }
        return !server.isRunning && server.terminationReason == .exit && server.terminationStatus == 0
    }

    /// Teardown for every exit path: never leave ferry running or a dead mount behind.
    private func stop(_ server: Process, mountpoint: String) {
        if server.isRunning && !terminate(server) && server.isRunning {
            kill(server.processIdentifier, SIGKILL)
            server.waitUntilExit()
        }
        if isFUSEMount(mountpoint) {
            umount2(mountpoint, Int32(MNT_DETACH))
        }
    }
}

/// Starts `process` with no signals blocked, as a shell would: a host that blocks SIGTERM in
/// its threads would otherwise pass that mask on and ferry could never be stopped.
private func runWithDefaultSignalMask(_ process: Process) throws {
    var empty = sigset_t(), saved = sigset_t()
    sigemptyset(&empty)
    // Foundation spawns synchronously from this thread, so the child inherits this mask.
    pthread_sigmask(SIG_SETMASK, &empty, &saved)
    defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
    try process.run()
}

struct PluginFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
