import FerryCore

/// The byte ranges one lock owner holds on one file, as the server granted them: what
/// Ferry reclaims after the server restarts. POSIX semantics: a lock over part of a held
/// range takes that part (changing its type if it differs) and leaves the rest, an unlock
/// punches a hole, and touching ranges of one type are one range, as the server's own
/// bookkeeping makes them. Ends are inclusive; `RecordLock.toEndOfFile` is "to the end".
struct LockRanges: Equatable, Sendable {
    /// One held range; `type` READ_LT 1 or WRITE_LT 2, as LOCK carries it.
    struct Range: Equatable, Sendable {
        var start: UInt64, end: UInt64, type: UInt32
    }

    /// Sorted by start, none overlapping, no two touching ranges of one type.
    private(set) var ranges: [Range] = []

    var isEmpty: Bool { ranges.isEmpty }

    /// The owner now holds `start...end` as `type`, whatever it held there before.
    mutating func lock(start: UInt64, end: UInt64, type: UInt32) {
        unlock(start: start, end: end)
        var new = Range(start: start, end: end, type: type)
        let at = ranges.firstIndex { $0.start > start } ?? ranges.count
        var from = at, to = at
        // A neighbour of the same type that touches the new range joins it.
        if at > 0, ranges[at - 1].type == type, ranges[at - 1].end &+ 1 == start, start > 0 {
            from = at - 1
            new.start = ranges[at - 1].start
        }
        if at < ranges.count, ranges[at].type == type, end < UInt64.max, end + 1 == ranges[at].start {
            to = at + 1
            new.end = ranges[at].end
        }
        ranges.replaceSubrange(from..<to, with: [new])
    }

    /// The owner no longer holds anything in `start...end`.
    mutating func unlock(start: UInt64, end: UInt64) {
        var kept: [Range] = []
        kept.reserveCapacity(ranges.count + 1)
        for r in ranges {
            if r.end < start || r.start > end { kept.append(r); continue }
            if r.start < start { kept.append(Range(start: r.start, end: start - 1, type: r.type)) }
            if r.end > end { kept.append(Range(start: end + 1, end: r.end, type: r.type)) }
        }
        ranges = kept
    }
}
