#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Memory holding copies of UNSTABLE writes until a COMMIT says the server has them on
/// stable storage. `users` counts the retained pieces (and writes under way) that point
/// into it; at zero it goes back to its pool. Only touched under the owning file's lock
/// (hence unchecked Sendable).
final class RetainChunk: @unchecked Sendable {
    let bytes: UnsafeMutableRawPointer
    let capacity: Int
    /// Bytes handed out from the start.
    var used = 0
    var users = 0

    init(capacity: Int) {
        self.capacity = capacity
        bytes = .allocate(byteCount: capacity, alignment: 64)
    }

    deinit { bytes.deallocate() }

    var room: Int { capacity - used }
}

/// Chunks kept for reuse, in two sizes (small writes do not each pin a large chunk). A
/// chunk is recycled rather than freed because fresh memory is what made writes slow: the
/// kernel zeroes and charges each page of a new 1 MiB buffer on first touch (256 page
/// faults per MiB), which cost more CPU than the copy itself. At most `maxIdle` chunks of
/// each size wait here; more are freed.
final class RetainPool: Sendable {
    static let smallSize = 64 << 10
    static let largeSize = 1 << 20
    let maxIdle: Int
    private let idle = Mutex<(small: [RetainChunk], large: [RetainChunk])>(([], []))

    init(maxIdle: Int) { self.maxIdle = maxIdle }

    /// A chunk with room for `count` bytes: a pooled one unless `count` exceeds the large
    /// size (then one of its own, freed when done).
    func take(atLeast count: Int) -> RetainChunk {
        let reused = idle.withLock { lists -> RetainChunk? in
            count <= RetainPool.smallSize ? lists.small.popLast() : count <= RetainPool.largeSize ? lists.large.popLast() : nil
        }
        if let reused { return reused }
        return RetainChunk(capacity: count <= RetainPool.smallSize ? RetainPool.smallSize : max(count, RetainPool.largeSize))
    }

    func give(_ chunk: RetainChunk) {
        chunk.used = 0
        chunk.users = 0
        idle.withLock { lists in
            switch chunk.capacity {
            case RetainPool.smallSize where lists.small.count < maxIdle: lists.small.append(chunk)
            case RetainPool.largeSize where lists.large.count < maxIdle: lists.large.append(chunk)
            default: break   // freed
            }
        }
    }

    /// Chunks waiting for reuse (small, large), for tests.
    var idleCount: (small: Int, large: Int) { idle.withLock { ($0.small.count, $0.large.count) } }
}

/// Where a write's bytes are copied to while it is in flight: `count` bytes at `start` of `chunk`.
struct RetainSpace {
    let chunk: RetainChunk
    let start: Int
    let count: Int
    var bytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: chunk.bytes + start, count: count) }
}

/// What a file wrote UNSTABLE and the server has not committed: each piece with the write
/// verifier of its reply, in the order the replies came, numbered so a COMMIT can settle
/// exactly the pieces it covers while later writes go on.
struct UncommittedWrites {
    struct Piece {
        var offset: UInt64
        var space: RetainSpace
        var verifier: UInt64
        var sequence: UInt64
    }
    private(set) var pieces: [Piece] = []
    /// Bytes in `pieces`.
    private(set) var bytes = 0
    private var nextSequence: UInt64 = 0
    /// The chunk copies go to while it has room.
    private var tail: RetainChunk?

    /// The sequence number of the newest piece, if any.
    var newest: UInt64? { pieces.last?.sequence }

    /// Room for a write of `count` bytes, contiguous; hold it until `finish`.
    mutating func reserve(_ count: Int, from pool: RetainPool) -> RetainSpace {
        // A full tail is left to its users: the last one gives it back.
        if tail == nil || tail!.room < count { tail = pool.take(atLeast: count) }
        let chunk = tail!
        let space = RetainSpace(chunk: chunk, start: chunk.used, count: count)
        chunk.used += count
        chunk.users += 1
        return space
    }

    /// Keeps `count` bytes at `at` of `space` (a piece the server took UNSTABLE) as written at `offset`.
    mutating func keep(_ space: RetainSpace, at: Int, count: Int, offset: UInt64, verifier: UInt64) {
        space.chunk.users += 1
        pieces.append(Piece(offset: offset, space: RetainSpace(chunk: space.chunk, start: space.start + at, count: count),
                            verifier: verifier, sequence: nextSequence))
        nextSequence += 1
        bytes += count
    }

    /// Ends the reservation `reserve` made (what was kept stays).
    mutating func finish(_ space: RetainSpace, pool: RetainPool) {
        drop(space.chunk, pool: pool)
    }

    /// Forgets the pieces up to `sequence` (committed, or sent again FILE_SYNC).
    mutating func settle(through sequence: UInt64, pool: RetainPool) {
        let count = pieces.prefix { $0.sequence <= sequence }.count
        for piece in pieces[..<count] {
            bytes -= piece.space.count
            drop(piece.space.chunk, pool: pool)
        }
        pieces.removeFirst(count)
    }

    private mutating func drop(_ chunk: RetainChunk, pool: RetainPool) {
        chunk.users -= 1
        guard chunk.users == 0 else { return }
        if chunk === tail { tail = nil }
        pool.give(chunk)
    }
}
