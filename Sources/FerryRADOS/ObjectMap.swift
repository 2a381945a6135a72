import FerryCore
#if canImport(Glibc)
import Glibc
#endif

/// The object map of a regular file: omap keys `b.BLOCK` of its inode object, one for every
/// data object that may exist. A key is written before its object's first write, and
/// removed only after its object, so every object that exists is listed. Truncate, unlink
/// (purge) and SEEK_DATA/SEEK_HOLE walk these keys: their cost follows the objects the file
/// stores, never its size (a 1 PB sparse file with three objects costs three removes).
enum RADOSObjectMap {
    /// Up to `max` mapped blocks of `ino` from block `first` on, ascending, and whether more
    /// may follow. A missing inode object has none.
    static func blocks(_ pool: RADOSPool, _ ino: UInt64, from first: UInt64, max: Int = 1024)
        -> Result<(blocks: [UInt64], more: Bool), RADOSError> {
        let after = first == 0 ? nil : Layout.objectMapKey(first - 1)
        switch pool.omapList(Layout.inodeObject(ino), after: after, prefix: Layout.objectMapPrefix, max: max) {
        case .failure(let e): return .failure(e)
        case .success(let page):
            let blocks = page.entries.compactMap { Layout.block(ofObjectMapKey: $0.0) }
            return .success((blocks, page.more && !blocks.isEmpty))
        }
    }

    /// Removes the data objects of the mapped blocks in `first ..< end`, a page at a time,
    /// then their keys; `check` runs before each page (the lease must still be held).
    /// Returns the blocks removed.
    @discardableResult
    static func removeBlocks(_ pool: RADOSPool, _ ino: UInt64, from first: UInt64, below end: UInt64 = .max,
                             check: () throws(Errno) -> Void = {}) throws(Errno) -> [UInt64] {
        var removed: [UInt64] = []
        var next = first
        while next < end {
            try check()
            let page: (blocks: [UInt64], more: Bool)
            switch blocks(pool, ino, from: next) {
            case .failure: throw .io
            case .success(let p): page = p
            }
            let blocks = page.blocks.filter { $0 < end }
            if blocks.isEmpty { break }
            var failure: Int32 = 0
            let batch = pool.batch()
            for b in blocks {
                batch.remove(Layout.dataObject(ino, b)) { rc in if rc < 0 && rc != -ENOENT { failure = rc } }
            }
            batch.wait()
            if failure < 0 { throw radosErrno(failure) }
            let keys = blocks.map(Layout.objectMapKey)
            let rc = pool.write(Layout.inodeObject(ino)) { op in op.omapRemove(keys) }
            if rc < 0 && rc != -ENOENT { throw radosErrno(rc) }
            removed += blocks
            if blocks.count < page.blocks.count || !page.more { break }
            next = blocks.last! + 1
        }
        return removed
    }

    /// Removes what is left of an inode whose last name is gone: its data objects (those its
    /// map lists), then the inode object, then its purge queue entry. Every step is
    /// idempotent, so a purge cut short is finished by doing it again.
    static func purge(_ pool: RADOSPool, _ ino: UInt64, check: () throws(Errno) -> Void = {}) throws(Errno) {
        try removeBlocks(pool, ino, from: 0, check: check)
        try check()
        var rc = pool.remove(Layout.inodeObject(ino))
        if rc < 0 && rc != -ENOENT { throw radosErrno(rc) }
        rc = pool.write(Layout.purgeObject) { op in op.omapRemove([Layout.purgeKey(ino)]) }
        if rc < 0 && rc != -ENOENT { throw radosErrno(rc) }
    }

    /// The inodes waiting in the purge queue.
    static func queued(_ pool: RADOSPool) -> Result<[UInt64], RADOSError> {
        pool.omapAll(Layout.purgeObject).map { $0.compactMap { Layout.ino(ofPurgeKey: $0.0) } }
    }
}

extension RADOSDriver {
    /// Records `blocks` in the object map before any of them is written: one omap op, and
    /// only for blocks not known mapped already, so the write path pays only when a new
    /// object comes into existence. Called with `meta` held.
    func mapBlocks(_ inode: RADOSInode, _ blocks: [UInt64]) throws(Errno) {
        var new: [UInt64] = []
        for b in blocks where !inode.mappedBlocks.contains(b) { new.append(b) }
        if new.isEmpty { return }
        let keys = new.map { (Layout.objectMapKey($0), [UInt8]()) }
        let rc = pool.write(Layout.inodeObject(inode.ino)) { op in
            op.assertExists()
            op.omapSet(keys)
        }
        if rc < 0 {
            logger.error("recording the object map of inode \(inode.ino): \(RADOSError(-rc, "omap set"))")
            throw radosErrno(rc)
        }
        if inode.mappedBlocks.count > 65536 { inode.mappedBlocks.removeAll(keepingCapacity: true) }
        inode.mappedBlocks.formUnion(new)
    }

    /// The size of block `block`'s object (0 when it does not exist).
    func objectSize(_ ino: UInt64, _ block: UInt64) throws(Errno) -> UInt64 {
        switch pool.size(Layout.dataObject(ino, block)) {
        case .failure: throw .io
        case .success(let s): return s ?? 0
        }
    }

    func mappedBlocks(_ ino: UInt64, from first: UInt64, max: Int) throws(Errno) -> (blocks: [UInt64], more: Bool) {
        switch RADOSObjectMap.blocks(pool, ino, from: first, max: max) {
        case .failure(let e):
            logger.error("\(e)")
            throw .io
        case .success(let page): return page
        }
    }

    /// SEEK_DATA: the first byte at or after `offset` inside an object, walking the map.
    func seekData(_ ino: UInt64, offset: UInt64, size: UInt64) throws(Errno) -> UInt64 {
        let last = (size - 1) / blockSize
        var next = offset / blockSize
        while next <= last {
            let page = try mappedBlocks(ino, from: next, max: 64)
            for b in page.blocks {
                if b > last { throw .noDevice }
                let start = b * blockSize, dataEnd = start + (try objectSize(ino, b))
                let from = max(offset, start)
                if from < dataEnd { return min(from, size) }
            }
            if !page.more { break }
            next = page.blocks.last! + 1
        }
        throw .noDevice
    }

    /// SEEK_HOLE: the first byte at or after `offset` outside every object (the size at
    /// the latest), walking the run of mapped blocks that starts at `offset`.
    func seekHole(_ ino: UInt64, offset: UInt64, size: UInt64) throws(Errno) -> UInt64 {
        let last = (size - 1) / blockSize
        var expected = offset / blockSize
        while expected <= last {
            let page = try mappedBlocks(ino, from: expected, max: 64)
            for b in page.blocks {
                // A block missing from the map is a hole.
                if b != expected { break }
                let start = b * blockSize, dataEnd = start + (try objectSize(ino, b))
                let from = max(offset, start)
                if from >= dataEnd || dataEnd < start + blockSize { return min(max(from, dataEnd), size) }
                expected = b + 1
                if expected > last { return size }
            }
            if !page.more || page.blocks.last! + 1 != expected { break }
        }
        return min(max(offset, expected * blockSize), size)
    }
}
