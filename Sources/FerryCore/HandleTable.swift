import Synchronization

/// Open files and directories by the `fh` number the kernel echoes back. The number
/// carries a generation, so a stale or forged `fh` from a guest finds nothing (EBADF)
/// instead of someone else's file.
final class HandleTable<Value: Sendable>: Sendable {
    private struct Slot {
        var value: Value?
        var generation: UInt32
        /// A handle a migration could not reopen here (`OnError.guestError`): requests on it
        /// get EIO until RELEASE frees the slot.
        var failed = false
    }
    private struct State {
        var slots: [Slot] = []
        var free: [Int] = []
        var live = 0
    }

    private let state = Mutex(State())
    let limit: Int

    init(limit: Int) { self.limit = limit }

    /// Stores `value` and returns its handle number; ENFILE at the limit.
    func insert(_ value: Value) throws(Errno) -> UInt64 {
        let result: Result<UInt64, Errno> = state.withLock { s in
            if s.live >= limit { return .failure(.tooManyOpenFiles) }
            s.live += 1
            if let index = s.free.popLast() {
                s.slots[index].value = value
                s.slots[index].generation &+= 1
                return .success(Self.encode(index: index, generation: s.slots[index].generation))
            }
            s.slots.append(Slot(value: value, generation: 1))
            return .success(Self.encode(index: s.slots.count - 1, generation: 1))
        }
        return try result.get()
    }

    func get(_ handle: UInt64) -> Value? {
        let (index, generation) = Self.decode(handle)
        return state.withLock { s in
            guard index < s.slots.count, s.slots[index].generation == generation else { return nil }
            return s.slots[index].value
        }
    }

    /// Removes and returns the value, so the caller releases it outside the lock.
    func remove(_ handle: UInt64) -> Value? {
        let (index, generation) = Self.decode(handle)
        return state.withLock { s in
            guard index < s.slots.count, s.slots[index].generation == generation else { return nil }
            if s.slots[index].failed {
                s.slots[index].failed = false
                s.free.append(index)
                s.live -= 1
                return nil
            }
            guard let value = s.slots[index].value else { return nil }
            s.slots[index].value = nil
            s.free.append(index)
            s.live -= 1
            return value
        }
    }

    func removeAll() {
        let dropped: [Slot] = state.withLock { s in
            let old = s.slots
            s = State()
            return old
        }
        _ = dropped
    }

    var count: Int { state.withLock { $0.live } }

    /// Whether `handle` is one a migration could not reopen here.
    func isFailed(_ handle: UInt64) -> Bool {
        let (index, generation) = Self.decode(handle)
        return state.withLock { s in index < s.slots.count && s.slots[index].generation == generation && s.slots[index].failed }
    }

    /// One slot as live migration moves it: its generation, and its value, or none, or failed.
    enum MigratedSlot {
        case empty(generation: UInt32)
        case open(Value, generation: UInt32)
        case failed(generation: UInt32)
    }

    func migrationSnapshot() -> [MigratedSlot] {
        state.withLock { s in
            s.slots.map { slot in
                if let v = slot.value { return .open(v, generation: slot.generation) }
                return slot.failed ? .failed(generation: slot.generation) : .empty(generation: slot.generation)
            }
        }
    }

    /// Replaces the table with migrated slots, keeping every handle number (slot and
    /// generation), so the guest's `fh`s name the same files and a stale one still none.
    func restore(_ slots: [MigratedSlot]) {
        let dropped: [Slot] = state.withLock { s in
            let old = s.slots
            s = State()
            for (index, slot) in slots.enumerated() {
                switch slot {
                case .empty(let g):
                    s.slots.append(Slot(value: nil, generation: g))
                    s.free.append(index)
                case .open(let v, let g):
                    s.slots.append(Slot(value: v, generation: g))
                    s.live += 1
                case .failed(let g):
                    s.slots.append(Slot(value: nil, generation: g, failed: true))
                    s.live += 1
                }
            }
            return old
        }
        _ = dropped
    }

    private static func encode(index: Int, generation: UInt32) -> UInt64 {
        (UInt64(generation) << 32) | UInt64(UInt32(truncatingIfNeeded: index))
    }

    private static func decode(_ handle: UInt64) -> (Int, UInt32) {
        (Int(UInt32(truncatingIfNeeded: handle)), UInt32(truncatingIfNeeded: handle >> 32))
    }
}
