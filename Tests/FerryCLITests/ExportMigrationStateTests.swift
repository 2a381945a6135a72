import FerryVhostUser
import Foundation
import Testing
@testable import FerryCLI
@testable import FerryDaemon

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

/// An export's state travels over the control socket and into `--json` as the one string
/// operators read, and comes back as the same state.
@Suite struct ExportStateTests {
    @Test func everyStateIsTheStringOperatorsReadAndReadsBackAsItself() throws {
        let states: [(ExportState, String)] = [
            (.starting, "starting"), (.listening, "listening"), (.guestConnected, "guest connected"),
            (.error("cannot open the backend: ENOENT"), "error: cannot open the backend: ENOENT"),
            (.stopped, "stopped"), (.notRunning, "not running"),
        ]
        for (state, text) in states {
            #expect(state.description == text)
            #expect(ExportState(reported: text) == state)
            let json = try JSONEncoder().encode([state])
            #expect(String(decoding: json, as: UTF8.self) == "[\"\(text.replacingOccurrences(of: "/", with: "\\/"))\"]")
            #expect(try JSONDecoder().decode([ExportState].self, from: json) == [state])
        }
        #expect(ExportState(reported: "errored") == nil)
        #expect(states.filter { $0.0.isUp }.map(\.1) == ["listening", "guest connected"])
        #expect(states.filter { $0.0.isError }.count == 1)
    }
}
