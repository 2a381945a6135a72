import FerryCore
import FerryPOSIX
import FerryPOSIXBackend
import Foundation
import Logging
import Testing
@testable import FerryCLI
@testable import FerryDaemon

/// What `ferry virtiofsd` hands the vhost-user device must be migratable when its backend
/// is: the device offers DEVICE_STATE only to a `MigratableHandler` that can migrate, and
/// QEMU 10 refuses to migrate the guest otherwise ("does not support migration through
/// qemu"), as it did before the wrapper passed migration through.
@Suite struct MigrationExportTests {
    @Test func aDirectoryExportServedByFerryVirtiofsdCanMigrate() throws {
        var template = Array("/tmp/ferry-migration-export-XXXXXX".utf8CString)
        let directory = String(cString: mkdtemp(&template)!)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let export = try openExport(Source(POSIXBackend.self, .init(path: directory)), policy: ExportPolicy(), posix: POSIXOptions(), logger: logger)
        defer { export.shutdown() }
        let migratable = export as? any MigratableHandler
        #expect(migratable != nil)
        #expect(migratable?.canMigrate == true)
        // Its state goes out and comes back in (a fresh session: no INIT yet).
        let state = try #require(try migratable?.saveMigrationState(MigrationOptions()))
        let other = try openExport(Source(POSIXBackend.self, .init(path: directory)), policy: ExportPolicy(), posix: POSIXOptions(), logger: logger)
        defer { other.shutdown() }
        #expect(try (other as? any MigratableHandler)?.loadMigrationState(state, MigrationOptions()) == MigrationLoadReport())
    }
}
