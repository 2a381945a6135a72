import FerryTestSupport
import Foundation
import Testing

/// A guest unmounts its export and mounts the same tag again, several times in one boot
/// (each unmount is a FUSE DESTROY, each mount a new INIT), on `ferry virtiofsd` and on an
/// export of `ferry serve`, with the 6.1 guest and the 6.12 one (2 vCPUs, 4 queues).
@Suite(.serialized, .requires(.root, .qemu))
struct RemountGuestTests {
    static let rounds = 4

    /// Writes, unmounts, mounts again and checks everything written so far, `rounds` times.
    static let command = """
        cd /; tag=$(sed -n 's/.*ferry\\.tag=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
        dd if=/dev/urandom of=/mnt/data bs=64k count=8 2>/dev/null || exit 1
        sum=$(md5sum < /mnt/data)
        r=1; while [ $r -le \(rounds) ]; do
          echo "round $r" >> /mnt/rounds || { echo "write $r failed"; exit 1; }
          mkdir -p /mnt/d$r && echo $r > /mnt/d$r/f && ls -laR /mnt > /dev/null
          umount /mnt || { echo "umount $r failed"; exit 1; }
          mount -t virtiofs "$tag" /mnt || { echo "mount $r failed"; exit 1; }
          [ "$(md5sum < /mnt/data)" = "$sum" ] || { echo "data differs after mount $r"; exit 1; }
          [ "$(grep -c '^round' /mnt/rounds)" = $r ] || { echo "after mount $r: $(cat /mnt/rounds)"; exit 1; }
          [ "$(cat /mnt/d$r/f)" = $r ] || { echo "d$r/f unreadable after mount $r"; exit 1; }
          r=$((r+1))
        done
        echo "remounted \(rounds) times"
        """

    static func machine(_ kernel: GuestMachine.Kernel) -> GuestMachine {
        kernel == .linux6_1 ? .linux61 : .linux612
    }

    func expectRemounted(_ run: Guest.Run, export: String, daemonLog: @autoclosure () -> String) throws {
        #expect(run.status == 0, "guest console:\n\(run.log)\ndaemon:\n\(daemonLog())")
        #expect(run.output.contains("remounted \(Self.rounds) times"), "\(run.log)")
        let rounds = try String(contentsOfFile: export + "/rounds", encoding: .utf8)
        #expect(rounds == (1...Self.rounds).map { "round \($0)\n" }.joined())
    }

    @Test(arguments: [GuestMachine.Kernel.linux6_1, .linux6_12])
    func aGuestMountsTheSameTagAgainInOneBootOnFerryVirtiofsd(kernel: GuestMachine.Kernel) async throws {
        try await GuestSlots.run(minutes: 10) {
            let export = try makeTemporaryDirectory("ferry-guest-export")
            let ferry = try Daemon.ferry(export: export)
            let run = try Guest.run(socket: ferry.socket, command: Self.command, timeout: 300, machine: Self.machine(kernel))
            try expectRemounted(run, export: export, daemonLog: ferry.log)
            #expect(ferry.stop() == 0, "\(ferry.log)")
        }
    }

    @Test(arguments: [GuestMachine.Kernel.linux6_1, .linux6_12])
    func aGuestMountsTheSameTagAgainInOneBootOnFerryServe(kernel: GuestMachine.Kernel) async throws {
        try await GuestSlots.run(minutes: 10) {
            let (daemon, export) = try Daemon.serveOnePOSIXExport(keys: "queues = 4")
            let run = try Guest.run(socket: daemon.socket, command: Self.command, timeout: 300, machine: Self.machine(kernel))
            try expectRemounted(run, export: export, daemonLog: daemon.log)
            #expect(daemon.stop() == 0, "ferry serve log:\n\(daemon.log)")
        }
    }
}
