import FerryBackend
import FerryCore

/// `kind = "memory"`: a backend defined in a test, a unit as the built-in ones are. Its
/// table has no keys but `kind`; every export of it is a fresh, empty file system.
enum MemoryBackend: BackendModule {
    struct Options: Equatable, Sendable {}

    static let kind = "memory"
    static let tableKeys: [String] = []

    static func options(from table: BackendTable) -> Options? {
        table.reader.finish(known: ["kind"])
        return Options()
    }

    static func summary(_ options: Options) -> String { "a file system in memory" }

    static func listing(_ options: Options) -> BackendListing { BackendListing(kind: kind, location: "memory") }

    static func open(_ options: Options, _ context: BackendOpenContext) throws(BackendError) -> any ServedExport {
        do {
            return GenericExportHandler(try FUSEServer(driver: MemoryFileSystem(), policy: context.policy, logger: context.logger))
        } catch {
            throw BackendError("cannot serve memory: \(error)")
        }
    }
}
