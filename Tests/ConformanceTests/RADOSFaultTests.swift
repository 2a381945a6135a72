import Foundation
import FerryTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// An OSD outage under a writing client, on a cluster of its own (bluestore keeps the data
/// across the OSD's restart; the shared cluster's other tests must not stall meanwhile).
@Suite("RADOS backend: OSD restart", .serialized,
       .requires(.root, .devFUSE, .ceph))
struct RADOSFaultTests {
    @Test("An OSD killed and restarted in the middle of writes: writes wait and go on, nothing is corrupt",
          .timeLimit(.minutes(10)))
    func osdRestartDuringWrites() throws {
        let cluster = try CephCluster(name: "osd-restart", store: "bluestore")
        defer { cluster.stop() }
        let ferry = try BuiltProducts.require("ferry")
        let formatted = try runToCompletion(ferry, ["format", cluster.source("outage")] + cluster.cephArguments)
        try #require(formatted.succeeded, "\(formatted.output)")
        let mount = try FerryMount(source: cluster.source("outage"), extraArguments: cluster.cephArguments)
        defer { mount.stop() }
        let work = try makeTemporaryDirectory("ferry-rados-outage")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let journal = work + "/durable", stopFile = work + "/stop"
        let writer = Process()
        writer.executableURL = URL(fileURLWithPath: "/bin/bash")
        writer.arguments = ["-c", """
            cd \(mount.mountpoint) || exit 1
            i=0
            while [ ! -e \(stopFile) ]; do
              i=$((i+1))
              head -c $(( (RANDOM % 300) * 4096 + RANDOM )) /dev/urandom > w.$i || { echo "write w.$i failed"; exit 1; }
              sync w.$i || { echo "fsync w.$i failed"; exit 1; }
              sum=$(md5sum < w.$i) || { echo "reading w.$i failed"; exit 1; }
              echo "w.$i ${sum:0:32}" >> \(journal)
            done
            """]
        let output = Pipe()
        writer.standardOutput = output
        writer.standardError = output
        try runWithDefaultSignalMask(writer)
        sleep(2)
        let before = lines(journal)
        try cluster.restartOSD(down: 4)
        // Let the writer go on past the outage, then stop it.
        var after = lines(journal)
        let deadline = Date().addingTimeInterval(90)
        while after <= before + 5 && writer.isRunning && Date() < deadline {
            usleep(200_000)
            after = lines(journal)
        }
        _ = FileManager.default.createFile(atPath: stopFile, contents: nil)
        let said = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        writer.waitUntilExit()
        #expect(writer.terminationStatus == 0, "the writer failed across the OSD restart: \(said)\nferry's log:\n\(mount.log)")
        #expect(before > 0 && after > before + 5, "no writes before (\(before)) or after (\(after)) the OSD restart")

        let verify = try verifyJournal(journal, in: mount.mountpoint)
        #expect(verify.succeeded, "files differ after the OSD restart:\n\(verify.output)")
        // Stopping writes the lease's release and ends the purge pass in progress: with the
        // cluster still settling after the restart (peering, on two loaded cores) one call may
        // wait out the RADOS operation timeout (60 s by default), so the stop gets that and more.
        #expect(mount.terminate(timeout: 90), "ferry did not stop:\n\(mount.log)")
        let check = try runToCompletion(ferry, ["fsck", cluster.source("outage")] + cluster.cephArguments)
        #expect(check.succeeded && findings(check.output).isEmpty, "\(check.output)")
    }
}

@Suite("RADOS backend: cephx", .serialized,
       .requires(.root, .devFUSE, .ceph))
struct RADOSCephxTests {
    @Test("A cephx client with its keyring formats, serves and fences; an unknown one is refused", .timeLimit(.minutes(10)))
    func cephxClientWithKeyring() throws {
        let cluster = try CephCluster(name: "cephx", store: "memstore", cephx: true)
        defer { cluster.stop() }
        let ferry = try BuiltProducts.require("ferry")
        let access = cluster.cephArguments + ["--ceph-id", "ferry", "--ceph-keyring", cluster.ferryKeyring]
        let formatted = try runToCompletion(ferry, ["format", cluster.source("x")] + access)
        try #require(formatted.succeeded, "\(formatted.output)")
        let refused = try runToCompletion(ferry, ["format", cluster.source("y"), "--ceph-id", "stranger",
                                                  "--ceph-keyring", cluster.ferryKeyring] + cluster.cephArguments)
        #expect(!refused.succeeded && refused.output.contains("client.stranger"), "\(refused.output)")

        let first = try FerryMount(source: cluster.source("x"), extraArguments: access + ["--ceph-lease-seconds", "4"])
        #expect(FileManager.default.createFile(atPath: first.mountpoint + "/f", contents: Data("cephx".utf8)))
        kill9(first)
        first.stop()
        // The next holder may fence the dead one: client.ferry has the mon capability for it.
        let mount = try #require(waitForTakeover(cluster.source("x"), access))
        defer { mount.stop() }
        #expect(FileManager.default.contents(atPath: mount.mountpoint + "/f") == Data("cephx".utf8))
        #expect(mount.log.contains("fenced the previous holder"), "\(mount.log)")
    }
}

private func lines(_ path: String) -> Int {
    ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").count
}
