import FerryTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A real Linux guest on `ferry virtiofsd --source=nfs://…` against the shared nfs-ganesha
/// (scripts/nfs): the conformance checks, a server restart between fsync and read-back, and
/// a server outage.
@Suite("Real Linux guest over vhost-user on an NFS export", .serialized,
       .requires(.root, .qemu, .ganesha))
struct NFSGuestTests {
    /// `ferry virtiofsd` serving `url`.
    static func daemon(_ url: String) throws -> Daemon { try Daemon.ferry(source: url) }

    /// Every check passes in a 6.12 guest (2 vCPUs, 4 queues), except those NFS cannot express, which must fail the
    /// way docs/backends/nfs.md says.
    @Test(arguments: NFSTestVersion.allCases)
    func theConformanceChecksPassInAGuestOnAnNFSExport(version: NFSTestVersion) async throws {
        try await GuestSlots.run(minutes: 15) {
            let server = try NFSTestServer.shared()
            try await server.shared {
                let export = try server.makeExport("guest-conformance-v\(version)")
                let ferry = try NFSGuestTests.daemon(server.url(export, version: version))
                let run = try Guest.run(socket: ferry.socket, command: guestConformanceCommand, timeout: 900, machine: .linux612)
                #expect(ferry.stop() == 0, "ferry virtiofsd log:\n\(ferry.log)")
                let results = conformanceResults(run.output)
                #expect(results.count >= 40, "too few checks ran:\n\(run.log)")
                let unsupported = NFSTestServer.unsupportedChecks[version] ?? [:]
                let failed = results.filter { !$0.value && unsupported[$0.key] == nil }.keys.sorted()
                #expect(failed.isEmpty, "failed on NFSv\(version): \(failed)\n\(run.output)")
                let nowPassing = unsupported.keys.filter { results[$0] == true }.sorted()
                #expect(nowPassing.isEmpty, "listed as unsupported but passing: \(nowPassing)")
            }
        }
    }

    /// The guest writes and fsyncs one file, and writes a second one without fsync; the
    /// server restarts (a new write verifier); the guest then fsyncs the second file and
    /// reads both back from the server: every byte is there.
    @Test(arguments: [NFSTestVersion.v3, .v4_0, .v4_1])
    func fsyncedDataSurvivesAServerRestart(version: NFSTestVersion) async throws {
        try await GuestSlots.run(minutes: 10) {
            let server = try NFSTestServer.shared()
            try await server.exclusive {
                let export = try server.makeExport("guest-restart-v\(version)")
                let ferry = try NFSGuestTests.daemon(server.url(export, version: version))
                defer { ferry.stop() }
                let restarter = Restarter(export: export, server: server, marker: "written", then: "restarted")
                let command = """
                    dd if=/dev/urandom of=/mnt/synced bs=64k count=32 conv=fsync 2>/dev/null
                    dd if=/dev/urandom of=/mnt/later bs=64k count=32 2>/dev/null
                    md5sum /mnt/synced /mnt/later > /tmp/before
                    echo > /mnt/written
                    i=0; until [ -e /mnt/restarted ]; do sleep 1; i=$((i+1)); [ $i -gt 120 ] && echo no-restart && break; done
                    sync /mnt/later
                    echo 3 > /proc/sys/vm/drop_caches
                    md5sum /mnt/synced /mnt/later > /tmp/after
                    cat /tmp/before /tmp/after
                    cmp /tmp/before /tmp/after && echo SAME
                    """
                let run = try Guest.run(socket: ferry.socket, command: command, timeout: 240)
                restarter.wait()
                #expect(restarter.error == nil, "\(restarter.error.map { "\($0)" } ?? "")")
                #expect(run.status == 0, "\(run.log)\nferry:\n\(ferry.log)")
                #expect(run.output.contains("SAME"), "read-back differs from what was written:\n\(run.output)\nferry:\n\(ferry.log)")
                #expect(!run.output.contains("no-restart"))
                #expect(ferry.isRunning)
            }
        }
    }

    /// The server stops: the guest's next request fails with EIO once the export's timeout
    /// (3 s here) has passed, Ferry keeps running, and it serves again once the server is back.
    @Test(arguments: [NFSTestVersion.v3, .v4_0, .v4_1])
    func aStoppedServerGivesEIOAndFerryServesAgainWhenItReturns(version: NFSTestVersion) async throws {
        try await GuestSlots.run(minutes: 10) {
            let server = try NFSTestServer.shared()
            try await server.exclusive {
                let export = try server.makeExport("guest-outage-v\(version)")
                let ferry = try NFSGuestTests.daemon(server.url(export, version: version, ["timeout=3"]))
                defer { ferry.stop() }
                // The guest only creates probe files, one after another, until one fails. Stop the
                // server once a few exist; start it again after Ferry has failed a request (it logs
                // each one), and leave a file to tell the guest.
                let outage = Thread {
                    let deadline = Date().addingTimeInterval(180)
                    while !FileManager.default.fileExists(atPath: export + "/probe3") && Date() < deadline { usleep(100_000) }
                    try? server.stop()
                    while !ferry.log.contains("unreachable") && !ferry.log.contains("did not answer") && Date() < deadline {
                        usleep(100_000)
                    }
                    try? server.start()
                    _ = FileManager.default.createFile(atPath: export + "/back", contents: Data("back\n".utf8))
                }
                outage.start()
                let command = """
                    i=0; while echo y > /mnt/probe$i 2>/tmp/err; do i=$((i+1)); sleep 0.2; [ $i -gt 1000 ] && break; done
                    echo "probe $i failed: $(cat /tmp/err)"
                    j=0; until cat /mnt/back 2>/dev/null; do j=$((j+1)); sleep 1; [ $j -gt 120 ] && break; done
                    echo after > /mnt/after && echo SERVED-AGAIN
                    """
                let run = try Guest.run(socket: ferry.socket, command: command, timeout: 300)
                while outage.isExecuting { usleep(100_000) }
                #expect(run.status == 0, "\(run.log)\nferry:\n\(ferry.log)")
                #expect(run.output.contains("Input/output error"), "no EIO while the server was down:\n\(run.output)\nferry:\n\(ferry.log)")
                #expect(run.output.contains("SERVED-AGAIN"), "\(run.output)")
                #expect(FileManager.default.fileExists(atPath: export + "/after"))
                #expect(ferry.isRunning, "ferry died during the outage:\n\(ferry.log)")
            }
        }
    }
}

/// Restarts the NFS server when `marker` appears in `export`, then creates `then` there.
/// @unchecked Sendable: `thread` is set in init; `error` is written by that thread and read only after
/// `wait()` has seen it finish.
final class Restarter: @unchecked Sendable {
    private var thread: Thread!
    var error: Error?

    init(export: String, server: NFSTestServer, marker: String, then: String) {
        thread = Thread { [self] in
            let deadline = Date().addingTimeInterval(180)
            while !FileManager.default.fileExists(atPath: export + "/" + marker) && Date() < deadline { usleep(100_000) }
            do {
                try server.stop()
                try server.start()
            } catch { self.error = error }
            _ = FileManager.default.createFile(atPath: export + "/" + then, contents: Data())
        }
        thread.start()
    }

    func wait() { while thread.isExecuting || !thread.isFinished { usleep(100_000) } }
}
