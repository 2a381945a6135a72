import FerryCore

/// Every backend's concrete handler (POSIXExportHandler and the others) passes live
/// migration through to its server, so the vhost-user device finds a `MigratableHandler`
/// behind `ferry virtiofsd` and `ferry serve` as it does behind a bare `FUSEServer`. The
/// backend decides: a driver that cannot migrate keeps `canMigrate` false, and the device
/// then does not offer DEVICE_STATE (QEMU refuses to migrate that guest up front).
extension DriverExportHandler {
    var canMigrate: Bool { server.canMigrate }
    func saveMigrationState(_ options: MigrationOptions) throws(MigrationError) -> [UInt8] {
        try server.saveMigrationState(options)
    }
    func loadMigrationState(_ state: [UInt8], _ options: MigrationOptions) throws(MigrationError) -> MigrationLoadReport {
        try server.loadMigrationState(state, options)
    }
    func migrationResumedAtSource() { server.migrationResumedAtSource() }
}

extension POSIXExportHandler: MigratableHandler {}
extension NFSExportHandler: MigratableHandler {}
extension RADOSExportHandler: MigratableHandler {}
