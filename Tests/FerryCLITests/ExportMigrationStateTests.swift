import FerryVhostUser
import Testing
@testable import FerryCLI

/// The migrating state `ferry exports` shows, named from the device's phase.
@Suite struct ExportMigrationStateTests {
    typealias Transfer = VhostUserMigrationStatus.Transfer

    @Test func aDeviceThatIsNotMigratingHasNoMigratingState() {
        #expect(ExportMigrationState(VhostUserMigrationStatus()) == nil)
    }

    @Test func dirtyPageLoggingIsMigratingOut() {
        #expect(ExportMigrationState(VhostUserMigrationStatus(logging: true)) == .migratingOut)
    }

    @Test(arguments: [
        (Transfer.Direction.save, Transfer.Outcome.inProgress, ExportMigrationState.saving),
        (.save, .succeeded, .saved),
        (.save, .failed, .saveFailed),
        (.load, .inProgress, .incoming),
        (.load, .succeeded, .migratedIn),
        (.load, .failed, .refused),
    ])
    func aStateTransferNamesThePhaseWhetherOrNotLoggingIsStillOn(
        direction: Transfer.Direction, outcome: Transfer.Outcome, expected: ExportMigrationState
    ) {
        // QEMU stops logging only after the switch-over: the transfer is what counts.
        for logging in [false, true] {
            let status = VhostUserMigrationStatus(logging: logging, transfer: Transfer(direction: direction, outcome: outcome))
            #expect(ExportMigrationState(status) == expected)
        }
    }

    @Test func theStatesAreTheWordsTheDocumentationUses() {
        #expect(ExportMigrationState.allCases.map(\.rawValue)
                == ["migrating-out", "saving", "saved", "save-failed", "incoming", "migrated-in", "refused"])
        for state in ExportMigrationState.allCases { #expect(state.explanation.hasPrefix(state.rawValue + " (")) }
    }
}
