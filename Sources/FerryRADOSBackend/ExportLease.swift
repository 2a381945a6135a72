import FerryRADOS
#if canImport(Glibc)
import Glibc
#endif

/// A RADOS export's part in its namespace's single-writer lease, as `ferry exports
/// list/show` and the metrics report it: the driver's own state (`RADOSDriver.leaseRole`),
/// and who holds the lease when this export does not, asked of the cluster.
public struct ExportLease: Codable, Equatable {
    /// `writer`, `standby`, `handed-over`, `lost` or `read-only`.
    public var role: String
    /// Who holds the lease ("client.4123 at 127.0.0.1:0/2785") when this export does not;
    /// nil when it does, or when nobody holds it.
    public var holder: String?

    public static let roles = RADOSDriver.LeaseRole.allCases.map(\.rawValue)

    /// Not the writer, and not read-only: a guest's writes answer EIO here.
    public var isStandby: Bool { role == RADOSDriver.LeaseRole.standby.rawValue || role == RADOSDriver.LeaseRole.handedOver.rawValue }

    /// One line for `exports show`.
    public var explanation: String {
        let held = holder.map { "lease held by \($0)" } ?? "the lease is free"
        switch RADOSDriver.LeaseRole(rawValue: role) {
        case .writer?: return "writer (holds the namespace's lease)"
        case .standby?:
            return "standby: \(held) (writes answer EIO; becomes the writer when a migrated guest arrives, "
                + "or at its own guest's first write once the lease is free)"
        case .handedOver?:
            return "handed-over: \(held) (a migration moved the guest away; takes the lease back only if that migration fails)"
        case .lost?: return "lost (a renewal failed: writes answer EIO)"
        case .readOnly?: return "none (read-only export)"
        case nil: return role
        }
    }
}

/// An export whose backend has a single-writer lease (a RADOS namespace).
public protocol LeasedExport {
    var lease: ExportLease { get }
}

extension RADOSExportHandler: LeasedExport {
    public var lease: ExportLease {
        let role = driver.leaseRole
        let holder = role == .standby || role == .handedOver ? driver.currentLeaseHolder() : nil
        return ExportLease(role: role.rawValue, holder: holder)
    }
}
