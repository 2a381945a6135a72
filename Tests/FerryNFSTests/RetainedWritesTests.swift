@testable import FerryNFS
import Testing

/// The bookkeeping of retained UNSTABLE writes, without a server.
@Suite struct RetainedWritesTests {
    @Test func aCommittedWriteGivesItsMemoryBackForTheNextOne() {
        let pool = RetainPool(maxIdle: 4)
        var writes = UncommittedWrites()
        let space = writes.reserve(1 << 20, from: pool)
        writes.keep(space, at: 0, count: 1 << 20, offset: 0, verifier: 7)
        writes.finish(space, pool: pool)
        #expect(writes.bytes == 1 << 20 && pool.idleCount.large == 0)
        writes.settle(through: writes.newest!, pool: pool)
        #expect(writes.bytes == 0 && writes.pieces.isEmpty)
        #expect(pool.idleCount.large == 1, "the settled chunk was not given back")
        let again = writes.reserve(1 << 20, from: pool)
        #expect(again.chunk === space.chunk, "a fresh chunk was allocated although one was idle")
        #expect(pool.idleCount.large == 0)
        writes.finish(again, pool: pool)
    }

    @Test func smallWritesShareOneSmallChunk() {
        let pool = RetainPool(maxIdle: 4)
        var writes = UncommittedWrites()
        var chunks: [ObjectIdentifier] = []
        for i in 0..<16 {
            let space = writes.reserve(4096, from: pool)
            writes.keep(space, at: 0, count: 4096, offset: UInt64(i) * 4096, verifier: 1)
            writes.finish(space, pool: pool)
            chunks.append(ObjectIdentifier(space.chunk))
        }
        #expect(Set(chunks).count == 1)
        #expect(writes.pieces[0].space.chunk.capacity == RetainPool.smallSize)
        writes.settle(through: writes.newest!, pool: pool)
        #expect(pool.idleCount.small == 1)
    }

    @Test func settlingStopsAtTheCommittedSequenceAndKeepsLaterWrites() {
        let pool = RetainPool(maxIdle: 4)
        var writes = UncommittedWrites()
        for i in 0..<3 {
            let space = writes.reserve(1 << 20, from: pool)
            writes.keep(space, at: 0, count: 1 << 20, offset: UInt64(i) << 20, verifier: 1)
            writes.finish(space, pool: pool)
        }
        let through = writes.pieces[1].sequence
        writes.settle(through: through, pool: pool)
        #expect(writes.pieces.map(\.offset) == [2 << 20] && writes.bytes == 1 << 20)
        #expect(pool.idleCount.large == 2)
    }

    @Test func aWriteNothingWasKeptOfReleasesItsReservation() {
        let pool = RetainPool(maxIdle: 4)
        var writes = UncommittedWrites()
        let space = writes.reserve(1 << 20, from: pool)
        writes.finish(space, pool: pool)   // the WRITE failed, or the server took it FILE_SYNC
        #expect(pool.idleCount.large == 1 && writes.pieces.isEmpty)
    }

    @Test func aWriteLargerThanAChunkGetsMemoryOfItsOwnThatIsNotPooled() {
        let pool = RetainPool(maxIdle: 4)
        var writes = UncommittedWrites()
        let space = writes.reserve(3 << 20, from: pool)
        #expect(space.chunk.capacity == 3 << 20)
        writes.finish(space, pool: pool)
        #expect(pool.idleCount.small == 0 && pool.idleCount.large == 0)
    }

    @Test func thePoolKeepsAtMostItsIdleLimit() {
        let pool = RetainPool(maxIdle: 2)
        let chunks = (0..<5).map { _ in pool.take(atLeast: 1 << 20) }
        for chunk in chunks { pool.give(chunk) }
        #expect(pool.idleCount.large == 2)
    }
}
