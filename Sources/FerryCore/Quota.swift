import CFerry

/// Bytes and inodes an export may use, enforced by the server core for every backend:
/// a change that would pass a limit fails with EDQUOT before it reaches the backend.
///
/// Usage is counted once when the export starts (a walk of the whole tree through the
/// driver), then kept up to date from each change's size delta. Bytes are logical file
/// sizes (what `du --apparent-size` counts); a file with several links counts once, and
/// its space is given back when its last link goes.
public struct QuotaLimits: Sendable, Equatable {
    public var bytes: UInt64?
    public var inodes: UInt64?
    public init(bytes: UInt64? = nil, inodes: UInt64? = nil) { self.bytes = bytes; self.inodes = inodes }
    public var isUnlimited: Bool { bytes == nil && inodes == nil }
}

/// The running usage of an export under quota. Reservations are taken before a change
/// and settled after it, so concurrent requests can never together pass a limit.
/// @unchecked Sendable: `usage` never changes and its two words are read and changed only with atomic
/// operations (`ferry_atomic_*`).
public final class QuotaLedger: @unchecked Sendable {
    public let limits: QuotaLimits
    /// Sound: two words owned by `self`, only touched through atomic shims.
    private let usage: UnsafeMutablePointer<UInt64>

    public init(limits: QuotaLimits, bytes: UInt64, inodes: UInt64) {
        self.limits = limits
        usage = .allocate(capacity: 2)
        usage[0] = bytes
        usage[1] = inodes
    }

    deinit { usage.deallocate() }

    public var bytesUsed: UInt64 { ferry_atomic_load_u64(usage) }
    public var inodesUsed: UInt64 { ferry_atomic_load_u64(usage + 1) }

    /// Takes `amount` of the counter at `index` unless that would pass `limit`.
    private func reserve(_ index: Int, _ amount: UInt64, limit: UInt64?) throws(Errno) {
        guard amount > 0 else { return }
        let after = ferry_atomic_add_u64(usage + index, amount)
        if let limit, after > limit {
            _ = ferry_atomic_add_u64(usage + index, 0 &- amount)
            throw .quotaExceeded
        }
    }

    private func release(_ index: Int, _ amount: UInt64) {
        guard amount > 0 else { return }
        // Never below zero: usage counted at start may miss files made behind our back.
        let give = min(amount, ferry_atomic_load_u64(usage + index))
        _ = ferry_atomic_add_u64(usage + index, 0 &- give)
    }

    public func reserveBytes(_ n: UInt64) throws(Errno) { try reserve(0, n, limit: limits.bytes) }
    public func releaseBytes(_ n: UInt64) { release(0, n) }
    public func reserveInode() throws(Errno) { try reserve(1, 1, limit: limits.inodes) }
    public func releaseInodes(_ n: UInt64) { release(1, n) }
}
