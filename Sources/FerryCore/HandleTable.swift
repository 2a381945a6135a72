import Synchronization

/// Open files and directories by the `fh` number the kernel echoes back. The number
/// carries a generation, so a stale or forged `fh` from a guest finds nothing (EBADF)
/// instead of someone else's file.
final class HandleTable<Value>: @unchecked Sendable {
    private struct Slot {
        var value: Value?
        var generation: UInt32
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
            guard index < s.slots.count, s.slots[index].generation == generation,
                  let value = s.slots[index].value else { return nil }
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

    private static func encode(index: Int, generation: UInt32) -> UInt64 {
        (UInt64(generation) << 32) | UInt64(UInt32(truncatingIfNeeded: index))
    }

    private static func decode(_ handle: UInt64) -> (Int, UInt32) {
        (Int(UInt32(truncatingIfNeeded: handle)), UInt32(truncatingIfNeeded: handle >> 32))
    }
}
