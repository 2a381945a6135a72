import FerryTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A real Linux guest (Debian's kernel, busybox, under QEMU TCG) mounts an export through
/// vhost-user-fs-pci served by `ferry virtiofsd`, and by the reference virtiofsd.
@Suite("Real Linux guest over vhost-user", .serialized,
       .requires(.root, .qemu))
struct GuestTests {
    /// The host POSIX conformance checks, run inside the guest on Ferry's export and, in the
    /// same test, on the reference virtiofsd's: everything passes on Ferry, and nothing that
    /// passes on the reference fails on Ferry.
    @Test
    func theConformanceChecksPassInAGuestOnFerry() async throws {
        try await GuestSlots.run(minutes: 20) {
            let command = guestConformanceCommand
            let ferryExport = try makeTemporaryDirectory("ferry-guest-export")
            let ferry = try Daemon.ferry(export: ferryExport, extra: ["--xattr"])
            let onFerry = try Guest.run(socket: ferry.socket, command: command, timeout: 900)
            #expect(ferry.stop() == 0, "ferry virtiofsd log:\n\(ferry.log)")
            let ferryResults = conformanceResults(onFerry.output)
            #expect(ferryResults.count >= 40, "too few checks ran:\n\(onFerry.log)")
            let failed = ferryResults.filter { !$0.value }.keys.sorted()
            #expect(failed.isEmpty, "failed on Ferry: \(failed)\n\(onFerry.output)")
            #expect(onFerry.status == 0)

            guard Guest.referenceAvailable else { return }
            let referenceExport = try makeTemporaryDirectory("virtiofsd-guest-export")
            let reference = try Daemon.reference(export: referenceExport, extra: ["-o", "xattr"])
            let onReference = try Guest.run(socket: reference.socket, command: command, timeout: 900)
            reference.stop()
            let referenceResults = conformanceResults(onReference.output)
            let regressions = referenceResults.filter { $0.value && ferryResults[$0.key] != true }.keys.sorted()
            #expect(regressions.isEmpty, "pass on the reference virtiofsd but not on Ferry: \(regressions)")
            let referenceFailures = referenceResults.filter { !$0.value }.keys.sorted()
            // Recorded for the reader: what the reference gets wrong that Ferry gets right.
            print("reference virtiofsd failed: \(referenceFailures)")
        }
    }

    /// The reference exits when its guest goes; Ferry keeps listening for the next one.
    @Test
    func aSecondGuestBootsAgainstTheSameDaemon() async throws {
        try await GuestSlots.run(minutes: 10) {
            let export = try makeTemporaryDirectory("ferry-guest-export")
            try "from the host\n".write(toFile: export + "/host-hello.txt", atomically: false, encoding: .utf8)
            let ferry = try Daemon.ferry(export: export)
            let first = try Guest.run(socket: ferry.socket, command: "sh /etc/ferry/smoke.sh", timeout: 120)
            #expect(first.status == 0, "\(first.log)")
            #expect(first.output.contains("from the host"))
            #expect(try String(contentsOfFile: export + "/guest-hello.txt", encoding: .utf8) == "hello from the ferry guest\n")
            #expect(ferry.isRunning)
            let second = try Guest.run(socket: ferry.socket, command: "cat /mnt/guest-hello.txt && echo second > /mnt/second.txt", timeout: 120)
            #expect(second.status == 0, "\(second.log)")
            #expect(second.output.contains("hello from the ferry guest"))
            #expect(try String(contentsOfFile: export + "/second.txt", encoding: .utf8) == "second\n")
            #expect(ferry.stop() == 0, "\(ferry.log)")
        }
    }

    /// QEMU killed with SIGKILL in the middle of writes: Ferry drops that connection and
    /// serves the next guest.
    @Test
    func aKilledQEMULeavesFerryServing() async throws {
        try await GuestSlots.run(minutes: 10) {
            let export = try makeTemporaryDirectory("ferry-guest-export")
            let ferry = try Daemon.ferry(export: export)
            let pidfile = try makeTemporaryDirectory("ferry-guest-pid") + "/qemu.pid"
            let writer = "i=0; while true; do dd if=/dev/zero of=/mnt/w$((i % 4)) bs=64k count=16 conv=fsync 2>/dev/null; i=$((i+1)); echo wrote $i; done"
            // Kill QEMU once the guest is busy writing.
            let killer = Thread {
                let deadline = Date().addingTimeInterval(90)
                while Date() < deadline {
                    if let pid = (try? String(contentsOfFile: pidfile, encoding: .utf8)).flatMap({ Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }),
                       FileManager.default.fileExists(atPath: export + "/w1") {
                        usleep(500_000)
                        kill(pid, SIGKILL)
                        return
                    }
                    usleep(100_000)
                }
            }
            killer.start()
            let killed = try Guest.run(socket: ferry.socket, command: writer, timeout: 120, pidfile: pidfile)
            #expect(killed.status == 125, "QEMU should have died without an exit marker:\n\(killed.log)")
            #expect(ferry.isRunning, "ferry died with its guest:\n\(ferry.log)")
            let next = try Guest.run(socket: ferry.socket, command: "ls /mnt && echo after > /mnt/after.txt", timeout: 120)
            #expect(next.status == 0, "\(next.log)")
            #expect(FileManager.default.fileExists(atPath: export + "/after.txt"))
            #expect(ferry.stop() == 0, "\(ferry.log)")
        }
    }

    /// Data written and fsynced in one boot is read back intact after Ferry itself restarts.
    @Test
    func fsyncedDataSurvivesADaemonRestart() async throws {
        try await GuestSlots.run(minutes: 10) {
            let export = try makeTemporaryDirectory("ferry-guest-export")
            let socketDir = try makeTemporaryDirectory("ferry-guest-sock")
            let socket = socketDir + "/vhost.sock"
            let first = try Daemon.ferry(export: export, socket: socket)
            let write = try Guest.run(socket: socket, command:
                "dd if=/dev/urandom of=/mnt/data bs=64k count=32 conv=fsync 2>/dev/null && md5sum /mnt/data", timeout: 120)
            #expect(write.status == 0, "\(write.log)")
            #expect(first.stop() == 0, "\(first.log)")
            let second = try Daemon.ferry(export: export, socket: socket)
            let read = try Guest.run(socket: socket, command: "md5sum /mnt/data", timeout: 120)
            #expect(read.status == 0, "\(read.log)")
            let digest = { (s: String) in s.split(separator: "\n").first { $0.hasSuffix("/mnt/data") }.map { String($0.prefix(32)) } }
            #expect(digest(write.output) != nil && digest(write.output) == digest(read.output))
            #expect((try FileManager.default.attributesOfItem(atPath: export + "/data")[.size] as? Int) == 2 << 20)
            #expect(second.stop() == 0, "\(second.log)")
        }
    }

    /// Several request queues (one per guest CPU) served at once.
    @Test
    func severalRequestQueuesServeAGuest() async throws {
        try await GuestSlots.run(minutes: 10) {
            let export = try makeTemporaryDirectory("ferry-guest-export")
            let ferry = try Daemon.ferry(export: export)
            let parallel = "for i in 1 2 3 4; do (dd if=/dev/zero of=/mnt/q$i bs=64k count=32 2>/dev/null; ls -la /mnt > /dev/null) & done; wait; ls /mnt | wc -l"
            let run = try Guest.run(socket: ferry.socket, command: parallel, timeout: 180, queues: 4, smp: 2)
            #expect(run.status == 0, "\(run.log)")
            for i in 1...4 {
                #expect((try FileManager.default.attributesOfItem(atPath: export + "/q\(i)")[.size] as? Int) == 2 << 20)
            }
            #expect(ferry.stop() == 0, "\(ferry.log)")
        }
    }
}
