import CFerry
import FerryFUSE

/// Counters of one export, updated by every request thread without a lock: requests,
/// errors and a latency histogram per opcode, bytes moved, throttling and quota refusals.
///
/// Storage is one block of 64-bit words allocated when the export starts, so recording a
/// request never allocates. Latency buckets are powers of two of microseconds: bucket 0
/// holds requests under 1 µs, bucket i those in [2^(i-1), 2^i) µs.
/// @unchecked Sendable: the pointers never change and every word is updated with atomic adds
/// (`ferry_atomic_add_u64`) and read with atomic loads.
public final class ExportStatistics: @unchecked Sendable {
    /// Slots for opcodes 0..<64; larger (unknown) opcodes share the last one.
    public static let opcodeSlots = 64
    public static let latencyBuckets = 32

    private enum Field: Int {
        case requests, errors, latencySumNanoseconds
        static let count = 3
    }
    private static let perOpcodeWords = Field.count + latencyBuckets
    enum Global: Int {
        case bytesRead, bytesWritten, throttledRequests, throttledNanoseconds, quotaRefusals, malformed
        case passthroughOpens, passthroughFallbacks
        static let count = 8
    }

    /// Sound: allocated once, never freed before `self`, only touched through atomic shims.
    private let words: UnsafeMutablePointer<UInt64>
    private let globals: UnsafeMutablePointer<UInt64>

    public init() {
        let count = Self.opcodeSlots * Self.perOpcodeWords
        words = .allocate(capacity: count)
        words.initialize(repeating: 0, count: count)
        globals = .allocate(capacity: Global.count)
        globals.initialize(repeating: 0, count: Global.count)
    }

    deinit {
        words.deallocate()
        globals.deallocate()
    }

    @inline(__always)
    private func slot(_ opcode: UInt32) -> UnsafeMutablePointer<UInt64> {
        words + Int(min(opcode, UInt32(Self.opcodeSlots - 1))) * Self.perOpcodeWords
    }

    /// One request of `opcode` answered after `nanoseconds`.
    @inline(__always)
    public func record(opcode: UInt32, nanoseconds: UInt64, failed: Bool) {
        let base = slot(opcode)
        _ = ferry_atomic_add_u64(base + Field.requests.rawValue, 1)
        if failed { _ = ferry_atomic_add_u64(base + Field.errors.rawValue, 1) }
        _ = ferry_atomic_add_u64(base + Field.latencySumNanoseconds.rawValue, nanoseconds)
        _ = ferry_atomic_add_u64(base + Field.count + Self.bucket(nanoseconds: nanoseconds), 1)
    }

    @inline(__always)
    static func bucket(nanoseconds: UInt64) -> Int {
        let micros = nanoseconds / 1000
        if micros == 0 { return 0 }
        return min(64 - micros.leadingZeroBitCount, latencyBuckets - 1)
    }

    /// The upper bound of latency bucket `i`, in seconds.
    public static func bucketUpperBound(_ i: Int) -> Double { Double(UInt64(1) << UInt64(i)) / 1_000_000 }

    @inline(__always) func add(_ field: Global, _ value: UInt64) { _ = ferry_atomic_add_u64(globals + field.rawValue, value) }
    @inline(__always) func addBytesRead(_ n: Int) { add(.bytesRead, UInt64(n)) }
    @inline(__always) func addBytesWritten(_ n: Int) { add(.bytesWritten, UInt64(n)) }
    @inline(__always) func addThrottle(nanoseconds: UInt64) { add(.throttledRequests, 1); add(.throttledNanoseconds, nanoseconds) }
    @inline(__always) func addQuotaRefusal() { add(.quotaRefusals, 1) }
    @inline(__always) func addMalformed() { add(.malformed, 1) }
    func addPassthroughOpen() { add(.passthroughOpens, 1) }
    func addPassthroughFallback() { add(.passthroughFallbacks, 1) }

    private func load(_ field: Global) -> UInt64 { ferry_atomic_load_u64(globals + field.rawValue) }

    /// A consistent-enough copy for reports (each counter is read atomically on its own).
    public func snapshot() -> Snapshot {
        var operations: [OperationCounters] = []
        for opcode in 0..<Self.opcodeSlots {
            let base = slot(UInt32(opcode))
            let requests = ferry_atomic_load_u64(base + Field.requests.rawValue)
            if requests == 0 { continue }
            let buckets = (0..<Self.latencyBuckets).map { ferry_atomic_load_u64(base + Field.count + $0) }
            operations.append(OperationCounters(
                opcode: UInt32(opcode), name: Self.name(of: UInt32(opcode)), requests: requests,
                errors: ferry_atomic_load_u64(base + Field.errors.rawValue),
                latencySumNanoseconds: ferry_atomic_load_u64(base + Field.latencySumNanoseconds.rawValue),
                latencyBuckets: buckets))
        }
        return Snapshot(operations: operations, bytesRead: load(.bytesRead), bytesWritten: load(.bytesWritten),
                        throttledRequests: load(.throttledRequests), throttledNanoseconds: load(.throttledNanoseconds),
                        quotaRefusals: load(.quotaRefusals), malformedRequests: load(.malformed),
                        passthroughOpens: load(.passthroughOpens), passthroughFallbacks: load(.passthroughFallbacks))
    }

    /// The lower-case protocol name of an opcode (`lookup`, `copy_file_range`), or `opcode_N`.
    public static func name(of opcode: UInt32) -> String {
        guard let known = FUSEOpcode(rawValue: opcode) else { return "opcode_\(opcode)" }
        var name = ""
        for character in String(describing: known) {
            if character.isUppercase { name += "_" + character.lowercased() } else { name.append(character) }
        }
        return name
    }

    public struct OperationCounters: Sendable, Codable, Equatable {
        public var opcode: UInt32
        public var name: String
        public var requests: UInt64
        public var errors: UInt64
        public var latencySumNanoseconds: UInt64
        /// Requests per latency bucket (see `ExportStatistics`).
        public var latencyBuckets: [UInt64]

        /// The latency under which `fraction` of the requests completed: the upper bound of
        /// the bucket holding that rank, in seconds.
        public func percentile(_ fraction: Double) -> Double {
            let total = latencyBuckets.reduce(0, +)
            guard total > 0 else { return 0 }
            let rank = UInt64((Double(total) * fraction).rounded(.up))
            var seen: UInt64 = 0
            for (i, n) in latencyBuckets.enumerated() {
                seen += n
                if seen >= max(rank, 1) { return ExportStatistics.bucketUpperBound(i) }
            }
            return ExportStatistics.bucketUpperBound(latencyBuckets.count - 1)
        }
    }

    public struct Snapshot: Sendable, Codable, Equatable {
        public var operations: [OperationCounters]
        public var bytesRead: UInt64
        public var bytesWritten: UInt64
        public var throttledRequests: UInt64
        public var throttledNanoseconds: UInt64
        public var quotaRefusals: UInt64
        public var malformedRequests: UInt64
        /// Opens (OPEN, CREATE, TMPFILE) the kernel serves from the backing file itself.
        public var passthroughOpens: UInt64 = 0
        /// Opens of a session that agreed passthrough served by the daemon all the same
        /// (the kernel refused a backing file, or the driver had none for that file).
        public var passthroughFallbacks: UInt64 = 0

        public var requests: UInt64 { operations.reduce(0) { $0 + $1.requests } }
        public var errors: UInt64 { operations.reduce(0) { $0 + $1.errors } }

        public init(operations: [OperationCounters], bytesRead: UInt64, bytesWritten: UInt64,
                    throttledRequests: UInt64, throttledNanoseconds: UInt64, quotaRefusals: UInt64,
                    malformedRequests: UInt64, passthroughOpens: UInt64 = 0, passthroughFallbacks: UInt64 = 0) {
            self.operations = operations
            self.bytesRead = bytesRead
            self.bytesWritten = bytesWritten
            self.throttledRequests = throttledRequests
            self.throttledNanoseconds = throttledNanoseconds
            self.quotaRefusals = quotaRefusals
            self.malformedRequests = malformedRequests
            self.passthroughOpens = passthroughOpens
            self.passthroughFallbacks = passthroughFallbacks
        }

        /// Counters added later are optional on the wire, so a CLI still reads the report of a
        /// daemon started from an older build (an upgrade in place keeps the daemon running).
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init(operations: try c.decode([OperationCounters].self, forKey: .operations),
                      bytesRead: try c.decode(UInt64.self, forKey: .bytesRead),
                      bytesWritten: try c.decode(UInt64.self, forKey: .bytesWritten),
                      throttledRequests: try c.decode(UInt64.self, forKey: .throttledRequests),
                      throttledNanoseconds: try c.decode(UInt64.self, forKey: .throttledNanoseconds),
                      quotaRefusals: try c.decode(UInt64.self, forKey: .quotaRefusals),
                      malformedRequests: try c.decode(UInt64.self, forKey: .malformedRequests),
                      passthroughOpens: try c.decodeIfPresent(UInt64.self, forKey: .passthroughOpens) ?? 0,
                      passthroughFallbacks: try c.decodeIfPresent(UInt64.self, forKey: .passthroughFallbacks) ?? 0)
        }
    }
}
