/// Latencies in nanoseconds, bucketed log-linearly (32 sub-buckets per power of two,
/// so about 3% resolution) in one preallocated array: recording never allocates.
public struct LatencyHistogram: Sendable {
    static let linear = 64
    static let subBuckets = 32
    public private(set) var counts = [UInt64](repeating: 0, count: 2048)
    public private(set) var total: UInt64 = 0
    public private(set) var maximum: UInt64 = 0

    public init() {}

    static func index(_ value: UInt64) -> Int {
        if value < UInt64(linear) { return Int(value) }
        let msb = 63 - value.leadingZeroBitCount
        let shift = msb - 5
        let top = Int(value >> UInt64(shift))          // in 32..<64
        return linear + (shift - 1) * subBuckets + (top - subBuckets)
    }

    /// The middle of bucket `i`'s range.
    static func value(_ i: Int) -> UInt64 {
        if i < linear { return UInt64(i) }
        let shift = (i - linear) / subBuckets + 1
        let top = UInt64((i - linear) % subBuckets + subBuckets)
        return (top << UInt64(shift)) + (UInt64(1) << UInt64(shift)) / 2
    }

    public mutating func record(nanoseconds: UInt64) {
        counts[Self.index(nanoseconds)] += 1
        total += 1
        maximum = max(maximum, nanoseconds)
    }

    public mutating func merge(_ other: LatencyHistogram) {
        for i in counts.indices { counts[i] += other.counts[i] }
        total += other.total
        maximum = max(maximum, other.maximum)
    }

    /// The latency at quantile `q` (0…1), in nanoseconds; 0 when empty.
    public func quantile(_ q: Double) -> UInt64 {
        guard total > 0 else { return 0 }
        let target = max(1, UInt64((q * Double(total)).rounded(.up)))
        var seen: UInt64 = 0
        for (i, c) in counts.enumerated() where c > 0 {
            seen += c
            if seen >= target { return min(Self.value(i), maximum) }
        }
        return maximum
    }
}
