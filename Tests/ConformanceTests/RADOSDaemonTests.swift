import Foundation
import FerryTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `ferry fsck` on a source; returns its output and exit status.
func fsck(_ cluster: CephCluster, _ namespace: String, _ extra: [String] = []) throws -> ProcessOutput {
    let ferry = try BuiltProducts.require("ferry")
    return try runToCompletion(ferry, ["fsck", cluster.source(namespace)] + extra + cluster.cephArguments)
}

/// The finding lines of fsck's output ("kind: detail").
func findings(_ output: String) -> [Substring] {
    output.split(separator: "\n").filter { !$0.hasPrefix("rados://") && !$0.hasPrefix("broke ") }
}

/// Kinds a crashed server may leave (docs/backends/rados.md); anything else is a bug.
let crashLeftoverKinds = ["pending-rename", "orphan-inode", "wrong-nlink", "data-past-size", "stray-object",
                          "pending-purge", "stale-map-entry"]

func kill9(_ mount: FerryMount) {
    kill(mount.process.processIdentifier, SIGKILL)
    mount.process.waitUntilExit()
    umount2(mount.mountpoint, Int32(MNT_DETACH))
}

func runShell(_ script: String) throws -> ProcessOutput {
    try runToCompletion("/bin/bash", ["-c", script])
}

@Suite("RADOS backend: the daemon", .serialized,
       .requires(.root, .devFUSE, .ceph))
struct RADOSDaemonTests {
    @Test("Serving an unformatted namespace says so", .timeLimit(.minutes(10)))
    func unformattedNamespaceIsRefused() throws {
        let cluster = try CephCluster.shared()
        let ferry = try BuiltProducts.require("ferry")
        let mnt = try makeTemporaryDirectory("ferry-rados-unformatted")
        defer { rmdir(mnt) }
        let result = try runToCompletion(ferry, ["mount", cluster.source("never-formatted"), mnt] + cluster.cephArguments)
        #expect(!result.succeeded)
        #expect(result.output.contains("is not formatted"), "\(result.output)")
        let again = try runToCompletion(ferry, ["format", cluster.source("twice")] + cluster.cephArguments)
        #expect(again.succeeded, "\(again.output)")
        let twice = try runToCompletion(ferry, ["format", cluster.source("twice")] + cluster.cephArguments)
        #expect(!twice.succeeded && twice.output.contains("already holds"), "\(twice.output)")
    }

    @Test("Files, links and attributes persist across a daemon restart", .timeLimit(.minutes(10)))
    func persistsAcrossRestart() throws {
        let (cluster, first) = try mountFreshRADOS("persist")
        let m = first.mountpoint
        let written = try runShell("""
            set -e
            cd \(m)
            mkdir -p a/b/c
            head -c 9000000 /dev/urandom > a/b/c/big
            echo small > s && ln s a/hard && ln -s ../s a/sym
            chmod 640 s && touch -d '2001-02-03 04:05:06' s
            md5sum a/b/c/big s
            stat -c '%n %s %a %h %Y' s a/hard a/b/c/big
            """)
        try #require(written.succeeded, "\(written.output)")
        #expect(first.terminate(), "ferry did not stop on SIGTERM; log:\n\(first.log)")
        first.stop()
        let second = try FerryMount(source: cluster.source("persist"), extraArguments: ["--xattr"] + cluster.cephArguments)
        defer { second.stop() }
        let read = try runShell("""
            cd \(second.mountpoint)
            md5sum a/b/c/big s 2>&1
            stat -c '%n %s %a %h %Y' s a/hard a/b/c/big
            """)
        #expect(read.output == written.output, "before:\n\(written.output)\nafter restart:\n\(read.output)")
        #expect(try readlink(second.mountpoint + "/a/sym") == "../s")
        second.terminate()
        let check = try fsck(cluster, "persist")
        #expect(check.succeeded && findings(check.output).isEmpty, "\(check.output)")
    }

    @Test("A second daemon is refused while the first holds the lease, and takes over after it dies", .timeLimit(.minutes(10)))
    func secondDaemonRefused() throws {
        let (cluster, first) = try mountFreshRADOS("lease", extraArguments: ["--ceph-lease-seconds", "6"])
        defer { first.stop() }
        #expect(FileManager.default.createFile(atPath: first.mountpoint + "/held", contents: Data("1".utf8)))
        let ferry = try BuiltProducts.require("ferry")
        let mnt = try makeTemporaryDirectory("ferry-rados-second")
        defer { rmdir(mnt) }
        let refused = try runToCompletion(ferry, ["mount", cluster.source("lease"), mnt] + cluster.cephArguments)
        #expect(!refused.succeeded)
        #expect(refused.output.contains("being served by another ferry"), "\(refused.output)")
        let fsckRefused = try fsck(cluster, "lease")
        #expect(fsckRefused.status == 2 && fsckRefused.output.contains("being served by another ferry"), "\(fsckRefused.output)")

        // Read-only serving needs no lease.
        let reader = try FerryMount(source: cluster.source("lease"), extraArguments: ["--readonly"] + cluster.cephArguments)
        #expect(FileManager.default.contents(atPath: reader.mountpoint + "/held") == Data("1".utf8))
        #expect(!FileManager.default.createFile(atPath: reader.mountpoint + "/nope", contents: nil))
        reader.stop()

        // The holder dies: once its lease expires, another daemon serves the export.
        kill9(first)
        let takeover = waitForTakeover(cluster.source("lease"), cluster.cephArguments)
        let second = try #require(takeover, "no daemon could take the export over after its holder died")
        #expect(FileManager.default.contents(atPath: second.mountpoint + "/held") == Data("1".utf8))
        second.stop()
    }

    @Test("A holder paused past its lease is fenced off when another daemon takes over", .timeLimit(.minutes(10)))
    func pausedHolderIsFenced() throws {
        let (cluster, first) = try mountFreshRADOS("fence", extraArguments: ["--ceph-lease-seconds", "6"])
        defer {
            kill(first.process.processIdentifier, SIGCONT)
            first.stop()
        }
        #expect(FileManager.default.createFile(atPath: first.mountpoint + "/before", contents: Data("1".utf8)))
        kill(first.process.processIdentifier, SIGSTOP)
        let takeover = waitForTakeover(cluster.source("fence"), cluster.cephArguments)
        let second = try #require(takeover, "no daemon could take the export over from a paused holder")
        defer { second.stop() }
        #expect(second.log.contains("fenced the previous holder"), "\(second.log)")
        kill(first.process.processIdentifier, SIGCONT)
        // The old holder wakes up believing it still serves: the OSDs refuse it.
        let late = try runShell("echo late > \(first.mountpoint)/after && sync \(first.mountpoint)/after")
        #expect(!late.succeeded, "the fenced holder could still write:\n\(first.log)")
        #expect(!FileManager.default.fileExists(atPath: second.mountpoint + "/after"))
        #expect(FileManager.default.contents(atPath: second.mountpoint + "/before") == Data("1".utf8))
    }

    @Test("SIGKILL during a create/rename/link/unlink/mkdir/rmdir/write storm: fsck repairs only leaks, every fsynced byte is there",
          .timeLimit(.minutes(10)))
    func crashConsistency() throws {
        let cluster = try CephCluster.shared()
        let ferry = try BuiltProducts.require("ferry")
        let formatted = try runToCompletion(ferry, ["format", cluster.source("crash")] + cluster.cephArguments)
        try #require(formatted.succeeded, "\(formatted.output)")
        let journal = try makeTemporaryDirectory("ferry-rados-crash") + "/durable"
        defer { try? FileManager.default.removeItem(atPath: (journal as NSString).deletingLastPathComponent) }
        let rounds = 10
        for round in 1...rounds {
            let mount = try FerryMount(source: cluster.source("crash"), extraArguments: cluster.cephArguments)
            let m = mount.mountpoint
            // Each durable step (fsync, or a metadata op that returned) is journaled outside
            // the mount with what must be found after the crash.
            let storm = Process()
            storm.executableURL = URL(fileURLWithPath: "/bin/bash")
            storm.arguments = ["-c", """
                cd \(m) || exit 1
                mkdir -p r\(round)/d0 r\(round)/d1 r\(round)/d2
                i=0
                while true; do
                  i=$((i+1)); d=r\(round)/d$((i % 3)); e=r\(round)/d$(((i+1) % 3)); g=r\(round)/d$(((i+2) % 3))
                  head -c $(( (RANDOM % 64) * 4096 + RANDOM )) /dev/urandom > $d/t.$i || exit 0
                  sync $d/t.$i || exit 0
                  mv $d/t.$i $e/f.$i || exit 0
                  sum=$(md5sum < $e/f.$i) || exit 0
                  echo "$e/f.$i ${sum:0:32}" >> \(journal)
                  if [ $((i % 4)) = 0 ]; then ln $e/f.$i $d/h.$i; fi
                  if [ $((i % 5)) = 0 ]; then rm -f $d/h.$((i-4)); fi
                  if [ $((i % 7)) = 0 ]; then mkdir $d/sub.$i && mv $d/sub.$i $e/sub.$i; fi
                  if [ $((i % 6)) = 0 ]; then ln -s f.$i $e/l.$i; fi
                  if [ $((i % 8)) = 0 ]; then sed -i "\\|/f.$((i-3)) |d" \(journal); rm -f $e/f.$((i-3)); fi
                  if [ $((i % 14)) = 0 ]; then rmdir r\(round)/d$(((i-6) % 3))/sub.$((i-7)) 2>/dev/null; fi
                  if [ $((i % 9)) = 0 ]; then
                    # Forget them first: from here on their contents are not promised.
                    sed -i "\\|/f.$((i-2)) |d; \\|/f.$((i-1)) |d" \(journal)
                    head -c 100000 /dev/urandom >> $d/f.$((i-1)) 2>/dev/null
                    truncate -s 5000 $g/f.$((i-2)) 2>/dev/null
                  fi
                done
                """]
            storm.standardOutput = FileHandle.nullDevice
            storm.standardError = FileHandle.nullDevice
            try runWithDefaultSignalMask(storm)
            usleep(UInt32(1_500_000 + (round * 450_000) % 2_000_000))
            kill9(mount)
            kill(storm.processIdentifier, SIGKILL)
            storm.waitUntilExit()
            mount.stop()

            let durable = ((try? String(contentsOfFile: journal, encoding: .utf8)) ?? "").split(separator: "\n")
                .filter { $0.hasPrefix("r\(round)/") }.count
            #expect(durable > 0, "round \(round): the storm made no fsynced file before the kill:\n\(mount.log)")

            let repair = try fsck(cluster, "crash", ["--repair", "--break-lease"])
            print("round \(round): \(durable) fsynced files kept; fsck --repair: \(findings(repair.output).count) finding(s)")
            #expect(repair.status == 0, "round \(round): fsck --repair failed:\n\(repair.output)")
            for line in findings(repair.output) {
                #expect(crashLeftoverKinds.contains { line.hasPrefix($0 + ":") },
                        "round \(round): fsck found what a crash cannot explain: \(line)")
            }
            let again = try fsck(cluster, "crash")
            #expect(again.succeeded && findings(again.output).isEmpty, "round \(round): second fsck not clean:\n\(again.output)")

            let check = try FerryMount(source: cluster.source("crash"), extraArguments: cluster.cephArguments)
            let verify = try verifyJournal(journal, in: check.mountpoint)
            #expect(verify.succeeded, "round \(round): fsync-acknowledged data missing:\n\(verify.output)")
            check.stop()
            if !verify.succeeded || repair.status != 0 { break }
        }
    }
}

/// Checks every "PATH MD5" line of `journal` against the file under `mountpoint`; the
/// output names each file that differs.
func verifyJournal(_ journal: String, in mountpoint: String) throws -> ProcessOutput {
    try runShell("""
        cd \(mountpoint) || exit 1
        bad=0
        while read -r path sum; do
          got=$(md5sum < "$path" 2>&1 | cut -c1-32)
          [ "$got" = "$sum" ] || { echo "lost or corrupt: $path ($got, journaled $sum)"; bad=1; }
        done < \(journal)
        exit $bad
        """)
}

/// Mounts `source` as soon as its lease can be had (within a minute), or nil.
func waitForTakeover(_ source: String, _ arguments: [String]) -> FerryMount? {
    let deadline = Date().addingTimeInterval(60)
    while Date() < deadline {
        if let mount = try? FerryMount(source: source, extraArguments: arguments) { return mount }
        sleep(1)
    }
    return nil
}

func readlink(_ path: String) throws -> String {
    try FileManager.default.destinationOfSymbolicLink(atPath: path)
}
