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
                if killSuidGid { killSetID(inode) }
                try persist(inode)
            }
            inode.openCount += 1
            return OpenedFile(file: RADOSFile(inode))
        }
    }

    public func create(_ parent: RADOSInode, _ name: FileName, mode: UInt32, flags: Int32, _ caller: Credentials) throws(Errno) -> (Entry, OpenedFile<RADOSFile>) {
        try meta.withLock { () throws(Errno) -> (Entry, OpenedFile<RADOSFile>) in
            let inode = try makeNode(parent, name, mode: FileMode.regular | (mode & 0o7777), caller)
            inode.openCount += 1
            return (entry(inode), OpenedFile(file: RADOSFile(inode)))
        }
    }

    func killSetID(_ inode: RADOSInode) {
        inode.record.mode &= ~FileMode.setUID
        if inode.record.mode & 0o010 != 0 { inode.record.mode &= ~FileMode.setGID }
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
        try meta.withLock { () throws(Errno) in try checkWritable() }
        let length = buffers.totalLength
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
        for p in pieces(offset: offset, length: length) {
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
            if killSuidGid && inode.record.mode & (FileMode.setUID | FileMode.setGID) != 0 {
                killSetID(inode)
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
                do { try removeInode(inode) } catch { logger.error("removing unlinked inode \(inode.ino): \(error)") }
            } else if inode.dirty {
                try? persist(inode)
            }
        }
    }

    /// Removes or trims the data objects past `size` (before the record says `size`, so a
    /// crash can never let old bytes reappear when the file grows again).
    func truncateData(_ inode: RADOSInode, to size: UInt64) throws(Errno) {
        let old = inode.record.size
        guard size < old else { return }
        let firstWhole = (size + blockSize - 1) / blockSize
        let end = (old + blockSize - 1) / blockSize
        var failure: Int32 = 0
        let batch = pool.batch()
        if size % blockSize != 0 {
            let partial = Layout.dataObject(inode.ino, size / blockSize)
            batch.write(partial, { op in op.assertExists(); op.truncate(size % blockSize) }) { rc in
                if rc < 0 && rc != -ENOENT { failure = rc }
            }
        }
        if firstWhole < end {
            for b in firstWhole..<end {
                batch.remove(Layout.dataObject(inode.ino, b)) { rc in if rc < 0 && rc != -ENOENT { failure = rc } }
            }
        }
        batch.wait()
        if failure < 0 { throw radosErrno(failure) }
    }

    public func fallocate(_ file: RADOSFile, mode: Int32, offset: UInt64, length: UInt64, _ caller: Credentials) throws(Errno) {
        let keepSize: Int32 = 0x01, punchHole: Int32 = 0x02
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
                var failure: Int32 = 0
                let batch = pool.batch()
                for p in pieces(offset: offset, length: Int(end - offset)) {
                    let oid = Layout.dataObject(inode.ino, p.block)
                    if p.at == 0 && p.count == Int(blockSize) {
                        batch.remove(oid) { rc in if rc < 0 && rc != -ENOENT { failure = rc } }
                    } else {
                        batch.write(oid, { op in op.assertExists(); op.zero(p.at, UInt64(p.count)) }) { rc in
                            if rc < 0 && rc != -ENOENT { failure = rc }
                        }
                    }
                }
                batch.wait()
                if failure < 0 { throw radosErrno(failure) }
                inode.record.ctime = Timestamp.now()
                inode.record.mtime = inode.record.ctime
                markDirty(inode)
            default:
                throw .notSupported
            }
        }
    }

    /// SEEK_DATA / SEEK_HOLE at object granularity: an object's bytes are data, the rest holes.
    public func lseek(_ file: RADOSFile, offset: UInt64, whence: Int32, _ caller: Credentials) throws(Errno) -> UInt64 {
        let size = meta.locked { file.inode.record.size }
        guard offset < size else { throw .noDevice }
        let seekData: Int32 = 3, seekHole: Int32 = 4
        var block = offset / blockSize
        let last = (size - 1) / blockSize
        while block <= last {
            let objectSize: UInt64
            switch pool.size(Layout.dataObject(file.inode.ino, block)) {
            case .failure: throw .io
            case .success(let s): objectSize = s ?? 0
            }
            let start = block * blockSize, dataEnd = start + objectSize
            let from = max(offset, start)
            if whence == seekData, from < dataEnd { return min(from, size) }
            if whence == seekHole, from >= dataEnd || dataEnd < start + blockSize {
                return min(max(from, dataEnd), size)
            }
            block += 1
        }
        if whence == seekHole { return size }
        if whence == seekData { throw .noDevice }
        throw .invalid
    }
}
