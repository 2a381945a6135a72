import Foundation
import FerryTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// FUSE passthrough through `ferry mount` on the host kernel (6.9+): the kernel reads,
/// writes and maps open files through the host files ferry opened, and ferry counts those
/// opens (`passthrough_opens` in its log at unmount). Where the export must see every byte,
/// or the kernel refuses the backing files, ferry serves them itself; `--passthrough on`
/// refuses to start there instead.
@Suite(.serialized, .requires(.root, .devFUSE))
struct PassthroughMountTests {
    static let page = 4096

    /// Deterministic bytes for `seed`.
    static func pattern(_ seed: Int, count: Int) -> [UInt8] {
        var state = UInt64(seed) &* 0x9E37_79B9_7F4A_7C15 | 1
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return UInt8(truncatingIfNeeded: state >> 33)
        }
    }

    static func contents(_ path: String) -> [UInt8]? {
        FileManager.default.contents(atPath: path).map { [UInt8]($0) }
    }

    /// The counter ferry logs when it unmounts: stops ferry and reads it.
    static func unmountedCounter(_ name: String, _ mount: FerryMount) throws -> Int {
        let exited = mount.terminate(timeout: 30)
        try #require(exited, "ferry did not exit on SIGTERM:\n\(mount.log.suffix(3000))")
        let log = mount.log
        let line = try #require(log.split(separator: "\n").last { $0.contains(" unmounted") }, "no unmounted line:\n\(log)")
        let field = try #require(line.split(separator: " ").first { $0.hasPrefix(name + "=") }, "no \(name) in: \(line)")
        return try #require(Int(field.dropFirst(name.count + 1)))
    }

    /// Files of several sizes written and read back through the mount, read from the source
    /// directory, one written through a shared mapping, and one written by four processes at
    /// once (each its own MiB) then read by four at once.
    static func exerciseData(in mount: FerryMount) throws {
        let dir = mount.mountpoint
        for (index, size) in [0, 1, 4095, 65537, 3 << 20].enumerated() {
            let bytes = pattern(index, count: size)
            try Data(bytes).write(to: URL(fileURLWithPath: dir + "/file\(index)"))
            #expect(contents(dir + "/file\(index)") == bytes, "file\(index) through the mount")
            #expect(contents(mount.source + "/file\(index)") == bytes, "file\(index) in the source")
        }

        // A shared mapping: written through it, seen in the source; then the source changed
        // behind the mount is what a new mapping shows.
        let path = dir + "/mapped"
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        try #require(fd >= 0, "open: \(errno)")
        #expect(ftruncate(fd, off_t(2 * page)) == 0)
        let map = mmap(nil, 2 * page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        try #require(map != nil && map != MAP_FAILED, "mmap MAP_SHARED through passthrough: \(errno)")
        // Sound: the mapping is 2 pages long and stays mapped until munmap below.
        let mapped = map!.bindMemory(to: UInt8.self, capacity: 2 * page)
        let written = pattern(77, count: 2 * page)
        for i in 0..<(2 * page) { mapped[i] = written[i] }
        #expect(msync(map, 2 * page, MS_SYNC) == 0, "msync: \(errno)")
        #expect(munmap(map, 2 * page) == 0)
        close(fd)
        #expect(contents(mount.source + "/mapped") == written, "what went through the mapping is in the source")

        // Four writers at once into one file, each its own MiB, then four readers at once.
        let scratch = try makeTemporaryDirectory("ferry-passthrough-parts")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let mib = 1 << 20
        var whole: [UInt8] = []
        for part in 0..<4 {
            let bytes = pattern(100 + part, count: mib)
            whole += bytes
            try Data(bytes).write(to: URL(fileURLWithPath: scratch + "/part\(part)"))
        }
        #expect(FileManager.default.createFile(atPath: dir + "/shared", contents: nil))
        let writers = try (0..<4).map { part -> Process in
            try started("/bin/dd", ["if=\(scratch)/part\(part)", "of=\(dir)/shared", "bs=\(mib)", "seek=\(part)",
                                    "conv=notrunc", "status=none"])
        }
        for writer in writers {
            writer.waitUntilExit()
            #expect(writer.terminationStatus == 0, "dd into the shared file failed")
        }
        #expect(contents(dir + "/shared") == whole, "the shared file through the mount")
        #expect(contents(mount.source + "/shared") == whole, "the shared file in the source")
        let readers = try (0..<4).map { part -> Process in
            try started("/usr/bin/cmp", ["-s", "-n", "\(mib)", "-i", "\(part * mib):0", dir + "/shared", scratch + "/part\(part)"])
        }
        for reader in readers {
            reader.waitUntilExit()
            #expect(reader.terminationStatus == 0, "a reader saw other bytes than were written")
        }
    }

    static func started(_ executable: String, _ arguments: [String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        try process.run()
        return process
    }

    /// auto and on, and the cache modes whose open flags passthrough must leave out
    /// (KEEP_CACHE, DIRECT_IO).
    @Test("Data written and read through passthrough is correct, and the opens are counted", .timeLimit(.minutes(5)),
          arguments: [["--passthrough", "auto"], ["--passthrough", "on", "--cache", "always"],
                      ["--passthrough", "on", "--cache", "never"]])
    func dataThroughPassthroughIsCorrect(options: [String]) throws {
        let mount = try FerryMount(extraArguments: options)
        defer { mount.stop() }
        #expect(mount.log.contains("passthrough=true"), "the session did not agree FUSE_PASSTHROUGH:\n\(mount.log)")
        try Self.exerciseData(in: mount)
        // 5 files written then read (10 opens at least), the mapping, 4 writers, 4 readers.
        #expect(try Self.unmountedCounter("passthrough_opens", mount) >= 19)
        #expect(try Self.unmountedCounter("passthrough_fallbacks", mount) == 0)
        // The kernel moved every byte itself: none went through ferry.
        #expect(try Self.unmountedCounter("bytes_written", mount) == 0)
        #expect(try Self.unmountedCounter("bytes_read", mount) == 0)
    }

    @Test("--passthrough off serves every byte itself", .timeLimit(.minutes(5)))
    func offMeansNoPassthroughOpens() throws {
        let mount = try FerryMount(extraArguments: ["--passthrough", "off"])
        defer { mount.stop() }
        try Self.exerciseData(in: mount)
        #expect(!mount.log.contains("passthrough=true"), "\(mount.log)")
        #expect(try Self.unmountedCounter("passthrough_opens", mount) == 0)
        #expect(try Self.unmountedCounter("bytes_written", mount) >= 7 << 20)   // 3 MiB + 4 MiB and more
    }

    @Test("An export with a byte quota falls back to the daemon, which enforces it", .timeLimit(.minutes(5)))
    func aQuotaExportFallsBack() throws {
        let mount = try FerryMount(extraArguments: ["--quota-bytes", "\(4 << 20)"])
        defer { mount.stop() }
        #expect(mount.log.contains("passthrough off: the export has a byte quota"), "\(mount.log)")
        let bytes = Self.pattern(5, count: 3 << 20)
        try Data(bytes).write(to: URL(fileURLWithPath: mount.mountpoint + "/within"))
        #expect(Self.contents(mount.mountpoint + "/within") == bytes)
        // Every write reaches the daemon, so the quota holds.
        #expect(throws: (any Error).self) {
            try Data(Self.pattern(6, count: 2 << 20)).write(to: URL(fileURLWithPath: mount.mountpoint + "/beyond"))
        }
        #expect(try Self.unmountedCounter("passthrough_opens", mount) == 0)
        #expect(try Self.unmountedCounter("bytes_written", mount) >= 3 << 20)
    }

    /// Runs `ferry mount ARGUMENTS SOURCE MNT` expecting it to refuse: its exit status and output.
    static func refusedMount(_ arguments: [String], source: String) throws -> (status: Int32, output: String) {
        let mountpoint = try makeTemporaryDirectory("ferry-passthrough-mnt")
        defer { rmdir(mountpoint) }
        let log = mountpoint + ".log"
        defer { unlink(log) }
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try BuiltProducts.require("ferry"))
        process.arguments = ["mount"] + arguments + [source, mountpoint]
        let handle = FileHandle(forWritingAtPath: log)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        let deadline = Date().addingTimeInterval(30)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            process.waitUntilExit()
            umount2(mountpoint, Int32(MNT_DETACH))
            Issue.record("ferry mount \(arguments) kept running instead of refusing")
        }
        return (process.terminationStatus, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
    }

    @Test("--passthrough on refuses an export that must see every byte, saying why", .timeLimit(.minutes(2)))
    func onRefusesAQuotaExport() throws {
        let source = try makeTemporaryDirectory("ferry-passthrough-src")
        defer { try? FileManager.default.removeItem(atPath: source) }
        for (arguments, reason) in [(["--quota-bytes", "1000000"], "byte quota"), (["--writeback"], "writeback cache")] {
            let result = try Self.refusedMount(["--passthrough", "on"] + arguments, source: source)
            #expect(result.status == 2, "\(result.output)")
            #expect(result.output.contains("--passthrough on: ") && result.output.contains(reason), "\(result.output)")
        }
    }

    /// A ferry mount with passthrough counts as a stacked file system (max_stack_depth 1): a
    /// second ferry mount exporting a directory of the first cannot hand its files to the
    /// kernel (ELOOP). With `on` it refuses to start; with `auto` it serves them itself.
    @Test("max_stack_depth: an export on a passthrough mount falls back, and `on` says why", .timeLimit(.minutes(5)))
    func anExportOnAPassthroughMountFallsBack() throws {
        let lower = try FerryMount(extraArguments: ["--passthrough", "on"])
        defer { lower.stop() }
        let stacked = lower.mountpoint + "/stacked"
        try FileManager.default.createDirectory(atPath: stacked, withIntermediateDirectories: false)

        let refused = try Self.refusedMount(["--passthrough", "on"], source: stacked)
        #expect(refused.status == 2, "\(refused.output)")
        #expect(refused.output.contains("stacking file system") && refused.output.contains("ELOOP"), "\(refused.output)")

        let upper = try FerryMount(source: stacked, extraArguments: ["--passthrough", "auto"])
        defer { upper.stop() }
        let bytes = Self.pattern(9, count: 300_000)
        try Data(bytes).write(to: URL(fileURLWithPath: upper.mountpoint + "/file"))
        #expect(Self.contents(upper.mountpoint + "/file") == bytes)
        #expect(Self.contents(lower.source + "/stacked/file") == bytes)
        #expect(upper.log.contains("the kernel refused a backing file"), "\(upper.log)")
        #expect(try Self.unmountedCounter("passthrough_opens", upper) == 0)
        #expect(try Self.unmountedCounter("passthrough_fallbacks", upper) >= 2)
        #expect(try Self.unmountedCounter("bytes_written", upper) == 300_000)
    }
}
