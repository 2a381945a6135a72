import Foundation
import FerryTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Concurrent workloads through `ferry mount` on every backend: ferry-churn (workers
/// creating, replacing, renaming, hard-linking, deleting and listing in shared and private
/// directories while the others look up, stat and read; create/delete churn that reuses
/// inode numbers; rm -rf of 20 x 20 trees), stress-ng's file-system stressors with
/// verification (scripts/stress-fs), and unmounting and mounting the same export again.
enum Concurrency {
    /// ferry-churn on `dir`, with a fixed seed so that a failure can be replayed.
    static func churn(in dir: String, seed: Int, workers: Int = 4, ops: Int = 300) throws -> ProcessOutput {
        let program = try BuiltProducts.require("ferry-churn")
        return try runToCompletion(program, ["--dir", dir, "--workers", "\(workers)", "--ops", "\(ops)",
                                             "--seed", "\(seed)", "--seconds", "600"])
    }

    /// Passed: exit 0, the summary line, at least one operation, no failure.
    static func expectChurnPassed(_ result: ProcessOutput, on what: String, log: @autoclosure () -> String,
                                  sourceLocation: SourceLocation = #_sourceLocation) {
        let summary = result.output.split(separator: "\n").last { $0.hasPrefix("ferry-churn: ") && $0.contains(" failures") }
        let passed = result.succeeded && summary?.hasSuffix(", 0 failures") == true && summary?.contains("ferry-churn: 0 ops") == false
        #expect(passed, "ferry-churn on \(what):\n\(result.output)\nferry's log (end):\n\(log().suffix(3000))",
                sourceLocation: sourceLocation)
    }

    /// scripts/stress-fs DIR --quick, leaving out `skip`.
    static func stress(in dir: String, skip: [String] = []) throws -> ProcessOutput {
        try runToCompletion("/bin/sh", [BuiltProducts.packageRoot.path + "/scripts/stress-fs", dir, "--quick"]
                            + skip.flatMap { ["--skip", $0] })
    }

    static func expectStressPassed(_ result: ProcessOutput, on what: String, stressors: Int = 9, log: @autoclosure () -> String,
                                   sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(result.succeeded && result.output.contains("stress-fs: passed all \(stressors) stressors"),
                "stress-fs on \(what):\n\(result.output.suffix(6000))\nferry's log (end):\n\(log().suffix(3000))",
                sourceLocation: sourceLocation)
    }

    /// What is written before an unmount and must read back the same after mounting again:
    /// files of several sizes (one sparse), a hard link, a symlink, a nested directory.
    static func writeKeepsake(in dir: String) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir + "/keep/sub/deeper", withIntermediateDirectories: true)
        for (name, size) in [("empty", 0), ("small", 100), ("big", 300_000)] {
            try keepsakeBytes(name, size).write(to: URL(fileURLWithPath: dir + "/keep/sub/" + name))
        }
        try #require(link(dir + "/keep/sub/big", dir + "/keep/deeper-link") == 0, "link: \(errno)")
        try fm.createSymbolicLink(atPath: dir + "/keep/sub/deeper/sym", withDestinationPath: "../small")
        let fd = open(dir + "/keep/sparse", O_WRONLY | O_CREAT, 0o640)
        try #require(fd >= 0)
        _ = pwrite(fd, "tail", 4, 10_000_000)
        close(fd)
    }

    static func keepsakeBytes(_ name: String, _ size: Int) -> Data {
        var state = name.utf8.reduce(UInt64(7)) { $0 &* 31 &+ UInt64($1) }
        return Data((0..<size).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return UInt8(truncatingIfNeeded: state >> 33)
        })
    }

    /// Everything `writeKeepsake` wrote, checked through a new mount.
    static func expectKeepsake(in dir: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        for (name, size) in [("empty", 0), ("small", 100), ("big", 300_000)] {
            let data = FileManager.default.contents(atPath: dir + "/keep/sub/" + name)
            #expect(data == keepsakeBytes(name, size), "keep/sub/\(name) after mounting again: \(data?.count ?? -1) bytes",
                    sourceLocation: sourceLocation)
        }
        var a = stat(), b = stat()
        #expect(lstat(dir + "/keep/sub/big", &a) == 0 && lstat(dir + "/keep/deeper-link", &b) == 0)
        #expect(a.st_ino == b.st_ino && a.st_nlink == 2 && b.st_nlink == 2,
                "hard link after mounting again: inodes \(a.st_ino) \(b.st_ino), nlink \(a.st_nlink) \(b.st_nlink)",
                sourceLocation: sourceLocation)
        let target = try? FileManager.default.destinationOfSymbolicLink(atPath: dir + "/keep/sub/deeper/sym")
        #expect(target == "../small", sourceLocation: sourceLocation)
        #expect(FileManager.default.contents(atPath: dir + "/keep/sub/deeper/sym") == keepsakeBytes("small", 100))
        var s = stat()
        #expect(lstat(dir + "/keep/sparse", &s) == 0 && s.st_size == 10_000_004 && s.st_mode & 0o777 == 0o640,
                "keep/sparse: size \(s.st_size) mode \(String(s.st_mode, radix: 8))", sourceLocation: sourceLocation)
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: dir + "/keep"))?.sorted()
        #expect(entries == ["deeper-link", "sparse", "sub"], "keep/ lists \(entries ?? [])", sourceLocation: sourceLocation)
    }

    /// Mounts `source`, writes, runs ferry-churn, unmounts (SIGTERM: ferry must exit 0),
    /// mounts the same source again and checks what was written, then runs ferry-churn again.
    static func remount(source: String, arguments: [String], seed: Int, label: String,
                        transport: Transport? = nil) throws {
        func mount() throws -> FerryMount {
            try transport?.mount(source: source, extraArguments: arguments) ?? FerryMount(source: source, extraArguments: arguments)
        }
        let first = try mount()
        do {
            defer { first.stop() }
            try writeKeepsake(in: first.mountpoint)
            expectChurnPassed(try churn(in: first.mountpoint, seed: seed, workers: 2, ops: 150), on: label + " (first mount)",
                              log: first.log)
            let exited = first.terminate(timeout: 30)
            #expect(exited && first.process.terminationReason == .exit && first.process.terminationStatus == 0,
                    "the first ferry mount of \(label) did not exit 0 on SIGTERM:\n\(first.log.suffix(3000))")
        }
        let second = try mount()
        defer { second.stop() }
        try expectKeepsake(in: second.mountpoint)
        expectChurnPassed(try churn(in: second.mountpoint, seed: seed + 1, workers: 2, ops: 150), on: label + " (mounted again)",
                          log: second.log)
        #expect(try FileManager.default.contentsOfDirectory(atPath: second.mountpoint) == ["keep"],
                "ferry-churn left entries behind")
    }
}

@Suite("Concurrent workloads through ferry mount of a directory", .serialized, .requires(.root, .devFUSE))
struct ConcurrencyThroughFerryMount {
    /// prefer (the default) may hold an inode by its file handle alone, with no descriptor
    /// (a few cached descriptors force that); never holds a descriptor per inode. Then every
    /// cache mode: what is verified must hold in each.
    static let variants: [[String]] = [
        [], ["--inode-file-handles", "prefer", "--max-cached-fds", "8"], ["--inode-file-handles", "never"],
        ["--cache", "never"], ["--cache", "metadata"], ["--cache", "always"],
    ]

    /// Every cache variant with passthrough on through /dev/fuse (the cache modes decide what
    /// a passthrough open keeps of FOPEN_DIRECT_IO), and the default variant in every other mode.
    static let modeVariants: [(MountMode, [String])] =
        variants.map { (MountMode.default, $0) } + MountMode.all.filter { $0 != .default }.map { ($0, []) }

    @Test("ferry-churn passes, in every transport and passthrough mode", .timeLimit(.minutes(10)), arguments: modeVariants)
    func churnPasses(_ mode: MountMode, _ options: [String]) throws {
        let mount = try mode.mount(extraArguments: ["--xattr"] + options)
        defer { mount.stop() }
        Concurrency.expectChurnPassed(try Concurrency.churn(in: mount.mountpoint, seed: 101),
                                      on: "ferry mount (\(mode.testDescription)) \(options.joined(separator: " ")) of a directory", log: mount.log)
        #expect(mount.process.isRunning, "ferry exited:\n\(mount.log)")
    }

    @Test("stress-ng's file-system stressors pass, in every transport and passthrough mode", .timeLimit(.minutes(10)),
          .requires(.stressNG), arguments: MountMode.all)
    func stressNGPasses(_ mode: MountMode) throws {
        let mount = try mode.mount()
        defer { mount.stop() }
        Concurrency.expectStressPassed(try Concurrency.stress(in: mount.mountpoint), on: "ferry mount (\(mode.testDescription)) of a directory",
                                       log: mount.log)
    }

    @Test("Unmounting and mounting the same directory again keeps its content, in every transport and passthrough mode",
          .timeLimit(.minutes(10)), arguments: MountMode.all)
    func remountKeepsContent(_ mode: MountMode) throws {
        let source = try makeTemporaryDirectory("ferry-remount-src")
        defer { try? FileManager.default.removeItem(atPath: source) }
        try Concurrency.remount(source: source, arguments: ["--xattr", "--passthrough", mode.passthrough ? "on" : "off"], seed: 111,
                                label: "a directory (\(mode.testDescription))", transport: mode.transport)
    }
}

@Suite("Concurrent workloads through ferry mount nfs://", .serialized, .requires(.root, .devFUSE, .ganesha))
struct ConcurrencyThroughNFSMount {
    /// A distinct seed per version, so each version's run differs.
    static func seed(_ base: Int, _ version: NFSTestVersion) -> Int {
        base + NFSTestVersion.allCases.firstIndex(of: version)!
    }

    @Test("ferry-churn passes", .timeLimit(.minutes(10)), arguments: NFSTestVersion.allCases)
    func churnPasses(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let mount = try FerryMount(source: server.url(try server.makeExport("churn-v\(version)"), version: version))
            defer { mount.stop() }
            Concurrency.expectChurnPassed(try Concurrency.churn(in: mount.mountpoint, seed: Self.seed(200, version)),
                                          on: "ferry mount of NFSv\(version)", log: mount.log)
        }
    }

    @Test("stress-ng's file-system stressors pass", .timeLimit(.minutes(10)), .requires(.stressNG), arguments: NFSTestVersion.allCases)
    func stressNGPasses(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let mount = try FerryMount(source: server.url(try server.makeExport("stress-v\(version)"), version: version))
            defer { mount.stop() }
            Concurrency.expectStressPassed(try Concurrency.stress(in: mount.mountpoint), on: "ferry mount of NFSv\(version)",
                                           log: mount.log)
        }
    }

    @Test("Unmounting and mounting the same export again keeps its content", .timeLimit(.minutes(10)),
          arguments: NFSTestVersion.allCases)
    func remountKeepsContent(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let url = server.url(try server.makeExport("remount-v\(version)"), version: version)
            try Concurrency.remount(source: url, arguments: [], seed: Self.seed(210, version), label: "NFSv\(version)")
        }
    }
}

@Suite("Concurrent workloads through ferry mount rados://", .serialized, .requires(.root, .devFUSE, .ceph))
struct ConcurrencyThroughRADOSMount {
    @Test("ferry-churn passes", .timeLimit(.minutes(10)))
    func churnPasses() throws {
        let (_, mount) = try mountFreshRADOS("churn-mount")
        defer { mount.stop() }
        // Fewer operations: every metadata change is a RADOS write (the 20 x 20 trees stay).
        Concurrency.expectChurnPassed(try Concurrency.churn(in: mount.mountpoint, seed: 301, ops: 150), on: "ferry mount of rados://",
                                      log: mount.log)
    }

    @Test("stress-ng's file-system stressors pass", .timeLimit(.minutes(10)), .requires(.stressNG))
    func stressNGPasses() throws {
        let (_, mount) = try mountFreshRADOS("stress-mount")
        defer { mount.stop() }
        // Without the link stressor (each of its operations is thousands of links, minutes of
        // RADOS writes); ferry-churn hard-links on RADOS too.
        Concurrency.expectStressPassed(try Concurrency.stress(in: mount.mountpoint, skip: ["link"]), on: "ferry mount of rados://",
                                       stressors: 8, log: mount.log)
    }

    @Test("Unmounting and mounting the same namespace again keeps its content", .timeLimit(.minutes(10)))
    func remountKeepsContent() throws {
        let cluster = try CephCluster.shared()
        let ferry = try BuiltProducts.require("ferry")
        let formatted = try runToCompletion(ferry, ["format", cluster.source("remount-mount")] + cluster.cephArguments)
        try #require(formatted.succeeded, "ferry format: \(formatted.output)")
        try Concurrency.remount(source: cluster.source("remount-mount"), arguments: cluster.cephArguments, seed: 311, label: "rados://")
    }
}
