import FerryCore
import FerryNFSBackend
import Testing
@testable import FerryConfig
@testable import FerryDaemon

/// A reload restarts an export exactly when what it serves changed, compared by value.
@Suite struct ExportIdentityTests {
    func nfsExport(threads: Int? = nil) -> ExportConfig {
        let here = SourceLocation(file: "tenants/acme.toml", line: 3)
        return ExportConfig(
            name: "home", tag: "acme-home", socket: "/run/ferry/acme-home.sock", threadsPerQueue: threads,
            backend: Backend(NFSBackend.self, NFSSource(server: "files", path: "/export", version: .v4)),
            location: here, nameLocation: here, tagLocation: here, socketLocation: here)
    }

    @Test func whereItWasWrittenAndItsMigrationOptionsAreNoChange() {
        var moved = nfsExport()
        moved.location = SourceLocation(file: "tenants/acme.toml", line: 40)
        moved.migration.verifyHandles.toggle()
        #expect(ExportIdentity(moved) == ExportIdentity(nfsExport()))
        #expect(moved != nfsExport())
    }

    @Test func threadsPerQueueCountAsTheExportRunsThem() {
        // An NFS export's default is one thread per connection: writing that down is no change.
        #expect(ExportIdentity(nfsExport(threads: 4)) == ExportIdentity(nfsExport()))
        #expect(ExportIdentity(nfsExport(threads: 2)) != ExportIdentity(nfsExport()))
    }

    @Test func whatItServesAndHowIsAChange() {
        var other = nfsExport()
        other.backend = Backend(NFSBackend.self, NFSSource(server: "files", path: "/export", version: .v3))
        #expect(ExportIdentity(other) != ExportIdentity(nfsExport()))
        other = nfsExport()
        other.qos.iops = 100
        #expect(ExportIdentity(other) != ExportIdentity(nfsExport()))
        other = nfsExport()
        other.socket = "/run/ferry/other.sock"
        #expect(ExportIdentity(other) != ExportIdentity(nfsExport()))
    }
}
