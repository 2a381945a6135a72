import Foundation
import FerryTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The check names `ferry-conformance --list` prints, or one sentinel that fails loudly when the
/// program is not built (an empty argument list would silently run nothing).
let conformanceCheckNames: [String] = {
    guard let program = BuiltProducts.path(of: "ferry-conformance"),
          let listed = try? runToCompletion(program, ["--list"]), listed.succeeded
    else { return [missingProgramSentinel] }
    return listed.output.split(separator: "\n").map(String.init)
}()

let missingProgramSentinel = "<ferry-conformance not built>"

/// Checks that need root on the host (chown, setuid children); skipped for a non-root baseline.
let rootOnlyChecks = ["chmod_chown", "other_uid_refused", "setgid_directory", "write_clears_setuid",
                      "chown_supplementary_group", "chown_clears_setuid", "truncate_clears_setuid",
                      "unlinked_fd_attributes"]

/// How many entries `readdir_churn` lists on a RADOS namespace. 100,000 everywhere else on the
/// host; a RADOS namespace creates and removes about 100 entries a second here (every
/// metadata change is a synchronous write to the OSD, one at a time), so 100,000 would take
/// over 20 minutes of the suite.
let radosDirectoryEntries = 20_000

/// `entries` overrides the 100,000 entries of `readdir_churn`.
func runConformance(in directory: String, _ selection: [String], entries: Int? = nil) throws -> ProcessOutput {
    let program = try BuiltProducts.require("ferry-conformance")
    return try runToCompletion(program, ["--dir", directory] + selection + (entries.map { ["--entries", "\($0)"] } ?? []))
}

@Suite("POSIX conformance through ferry mount", .serialized,
       .requires(.root, .devFUSE))
struct ConformanceThroughFerryMount {
    /// In every mode: the /dev/fuse loop and io_uring rings, each with FUSE passthrough (the
    /// kernel reads and writes the host files itself) and without (every byte through ferry).
    @Test("Check passes through a live ferry mount, in every transport and passthrough mode", .timeLimit(.minutes(10)),
          arguments: MountMode.all, conformanceCheckNames)
    func check(_ mode: MountMode, _ name: String) throws {
        try #require(name != missingProgramSentinel, "ferry-conformance is not built")
        let mount = try SharedMount.get(mode)
        let result = try runConformance(in: mount.mountpoint, ["--check", name])
        #expect(result.succeeded,
                "\(name) through ferry (\(mode.testDescription), source \(mount.source)):\n\(result.output)")
        if result.output.hasPrefix("skip ") {
            print("note: \(result.output.split(separator: "\n").first ?? "")")
        }
    }
}

@Test("Every check passes on a native directory (proves the checks themselves)",
      .timeLimit(.minutes(10)))
func nativeDirectoryBaseline() throws {
    let dir = try makeTemporaryDirectory("ferry-conformance-native")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let skips = geteuid() == 0 ? [] : rootOnlyChecks.flatMap { ["--skip", $0] }
    let result = try runConformance(in: dir, skips)
    #expect(result.succeeded, "native baseline in \(dir):\n\(result.output)")
    #expect(result.output.contains(" passed, 0 failed"), "no summary line:\n\(result.output)")
}

@Test("SIGTERM unmounts and ferry exits 0", .timeLimit(.minutes(10)),
      .requires(.root, .devFUSE))
func sigtermUnmountsCleanly() throws {
    let mount = try FerryMount()
    defer { mount.stop() }
    // Confined by default: the filter (whose allowlist has umount2) is what the unmount runs under.
    let status = try String(contentsOfFile: "/proc/\(mount.process.processIdentifier)/status", encoding: .utf8)
    #expect(status.contains("Seccomp:\t2\n") && status.contains("NoNewPrivs:\t1\n"), "\(status)")
    #expect(FileManager.default.createFile(atPath: mount.mountpoint + "/alive", contents: Data("x".utf8)))
    let exited = mount.terminate(timeout: 20)
    try #require(exited, "ferry still running 20 s after SIGTERM; log:\n\(mount.log)")
    let how = mount.process.terminationReason == .exit ? "status" : "signal"
    #expect(mount.process.terminationReason == .exit && mount.process.terminationStatus == 0,
            "ferry ended with \(how) \(mount.process.terminationStatus); log:\n\(mount.log)")
    #expect(!isFUSEMount(mount.mountpoint), "\(mount.mountpoint) is still a FUSE mount after SIGTERM")
    #expect(FileManager.default.fileExists(atPath: mount.source + "/alive"),
            "a file written through the mount is missing from the source")
}
