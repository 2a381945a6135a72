import FerryCore
@testable import FerryNFS
import Testing

/// The ranges a lock owner holds, kept as POSIX says the server keeps them: what Ferry
/// reclaims after a server restart.
struct LockRangesTests {
    typealias R = LockRanges.Range
    static let read: UInt32 = 1, write: UInt32 = 2
    static let eof = RecordLock.toEndOfFile

    private func held(_ steps: (inout LockRanges) -> Void) -> [R] {
        var ranges = LockRanges()
        steps(&ranges)
        return ranges.ranges
    }

    @Test func anUnlockInsideARangeSplitsItInTwo() {
        #expect(held { $0.lock(start: 100, end: 199, type: Self.write); $0.unlock(start: 120, end: 139) }
                == [R(start: 100, end: 119, type: Self.write), R(start: 140, end: 199, type: Self.write)])
    }

    @Test func anUnlockOverAnEdgeOrEverythingTrimsOrRemoves() {
        #expect(held { $0.lock(start: 100, end: 199, type: Self.write); $0.unlock(start: 0, end: 149) }
                == [R(start: 150, end: 199, type: Self.write)])
        #expect(held { $0.lock(start: 100, end: 199, type: Self.write); $0.unlock(start: 150, end: Self.eof) }
                == [R(start: 100, end: 149, type: Self.write)])
        #expect(held { $0.lock(start: 0, end: Self.eof, type: Self.read); $0.unlock(start: 0, end: Self.eof) }.isEmpty)
        // Nothing held there: nothing changes.
        #expect(held { $0.lock(start: 10, end: 19, type: Self.read); $0.unlock(start: 30, end: 39) }
                == [R(start: 10, end: 19, type: Self.read)])
    }

    @Test func aLockOfAnotherTypeInsideARangeChangesOnlyThatPart() {
        #expect(held { $0.lock(start: 0, end: 99, type: Self.read); $0.lock(start: 40, end: 59, type: Self.write) }
                == [R(start: 0, end: 39, type: Self.read), R(start: 40, end: 59, type: Self.write), R(start: 60, end: 99, type: Self.read)])
    }

    @Test func touchingOrOverlappingRangesOfOneTypeMerge() {
        #expect(held { $0.lock(start: 0, end: 9, type: Self.write); $0.lock(start: 10, end: 19, type: Self.write) }
                == [R(start: 0, end: 19, type: Self.write)])
        #expect(held { $0.lock(start: 20, end: 29, type: Self.write); $0.lock(start: 10, end: 19, type: Self.write) }
                == [R(start: 10, end: 29, type: Self.write)])
        // Filling the hole between two pieces makes them one again.
        #expect(held {
            $0.lock(start: 0, end: 99, type: Self.read); $0.unlock(start: 40, end: 59); $0.lock(start: 40, end: 59, type: Self.read)
        } == [R(start: 0, end: 99, type: Self.read)])
        #expect(held { $0.lock(start: 5, end: 30, type: Self.read); $0.lock(start: 0, end: Self.eof, type: Self.read) }
                == [R(start: 0, end: Self.eof, type: Self.read)])
        // Touching ranges of different types stay apart.
        #expect(held { $0.lock(start: 0, end: 9, type: Self.read); $0.lock(start: 10, end: 19, type: Self.write) }
                == [R(start: 0, end: 9, type: Self.read), R(start: 10, end: 19, type: Self.write)])
    }

    @Test func aLockOverSeveralRangesReplacesThemAll() {
        #expect(held {
            $0.lock(start: 0, end: 9, type: Self.read); $0.lock(start: 20, end: 29, type: Self.write); $0.lock(start: 40, end: 49, type: Self.read)
            $0.lock(start: 5, end: 44, type: Self.write)
        } == [R(start: 0, end: 4, type: Self.read), R(start: 5, end: 44, type: Self.write), R(start: 45, end: 49, type: Self.read)])
    }

    @Test func rangesStaySortedWhateverTheOrderTheyCameIn() {
        let ranges = held {
            $0.lock(start: 300, end: 399, type: Self.write); $0.lock(start: 0, end: 99, type: Self.read)
            $0.lock(start: 150, end: 199, type: Self.write)
        }
        #expect(ranges.map(\.start) == [0, 150, 300])
    }
}
