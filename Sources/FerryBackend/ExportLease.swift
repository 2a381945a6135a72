/// An export's part in a single-writer lease on its data (a RADOS namespace's), as `ferry
/// exports list/show` and the metrics report it: the driver's own state, and who holds the
/// lease when this export does not.
public struct ExportLease: Codable, Equatable {
    /// `writer`, `standby`, `handed-over`, `lost` or `read-only`.
    public var role: String
    /// Who holds the lease ("client.4123 at 127.0.0.1:0/2785") when this export does not;
    /// nil when it does, or when nobody holds it.
    public var holder: String?

    /// The roles an export can have in its lease.
    public enum Role: String, Sendable, CaseIterable {
        /// Holds the lease and renews it.
        case writer
        /// Opened without it: another process holds it.
        case standby
        /// Gave it to a migration's destination; takes it back only if that migration fails.
        case handedOver = "handed-over"
        /// Held it, but a renewal failed.
        case lost
        /// A read-only export: no lease at all.
        case readOnly = "read-only"
    }

    public static let roles = Role.allCases.map(\.rawValue)

    public init(role: String, holder: String?) {
        self.role = role
        self.holder = holder
    }

    /// Not the writer, and not read-only: a guest's writes answer EIO here.
    public var isStandby: Bool { role == Role.standby.rawValue || role == Role.handedOver.rawValue }

    /// One line for `exports show`.
    public var explanation: String {
        let held = holder.map { "lease held by \($0)" } ?? "the lease is free"
        switch Role(rawValue: role) {
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

/// An export whose backend has a single-writer lease.
public protocol LeasedExport {
    var lease: ExportLease { get }
}
