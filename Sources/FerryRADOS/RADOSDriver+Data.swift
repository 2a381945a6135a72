import CFerry
import FerryCore
#if canImport(Glibc)
import Glibc
#endif

/// File data: byte `o` is at `o mod B` of object `f.INO.(o div B)`. Requests are split at
/// block boundaries and the pieces issued together.
extension RADOSDriver {
    /// The block pieces of `[offset, offset + length)`: (block, offset in block, length,
    /// offset in the request).
    func pieces(offset: UInt64, length: Int) -> [(block: UInt64, at: UInt64, count: Int, position: Int)] {
        var result: [(UInt64, UInt64, Int, Int)] = []
        var position = 0
        while position < length {
            let o = offset + UInt64(position)
            let block = o / blockSize, at = o % blockSize
            let n = min(length - position, Int(blockSize - at))
            result.append((block, at, n, position))
            position += n
        }
        return result
    }

    public func open(_ inode: RADOSInode, flags: Int32, killSuidGid: Bool, _ caller: Credentials) throws(Errno) -> OpenedFile<RADOSFile> {
        if flags & O_TRUNC != 0 && (flags & O_ACCMODE) != O_RDONLY {
            return try inode.dataLock.exclusive { () throws(Errno) -> OpenedFile<RADOSFile> in try openLocked(inode, flags: flags, killSuidGid: killSuidGid, caller) }
        }
        return try openLocked(inode, flags: flags, killSuidGid: killSuidGid, caller)
    }

    private func openLocked(_ inode: RADOSInode, flags: Int32, killSuidGid: Bool, _ caller: Credentials) throws(Errno) -> OpenedFile<RADOSFile> {
        try meta.withLock { () throws(Errno) -> OpenedFile<RADOSFile> in
            if inode.removed { throw .stale }
            if inode.record.isDirectory { throw .isDirectory }
            guard inode.record.isRegular else { throw .noDevice }
            let writes = (flags & O_ACCMODE) != O_RDONLY
            if writes || flags & O_TRUNC != 0 { try checkWritable() }
            if flags & O_TRUNC != 0 && writes {
                try truncateData(inode, to: 0)
                let now = Timestamp.now()
                inode.record.size = 0
                inode.record.allocated = 0
                inode.record.mtime = now
                inode.record.ctime = now
                if killSuidGid { killSetID(inode, caller) }
                try persist(inode)
            }
            inode.openCount += 1
            return OpenedFile(file: RADOSFile(inode, flags: flags))
        }
    }

    public func create(_ parent: RADOSInode, _ name: FileName, mode: UInt32, flags: Int32, _ caller: Credentials) throws(Errno) -> (Entry, OpenedFile<RADOSFile>) {
        try create(parent, name, mode: mode, flags: flags, killSuidGid: false, caller)
    }

    /// CREATE comes after the kernel's negative LOOKUP, so another client may have made the
    /// name since. Without O_EXCL that file is opened as OPEN would (O_TRUNC empties it), as
    /// POSIX and NFS do; with O_EXCL, EEXIST.
    public func create(_ parent: RADOSInode, _ name: FileName, mode: UInt32, flags: Int32, killSuidGid: Bool,
                       _ caller: Credentials) throws(Errno) -> (Entry, OpenedFile<RADOSFile>) {
        enum Found { case created(Entry, OpenedFile<RADOSFile>), existing(RADOSInode) }
        let found = try meta.withLock { () throws(Errno) -> Found in
            try requireDirectory(parent)
            if let d = try dentry(parent, Array(name.bytes)) {
                guard flags & O_EXCL == 0 else { throw .exists }
                guard let inode = try loadInodeIfPresent(d.ino) else {
                    logger.error("\(name.string) in directory \(parent.ino) names missing inode \(d.ino); run ferry fsck")
                    throw .io
                }
                return .existing(inode)
            }
            let inode = try makeNode(parent, name, mode: FileMode.regular | (mode & 0o7777), caller)
            inode.openCount += 1
            return .created(entry(inode), OpenedFile(file: RADOSFile(inode, flags: flags & ~O_EXCL)))
        }
        switch found {
        case .created(let entry, let opened):
            return (entry, opened)
        case .existing(let inode):
            // Outside `meta`: a truncating open takes the data lock before it (`open`). Removed
            // in between: ESTALE, as an OPEN racing the removal gets.
            let opened = try open(inode, flags: flags & ~O_EXCL, killSuidGid: killSuidGid, caller)
            return (meta.locked { entry(inode) }, opened)
        }
    }

    /// The mode once the kernel's request to kill set-id bits is carried out, as Linux does
    /// it (setattr_should_drop_suidgid): setuid goes; setgid goes when the file is
    /// group-executable, or when the caller is neither root nor in the file's group.
    func modeAfterKillingSetID(_ r: InodeRecord, _ caller: Credentials) -> UInt32 {
        var mode = r.mode & ~FileMode.setUID
        let inGroup = caller.uid == 0 || caller.gid == r.gid || caller.groups.contains(r.gid)
        if mode & 0o010 != 0 || !inGroup { mode &= ~FileMode.setGID }
        return mode
    }

    func killSetID(_ inode: RADOSInode, _ caller: Credentials) {
        inode.record.mode = modeAfterKillingSetID(inode.record, caller)
    }

    public func read(_ file: RADOSFile, offset: UInt64, into buffers: IOVectors, _ caller: Credentials) throws(Errno) -> Int {
        let size = meta.locked { file.inode.record.size }
        guard offset < size else { return 0 }
        let length = Int(min(UInt64(buffers.totalLength), size - offset))
        if length == 0 { return 0 }
        // One contiguous destination: the caller's own buffer when it is one piece.
        let direct = buffers.count == 1
        let destination = direct
            ? UnsafeMutableRawBufferPointer(start: buffers.base[0].iov_base, count: length)
            : UnsafeMutableRawBufferPointer.allocate(byteCount: length, alignment: 16)
        defer { if !direct { destination.deallocate() } }
        var failure: Int32 = 0
        let batch = pool.batch()
        for p in pieces(offset: offset, length: length) {
            let slice = UnsafeMutableRawBufferPointer(rebasing: destination[p.position..<(p.position + p.count)])
            batch.read(Layout.dataObject(file.inode.ino, p.block), into: slice, at: p.at) { rc in
                if rc == -ENOENT {
                    slice.initializeMemory(as: UInt8.self, repeating: 0)
                } else if rc < 0 {
                    failure = rc
                } else if Int(rc) < slice.count {
                    // Past the object's end, within the file: a hole.
                    UnsafeMutableRawBufferPointer(rebasing: slice[Int(rc)...]).initializeMemory(as: UInt8.self, repeating: 0)
                }
            }
        }
        batch.wait()
        if failure < 0 {
            logger.error("reading inode \(file.inode.ino): \(RADOSError(-failure, "read"))")
            throw .io
        }
        if !direct { buffers.copyIn(UnsafeRawBufferPointer(destination)) }
        return length
    }

    public func write(_ file: RADOSFile, offset: UInt64, from buffers: IOVectors, killSuidGid: Bool, _ caller: Credentials) throws(Errno) -> Int {
        try file.inode.dataLock.shared { () throws(Errno) -> Int in
            try writeLocked(file, offset: offset, from: buffers, killSuidGid: killSuidGid, caller)
        }
    }

    /// A write, with the inode's data lock held shared.
    private func writeLocked(_ file: RADOSFile, offset: UInt64, from buffers: IOVectors, killSuidGid: Bool, _ caller: Credentials) throws(Errno) -> Int {
        let length = buffers.totalLength
        let parts = pieces(offset: offset, length: length)
        try meta.withLock { () throws(Errno) in
            try checkWritable()
            if length > 0 { try mapBlocks(file.inode, parts.map(\.block)) }
        }
        if length == 0 { return 0 }
        let direct = buffers.count == 1
        let source = direct
            ? UnsafeRawBufferPointer(start: buffers.base[0].iov_base, count: length)
            : {
                let b = UnsafeMutableRawBufferPointer.allocate(byteCount: length, alignment: 16)
                buffers.copyOut(into: b)
                return UnsafeRawBufferPointer(b)
            }()
        defer { if !direct { UnsafeMutableRawBufferPointer(mutating: source).deallocate() } }
        var failure: Int32 = 0
        let batch = pool.batch()
        for p in parts {
            let slice = UnsafeRawBufferPointer(rebasing: source[p.position..<(p.position + p.count)])
            batch.write(Layout.dataObject(file.inode.ino, p.block), slice, at: p.at) { rc in
                if rc < 0 { failure = rc }
            }
        }
        batch.wait()
        if failure < 0 {
            logger.error("writing inode \(file.inode.ino): \(RADOSError(-failure, "write"))")
            throw radosErrno(failure)
        }
        try meta.withLock { () throws(Errno) in
            let inode = file.inode
            let now = Timestamp.now()
            inode.record.size = max(inode.record.size, offset + UInt64(length))
            inode.record.allocated = min(inode.record.allocated + UInt64(length), inode.record.size)
            inode.record.mtime = now
            inode.record.ctime = now
            if killSuidGid && modeAfterKillingSetID(inode.record, caller) != inode.record.mode {
                killSetID(inode, caller)
                try persist(inode)
            } else {
                markDirty(inode)
            }
        }
        return length
    }

    public func flush(_ file: RADOSFile, lockOwner: UInt64, _ caller: Credentials) throws(Errno) {
        try meta.withLock { () throws(Errno) in if file.inode.dirty && !file.inode.removed { try persist(file.inode) } }
    }

    public func fsync(_ file: RADOSFile, dataOnly: Bool, _ caller: Credentials) throws(Errno) {
        // Data writes are durable when they return; the size must be too.
        try flush(file, lockOwner: 0, caller)
    }

    public func release(_ file: RADOSFile, flags: Int32, _ caller: Credentials) {
        meta.locked {
            let inode = file.inode
            inode.openCount -= 1
            if inode.removed { return }
            if inode.record.nlink == 0 && inode.openCount == 0 {
                // Queued when its last name went; the worker skipped it while it was open.
                purgeWorker.wake()
            } else if inode.dirty {
                // RELEASE has no reply to carry an error (FLUSH, before it, did): the record
                // stays dirty and the next write-back (fsync, syncfs, lease renewal) retries it.
                do { try persist(inode) } catch { logger.error("writing back inode \(inode.ino) at release failed: \(error)") }
            }
        }
    }

    /// Removes or trims the data objects past `size`, walking the object map (before the
    /// record says `size`, so a crash can never let old bytes reappear when the file grows
    /// again). Called with `meta` and the data lock (exclusive) held.
    func truncateData(_ inode: RADOSInode, to size: UInt64) throws(Errno) {
        guard size < inode.record.size else { return }
        var firstWhole = size / blockSize
        if size % blockSize != 0 {
            let rc = pool.write(Layout.dataObject(inode.ino, firstWhole)) { op in op.assertExists(); op.truncate(size % blockSize) }
            if rc < 0 && rc != -ENOENT { throw radosErrno(rc) }
            firstWhole += 1
        }
        let removed = try RADOSObjectMap.removeBlocks(pool, inode.ino, from: firstWhole, check: checkWritable)
        inode.mappedBlocks.subtract(removed)
    }

    /// Zeroes `[offset, end)`: whole blocks by removing the objects the map lists in it, the
    /// partial blocks at either end by zeroing their objects if they exist.
    func punchHole(_ inode: RADOSInode, from offset: UInt64, to end: UInt64) throws(Errno) {
        let firstBlock = offset / blockSize, lastBlock = (end - 1) / blockSize
        let firstWhole = offset % blockSize == 0 ? firstBlock : firstBlock + 1
        let wholeEnd = end / blockSize
        func zero(_ block: UInt64, _ from: UInt64, _ to: UInt64) throws(Errno) {
            let rc = pool.write(Layout.dataObject(inode.ino, block)) { op in op.assertExists(); op.zero(from, to - from) }
            if rc < 0 && rc != -ENOENT { throw radosErrno(rc) }
        }
        if firstWhole > firstBlock {
            try zero(firstBlock, offset % blockSize, firstBlock == lastBlock ? end - firstBlock * blockSize : blockSize)
        }
        if end % blockSize != 0 && lastBlock >= firstWhole {
            try zero(lastBlock, 0, end - lastBlock * blockSize)
        }
        if firstWhole < wholeEnd {
            let removed = try RADOSObjectMap.removeBlocks(pool, inode.ino, from: firstWhole, below: wholeEnd, check: checkWritable)
            inode.mappedBlocks.subtract(removed)
        }
    }

    public func fallocate(_ file: RADOSFile, mode: Int32, offset: UInt64, length: UInt64, _ caller: Credentials) throws(Errno) {
        // Punching excludes writes (as truncate does); the data lock comes before `meta`.
        try file.inode.dataLock.exclusive { () throws(Errno) in
            try fallocateLocked(file, mode: mode, offset: offset, length: length)
        }
    }

    private func fallocateLocked(_ file: RADOSFile, mode: Int32, offset: UInt64, length: UInt64) throws(Errno) {
        let keepSize = Int32(FERRY_FALLOC_FL_KEEP_SIZE), punchHole = Int32(FERRY_FALLOC_FL_PUNCH_HOLE)
        try meta.withLock { () throws(Errno) in
            try checkWritable()
            let inode = file.inode
            switch mode {
            case 0:
                // Objects are allocated on write; only the size changes.
                if offset + length > inode.record.size {
                    inode.record.size = offset + length
                    inode.record.ctime = Timestamp.now()
                    try persist(inode)
                }
            case keepSize:
                return
            case punchHole | keepSize:
                let end = min(offset + length, inode.record.size)
                guard offset < end else { return }
                try self.punchHole(inode, from: offset, to: end)
                inode.record.ctime = Timestamp.now()
                inode.record.mtime = inode.record.ctime
                markDirty(inode)
            default:
                throw .notSupported
            }
        }
    }

    /// SEEK_DATA / SEEK_HOLE at object granularity (an object's bytes are data, the rest
    /// holes), through the object map: the cost follows the objects, not the size.
    public func lseek(_ file: RADOSFile, offset: UInt64, whence: Int32, _ caller: Credentials) throws(Errno) -> UInt64 {
        let size = meta.locked { file.inode.record.size }
        guard offset < size else { throw .noDevice }
        switch whence {
        case Int32(FERRY_SEEK_DATA): return try seekData(file.inode.ino, offset: offset, size: size)
        case Int32(FERRY_SEEK_HOLE): return try seekHole(file.inode.ino, offset: offset, size: size)
        default: throw .invalid
        }
    }
}
