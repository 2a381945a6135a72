import FerryVhostUser

/// The migrating state `ferry exports list/show` and the metrics report for an export
/// whose guest is being live-migrated, named from the device's own phase (the messages
/// QEMU sent: LOG_ALL, SET_DEVICE_STATE_FD save or load, CHECK_DEVICE_STATE's answer).
/// Nothing is guessed: an export with no such message since its rings last started has
/// no migrating state.
public enum ExportMigrationState: String, Codable, CaseIterable, Sendable {
    /// Source: dirty-page logging is on while QEMU copies guest memory.
    case migratingOut = "migrating-out"
    /// Source: the rings are stopped and the state is going into QEMU's stream.
    case saving
    /// Source: the state was sent; the rings stay stopped until QEMU quits (the migration
    /// completed) or starts them again (it failed and the guest resumes here).
    case saved
    /// Source: the state could not be saved; QEMU fails the migration.
    case saveFailed = "save-failed"
    /// Destination: the state is being read from QEMU's stream.
    case incoming
    /// Destination: the state was taken; the guest runs here once QEMU starts the rings.
    case migratedIn = "migrated-in"
    /// Destination: the state was refused (a file that is gone, a bad state); QEMU fails
    /// the migration and the guest runs on at the source.
    case refused

    /// nil: no migration under way on this device.
    public init?(_ status: VhostUserMigrationStatus) {
        switch status.transfer.map({ ($0.direction, $0.outcome) }) {
        case (.save, .inProgress)?: self = .saving
        case (.save, .succeeded)?: self = .saved
        case (.save, .failed)?: self = .saveFailed
        case (.load, .inProgress)?: self = .incoming
        case (.load, .succeeded)?: self = .migratedIn
        case (.load, .failed)?: self = .refused
        case nil:
            guard status.logging else { return nil }
            self = .migratingOut
        }
    }

    /// One line for `exports show`.
    public var explanation: String {
        switch self {
        case .migratingOut: return "migrating-out (dirty-page logging: QEMU is copying guest memory)"
        case .saving: return "saving (rings stopped, state going into the migration stream)"
        case .saved: return "saved (state sent, rings stopped: waiting for QEMU to quit or resume the guest)"
        case .saveFailed: return "save-failed (the state could not be saved: the migration fails)"
        case .incoming: return "incoming (loading the state from the migration stream)"
        case .migratedIn: return "migrated-in (state taken: the guest runs here once its rings start)"
        case .refused: return "refused (the state could not be taken: the migration fails)"
        }
    }
}
