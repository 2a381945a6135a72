import Synchronization

/// The kernel's view of an export's nodes: node id ↔ driver inode, with the lookup
/// count that FORGET pays back. One table per export, so many exports share a daemon
/// without sharing ids.
///
/// Node id `n` is slot `n - 1`; node id 1 is the root and is never forgotten. A slot
/// freed by FORGET is reused with a new generation, which goes to the kernel in every
/// entry so a reused id is never mistaken for the old file (the kernel keeps an inode
/// whose node id and generation both match, and drops one whose generation differs).
/// Generations come from one counter for the table's whole life, resets included, so no
/// (node id, generation) pair is ever given to two files.
///
/// A key names one file for as long as the kernel holds its node: the driver must make
/// keys that a new file can never share with a deleted one (see the POSIX driver's
/// `InodeKey`), because `intern` gives every entry with an equal key the same node.
final class NodeTable<Key: Hashable & Sendable, Inode: AnyObject & Sendable>: Sendable {
    private struct Slot {
        var inode: Inode?
        var key: Key?
        var lookups: UInt64
        var generation: UInt64
        /// A node a migration could not find on this host (`OnError.guestError`): no inode,
        /// requests on it get EIO, FORGET pays it back like any other.
        var failed = false
    }

    private struct State {
        var slots: [Slot] = []
        var free: [Int] = []
        var byKey: [Key: Int] = [:]
        /// The generation the next new or reused slot gets.
        var nextGeneration: UInt64 = 1
    }

    private let state = Mutex(State())
    let limit: Int

    init(limit: Int) { self.limit = limit }

    /// Installs the root as node id 1.
    func setRoot(key: Key, inode: Inode) {
        state.withLock { s in
            precondition(s.slots.isEmpty, "root installed twice")
            s.slots.append(Slot(inode: inode, key: key, lookups: 1, generation: 0))
            s.byKey[key] = 0
        }
    }

    /// The inode behind `nodeID`, retained for the caller, or nil for an id the kernel
    /// was never given (or has forgotten).
    func inode(_ nodeID: UInt64) -> Inode? {
        guard nodeID >= 1, nodeID <= UInt64(Int.max) else { return nil }
        let index = Int(nodeID - 1)
        return state.withLock { s in index < s.slots.count ? s.slots[index].inode : nil }
    }

    /// The inode of a node the kernel already holds under `key`, if any.
    func existing(_ key: Key) -> Inode? {
        state.withLock { s in s.byKey[key].flatMap { s.slots[$0].inode } }
    }

    /// Records one more kernel reference to the node `key` names, creating it from
    /// `inode` if it is new. Returns (node id, generation). Throws ENFILE at the limit.
    /// A duplicate `inode` is released by the caller's scope, outside the lock.
    func intern(key: Key, inode: Inode) throws(Errno) -> (nodeID: UInt64, generation: UInt64) {
        let result: Result<(UInt64, UInt64), Errno> = state.withLock { s in
            if let index = s.byKey[key] {
                s.slots[index].lookups += 1
                return .success((UInt64(index) + 1, s.slots[index].generation))
            }
            if s.byKey.count >= limit { return .failure(.tooManyOpenFiles) }
            let index: Int
            if let reused = s.free.popLast() {
                index = reused
                s.slots[index].inode = inode
                s.slots[index].key = key
                s.slots[index].lookups = 1
                s.slots[index].generation = s.nextGeneration
            } else {
                index = s.slots.count
                s.slots.append(Slot(inode: inode, key: key, lookups: 1, generation: s.nextGeneration))
            }
            s.nextGeneration += 1
            s.byKey[key] = index
            return .success((UInt64(index) + 1, s.slots[index].generation))
        }
        return try result.get()
    }

    /// Pays back `count` lookups. A node whose count reaches zero is dropped; its inode is
    /// released once no request still holds it. Over-forgetting is clamped, never trusted.
    /// Returns false for an unknown id.
    @discardableResult
    func forget(_ nodeID: UInt64, count: UInt64) -> Bool {
        guard nodeID > 1, nodeID <= UInt64(Int.max) else { return false }
        let index = Int(nodeID - 1)
        // Moved out so the driver's deinit (closing fds) runs after the lock is released.
        let dropped: Inode? = state.withLock { s in
            guard index < s.slots.count, s.slots[index].inode != nil || s.slots[index].failed else { return nil }
            let left = s.slots[index].lookups - min(count, s.slots[index].lookups)
            s.slots[index].lookups = left
            guard left == 0 else { return nil }
            let inode = s.slots[index].inode
            if let key = s.slots[index].key { s.byKey[key] = nil }
            s.slots[index].failed = false
            s.slots[index].inode = nil
            s.slots[index].key = nil
            s.free.append(index)
            return inode
        }
        _ = dropped
        return true
    }

    /// Drops every node but the root (DESTROY, device reset).
    func reset() {
        let dropped: [Inode] = state.withLock { s in
            var out: [Inode] = []
            for i in s.slots.indices.dropFirst() {
                if let inode = s.slots[i].inode { out.append(inode) }
            }
            if !s.slots.isEmpty {
                s.slots.removeSubrange(1...)
                if let rootKey = s.slots[0].key { s.byKey = [rootKey: 0] }
            }
            s.free.removeAll()
            return out
        }
        _ = dropped
    }

    /// The root's key (node id 1).
    var rootKey: Key? { state.withLock { $0.slots.first?.key } }

    /// Whether `nodeID` is a node a migration could not find here (requests get EIO).
    func isFailed(_ nodeID: UInt64) -> Bool {
        guard nodeID >= 1, nodeID <= UInt64(Int.max) else { return false }
        let index = Int(nodeID - 1)
        return state.withLock { s in index < s.slots.count && s.slots[index].failed }
    }

    /// One slot as live migration moves it.
    enum MigratedSlot {
        case empty
        case node(key: Key, inode: Inode, lookups: UInt64, generation: UInt64)
        case failed(lookups: UInt64, generation: UInt64)
    }

    /// Every slot after the root (slot i is node id i + 2) and the generation counter.
    /// Called with the queues stopped, so nothing changes meanwhile.
    func migrationSnapshot() -> (slots: [MigratedSlot], nextGeneration: UInt64) {
        state.withLock { s in
            let slots: [MigratedSlot] = s.slots.dropFirst().map { slot in
                if let inode = slot.inode, let key = slot.key {
                    return .node(key: key, inode: inode, lookups: slot.lookups, generation: slot.generation)
                }
                return slot.failed ? .failed(lookups: slot.lookups, generation: slot.generation) : .empty
            }
            return (slots, s.nextGeneration)
        }
    }

    /// Replaces every node but the root with migrated ones, keeping their node ids and
    /// generations, so the guest's node ids name the same files. The keys must differ from
    /// each other and from the root's (the caller checks).
    func restore(_ slots: [MigratedSlot], nextGeneration: UInt64) {
        let dropped: [Slot] = state.withLock { s in
            precondition(!s.slots.isEmpty, "restore before the root")
            let root = s.slots[0]
            let old = Array(s.slots.dropFirst())
            s.slots = [root]
            s.free.removeAll()
            s.byKey = [:]
            if let key = root.key { s.byKey[key] = 0 }
            for (i, migrated) in slots.enumerated() {
                let index = i + 1
                switch migrated {
                case .empty:
                    s.slots.append(Slot(inode: nil, key: nil, lookups: 0, generation: 0))
                    s.free.append(index)
                case .node(let key, let inode, let lookups, let generation):
                    s.slots.append(Slot(inode: inode, key: key, lookups: lookups, generation: generation))
                    s.byKey[key] = index
                case .failed(let lookups, let generation):
                    s.slots.append(Slot(inode: nil, key: nil, lookups: lookups, generation: generation, failed: true))
                }
            }
            s.nextGeneration = max(s.nextGeneration, nextGeneration)
            return old
        }
        _ = dropped
    }

    /// Nodes currently known to the kernel, the root included.
    var count: Int { state.withLock { $0.byKey.count } }

    /// The lookup count of `nodeID`, for tests and statistics.
    func lookupCount(_ nodeID: UInt64) -> UInt64? {
        guard nodeID >= 1, nodeID <= UInt64(Int.max) else { return nil }
        let index = Int(nodeID - 1)
        return state.withLock { s in
            index < s.slots.count && s.slots[index].inode != nil ? s.slots[index].lookups : nil
        }
    }
}
