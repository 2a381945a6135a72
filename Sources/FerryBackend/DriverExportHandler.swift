import FerryCore

/// What every backend's concrete handler shares. Only the two `handle` methods must be
/// written out per backend (they are the request path, to be specialised); the rest is
/// occasional and can stay generic.
public protocol DriverExportHandler: ServedExport {
    associatedtype Driver: FileSystemDriver
    var server: FUSEServer<Driver> { get }
}

extension DriverExportHandler {
    public func connectionLost() { server.connectionLost() }
    public var nodeCount: Int { server.nodeCount }
    public var openHandleCount: Int { server.openHandleCount }
    public var statistics: ExportStatistics { server.statistics }
    public var quota: QuotaLedger? { server.quota }
    public func shutdown() { server.shutdown() }
    public func enablePassthrough(_ device: any FUSEBackingFiles) -> PassthroughSupport { server.enablePassthrough(device) }
    public var passthroughAgreed: Bool? { server.passthroughAgreed }
}

/// Every backend's concrete handler (POSIXExportHandler and the others) passes live
/// migration through to its server, so the vhost-user device finds a `MigratableHandler`
/// behind `ferry virtiofsd` and `ferry serve` as it does behind a bare `FUSEServer`. The
/// backend decides: a driver that cannot migrate keeps `canMigrate` false, and the device
/// then does not offer DEVICE_STATE (QEMU refuses to migrate that guest up front).
extension DriverExportHandler {
    public var canMigrate: Bool { server.canMigrate }
    public func saveMigrationState(_ options: MigrationOptions) throws(MigrationError) -> [UInt8] {
        try server.saveMigrationState(options)
    }
    public func loadMigrationState(_ state: [UInt8], _ options: MigrationOptions) throws(MigrationError) -> MigrationLoadReport {
        try server.loadMigrationState(state, options)
    }
    public func migrationResumedAtSource() { server.migrationResumedAtSource() }
}

/// The handler of a backend that does not write out its own (a backend outside this
/// package, a test's): the request path stays generic over `Driver`, so each request looks
/// up the driver's type metadata at run time. Built-in backends write out their two
/// `handle` methods instead (POSIXExportHandler), where the driver type is concrete.
public final class GenericExportHandler<Driver: FileSystemDriver>: DriverExportHandler, MigratableHandler, Sendable {
    public let server: FUSEServer<Driver>

    public init(_ server: FUSEServer<Driver>) { self.server = server }

    public func handle(request: UnsafeRawBufferPointer, reply: inout ReplyArea) -> ReplyDisposition {
        server.handle(request: request, reply: &reply)
    }

    public func handle(request: UnsafeRawBufferPointer, payload: IOVectors, reply: inout ReplyArea) -> ReplyDisposition {
        server.handle(request: request, payload: payload, reply: &reply)
    }
}
