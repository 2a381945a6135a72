import FerryCore
#if canImport(Glibc)
import Glibc
#endif

/// User extended attributes: omap of the inode object, key `x.NAME`.
extension RADOSDriver {
    func xattrKey(_ name: AttributeName) -> [UInt8] { Layout.userXattrPrefix + Array(name.bytes) }

    func xattrValue(_ inode: RADOSInode, _ key: [UInt8]) throws(Errno) -> [UInt8]? {
        switch pool.omapValues(Layout.inodeObject(inode.ino), keys: [key]) {
        case .failure: throw .io
        case .success(let values): return values[key]
        }
    }

    public func setxattr(_ inode: RADOSInode, name: AttributeName, value: UnsafeRawBufferPointer, flags: Int32, _ caller: Credentials) throws(Errno) {
        try meta.withLock { () throws(Errno) in
            try checkWritable()
            if value.count > 65536 { throw Errno(E2BIG) }
            let key = xattrKey(name)
            let create: Int32 = 1, replace: Int32 = 2
            if flags & (create | replace) != 0 {
                let exists = try xattrValue(inode, key) != nil
                if flags & create != 0 && exists { throw .exists }
                if flags & replace != 0 && !exists { throw .noData }
            }
            let bytes = Array(value)
            let rc = pool.write(Layout.inodeObject(inode.ino)) { op in
                op.assertExists()
                op.omapSet([(key, bytes)])
            }
            if rc < 0 { throw radosErrno(rc) }
            inode.record.ctime = Timestamp.now()
            markDirty(inode)
        }
    }

    public func getxattr(_ inode: RADOSInode, name: AttributeName, into buffer: UnsafeMutableRawBufferPointer, _ caller: Credentials) throws(Errno) -> Int {
        let value = try meta.withLock { () throws(Errno) -> [UInt8]? in try xattrValue(inode, xattrKey(name)) }
        guard let value else { throw .noData }
        if buffer.count == 0 { return value.count }
        if buffer.count < value.count { throw .range }
        value.withUnsafeBytes { if !$0.isEmpty { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
        return value.count
    }

    public func listxattr(_ inode: RADOSInode, into buffer: UnsafeMutableRawBufferPointer, _ caller: Credentials) throws(Errno) -> Int {
        let entries: [([UInt8], [UInt8])]
        switch pool.omapAll(Layout.inodeObject(inode.ino), prefix: "x.") {
        case .failure: throw .io
        case .success(let e): entries = e
        }
        var list: [UInt8] = []
        for (key, _) in entries { list += key.dropFirst(Layout.userXattrPrefix.count) + [0] }
        if buffer.count == 0 { return list.count }
        if buffer.count < list.count { throw .range }
        list.withUnsafeBytes { if !$0.isEmpty { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
        return list.count
    }

    public func removexattr(_ inode: RADOSInode, name: AttributeName, _ caller: Credentials) throws(Errno) {
        try meta.withLock { () throws(Errno) in
            try checkWritable()
            let key = xattrKey(name)
            guard try xattrValue(inode, key) != nil else { throw .noData }
            let rc = pool.write(Layout.inodeObject(inode.ino)) { op in op.assertExists(); op.omapRemove([key]) }
            if rc < 0 { throw radosErrno(rc) }
            inode.record.ctime = Timestamp.now()
            markDirty(inode)
        }
    }
}
