import FerryBackend
import FerryBackends
import FerryCore
import FerryPOSIX
import FerryPOSIXBackend
import FerryRADOSBackend
import Logging

/// Where an export's files come from, as given on the command line or in a tenant file:
/// a backend unit and its options (`BackendRegistry`).
public typealias Source = ConfiguredBackend

extension ConfiguredBackend {
    /// A source as `ferry mount` and `ferry virtiofsd` take it: a directory, or
    /// `KIND://...` for the backend of that kind. `ceph` carries `--ceph-conf`, `--ceph-id`,
    /// `--ceph-keyring` for `rados://` sources.
    public init(parsing text: String, ceph: CephAccess = CephAccess()) throws(CLIError) {
        do {
            self = try BackendRegistry.source(text, settings: ceph.sourceSettings)
        } catch {
            throw CLIError(error.description)
        }
    }
}

/// Opens `source` for serving under `policy`: the driver, the server core, and the
/// concrete handler that specialises the request path for that driver. `posix`: the POSIX
/// driver's tuning from the command line, for a directory. `migrationStandby`: a backend
/// whose single-writer lease another daemon holds opens as a migration standby instead of
/// failing (docs/migration.md).
public func openExport(_ source: Source, policy: ExportPolicy, posix: POSIXOptions? = nil, trustClientPermissions: Bool = true,
                       logger: Logger, migrationStandby: Bool = false) throws(CLIError) -> any ServedExport {
    let backend = posix.map { source.tuned($0) } ?? source
    let context = BackendOpenContext(policy: policy, logger: logger, trustClientPermissions: trustClientPermissions,
                                     migrationStandby: migrationStandby)
    do {
        return try backend.open(context)
    } catch {
        throw CLIError(error.description)
    }
}

/// A problem with what the operator asked for, reported as `Error: message` without a
/// usage dump (that is for malformed command lines).
public struct CLIError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
