import FerryTestSupport
import Foundation
import Testing

/// A Linux 6.12 guest with 2 vCPUs and 4 request queues (`GuestMachine.linux612`): unlike
/// the 6.1 guest it sends requests on several queues at once, from each CPU.
@Suite("Linux 6.12 guest, 2 vCPUs, 4 request queues", .serialized,
       .requires(.root, .qemu))
struct Linux612GuestTests {
    /// Interrupts per request queue as the guest's /proc/interrupts counts them, summed over
    /// CPUs: "virtio0-requests.N" → count. The device raises a queue's interrupt only after
    /// it has answered requests on that queue.
    static func requestQueueInterrupts(_ output: String) -> [String: Int] {
        var counts: [String: Int] = [:]
        for line in output.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard let name = fields.last, name.contains("-requests.") else { continue }
            counts[String(name)] = fields.dropFirst().prefix { Int($0) != nil }.reduce(0) { $0 + Int($1)! }
        }
        return counts
    }

    @Test
    func requestsSpreadOverMoreThanOneQueue() async throws {
        try await GuestSlots.run(minutes: 10) {
            let export = try makeTemporaryDirectory("ferry-guest-export")
            let ferry = try Daemon.ferry(export: export)
            // One writer pinned to each vCPU; the 6.12 guest sends a CPU's requests on its own queue.
            let command = """
                cd /; for c in 0 1; do sh -c 'taskset -p -c $0 $$ >/dev/null || exit 1; i=0; \
                while [ $i -lt 50 ]; do echo $i > /mnt/c$0-$i && cat /mnt/c$0-$i >/dev/null && ls /mnt >/dev/null || exit 1; \
                i=$((i+1)); done' $c & done; wait; uname -r; grep requests /proc/interrupts
                """
            let run = try Guest.run(socket: ferry.socket, command: command, timeout: 300, machine: .linux612)
            #expect(ferry.stop() == 0, "ferry virtiofsd log:\n\(ferry.log)")
            #expect(run.status == 0, "\(run.log)")
            #expect(run.output.contains("6.12."), "not a 6.12 guest:\n\(run.output)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: export).count == 100)
            let interrupts = Self.requestQueueInterrupts(run.output)
            // 6.12 sets up min(request queues, vCPUs) of the device's 4 queues.
            #expect(interrupts.count == 2, "the guest should use 2 request queues:\n\(run.output)")
            let used = interrupts.filter { $0.value > 0 }
            #expect(used.count == 2, "requests were answered on one queue only: \(interrupts)\n\(run.output)")
        }
    }

    /// The guest conformance checks (as `GuestTests` runs them on 6.1) on a 6.12 guest whose
    /// requests go over two queues at once.
    @Test
    func theConformanceChecksPassOnA612GuestWithTwoCPUsAndFourQueues() async throws {
        try await GuestSlots.run(minutes: 20) {
            let export = try makeTemporaryDirectory("ferry-guest-export")
            let ferry = try Daemon.ferry(export: export, extra: ["--xattr"])
            let run = try Guest.run(socket: ferry.socket, command: guestConformanceCommand,
                                    timeout: 900, machine: .linux612)
            #expect(ferry.stop() == 0, "ferry virtiofsd log:\n\(ferry.log)")
            let results = conformanceResults(run.output)
            #expect(results.count >= 40, "too few checks ran:\n\(run.log)")
            let failed = results.filter { !$0.value }.keys.sorted()
            #expect(failed.isEmpty, "failed on a 6.12 guest: \(failed)\n\(run.output)")
            #expect(run.status == 0)
        }
    }
}
