import FerryTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A real guest (Linux 6.12, 2 vCPUs, 4 request queues) on `ferry virtiofsd` serving a RADOS
/// namespace of the shared test cluster.
@Suite("Real Linux guest over vhost-user on rados://", .serialized,
       .requires(.root, .qemu, .ceph))
struct RADOSGuestTests {
    @Test
    func theConformanceChecksPassInAGuestOnRADOS() async throws {
        try await GuestSlots.run(minutes: 20) {
            let cluster = try CephCluster.shared()
            let ferry = try BuiltProducts.require("ferry")
            let formatted = try runToCompletion(ferry, ["format", cluster.source("guest")] + cluster.cephArguments)
            try #require(formatted.succeeded, "\(formatted.output)")
            // --shared-dir takes any source `ferry mount` takes.
            let daemon = try Daemon.ferry(export: cluster.source("guest"), extra: ["--xattr"] + cluster.cephArguments)
            let run = try Guest.run(socket: daemon.socket, command: guestConformanceCommand, timeout: 900, machine: .linux612)
            #expect(daemon.stop() == 0, "ferry virtiofsd log:\n\(daemon.log)")
            let results = conformanceResults(run.output)
            #expect(results.count >= 40, "too few checks ran:\n\(run.log)")
            let failed = results.filter { !$0.value }.keys.sorted()
            #expect(failed.isEmpty, "failed on rados://: \(failed)\n\(run.output)\nferry's log:\n\(daemon.log)")
            #expect(run.status == 0)
        }
    }
}
