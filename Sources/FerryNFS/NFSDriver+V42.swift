#if canImport(Glibc)
import Glibc
#endif
import FerryCore
import Synchronization

/// What an NFSv4.2 server turned out to lack or to answer wrongly: asked once, then answered
/// locally with the error a file system without it gives.
struct NFS42Support: OptionSet, Sendable, CustomStringConvertible {
    let rawValue: UInt8
    var description: String {
        [(NFS42Support.noAllocate, "ALLOCATE"), (.noDeallocate, "DEALLOCATE"), (.noSeek, "SEEK"), (.noCopy, "COPY"),
         (.noXattrs, "extended attributes")].filter { contains($0.0) }.map(\.1).joined(separator: ", ")
    }
    static let noAllocate = NFS42Support(rawValue: 1)
    static let noDeallocate = NFS42Support(rawValue: 2)
    static let noSeek = NFS42Support(rawValue: 4)
    static let noCopy = NFS42Support(rawValue: 8)
    static let noXattrs = NFS42Support(rawValue: 16)
}

// NFSv4.2 (RFC 7862) where the export speaks it: fallocate as ALLOCATE and DEALLOCATE, SEEK_DATA
// and SEEK_HOLE as SEEK, copy_file_range as COPY, and `user.` extended attributes as RFC 8276's
// operations. On v3, v4.0 and v4.1 each answers ENOSYS, as before (the kernel then says
// EOPNOTSUPP, or treats the file as all data, or copies itself); a v4.2 server that answers
// NOTSUPP gets the same from then on.
extension NFSDriver {
    // Linux's values (fcntl.h, linux/falloc.h, sys/xattr.h), which Glibc does not export to Swift.
    private static let seekData: Int32 = 3, seekHole: Int32 = 4
    private static let fallocKeepSize: Int32 = 1, fallocPunchHole: Int32 = 2
    private static let xattrCreate: Int32 = 1, xattrReplace: Int32 = 2

    var speaks42: Bool { v4?.minor == .v2 }

    /// Marks `what` as missing on the server and returns the errno a file system without it gives.
    private func lacks(_ what: NFS42Support, _ error: Errno) -> Errno {
        let first = missing42.withLock { m in defer { m.insert(what) }; return !m.contains(what) }
        if first { logger.info("NFS server \(client.options.server) does not do \(what) over NFSv4.2: answered locally from now on") }
        return error
    }

    private func unsupported(_ error: Errno) -> Bool { error == .notSupported || error == .notImplemented }

    /// v4.2 operations answer NOTSUPP (EOPNOTSUPP by `Errno(nfs4:)`) or OP_ILLEGAL when missing.
    private func compound42<T>(_ caller: Credentials, _ build: @escaping (inout NFS4Request, NFS4Session.Info) -> Void,
                               decode: @escaping (inout NFS4Reply) throws(NFS4Error) -> T) throws(Errno) -> T {
        try client.compound(caller, build, decode: { r throws(NFS4Error) -> T in
            do throws(NFS4Error) { return try decode(&r) } catch {
                if case .status(let s) = error, NFS4Status.unsupported(s) { throw .status(NFS4Status.notsupp) }
                throw error
            }
        })
    }

    public func fallocate(_ file: NFSFile, mode: Int32, offset: UInt64, length: UInt64, _ caller: Credentials) throws(Errno) {
        guard speaks42 else { throw .notImplemented }
        let punch = mode == NFSDriver.fallocPunchHole | NFSDriver.fallocKeepSize
        let keepSize = mode == NFSDriver.fallocKeepSize
        guard mode == 0 || punch || keepSize else { throw .notSupported }
        let what: NFS42Support = punch ? .noDeallocate : .noAllocate
        if missing42.withLock({ $0.contains(what) }) { throw .notSupported }
        drainWritesBehind(file.inode)
        let handle = file.inode.handle
        // ALLOCATE may grow the file (ganesha's VFS FSAL runs fallocate mode 0); KEEP_SIZE past
        // the end sets the size back in the same COMPOUND. Another client extending the file
        // between the GETATTR and that COMPOUND would see its size set back: documented.
        var restore: UInt64?
        if keepSize {
            let size = try getattr(handle, caller).size
            if offset &+ length > size { restore = size }
        }
        var sizeBack = unchangedAttributes()
        if let restore { sizeBack.size.set_it = 1; sizeBack.size.set_size3_u.size = restore }
        let change = Encoded4(sizeBack)
        do throws(Errno) {
            try compound42(caller, { c, _ in
                c.putfh(handle)
                if punch { c.deallocate(offset: offset, length: length) } else { c.allocate(offset: offset, length: length) }
                if restore != nil { c.setattr(change) }
            }, decode: { r throws(NFS4Error) in
                try r.putfh()
                if punch { try r.deallocate() } else { try r.allocate() }
                if restore != nil { try r.setattr() }
            })
        } catch where unsupported(error) {
            throw lacks(what, .notSupported)
        }
    }

    public func lseek(_ file: NFSFile, offset: UInt64, whence: Int32, _ caller: Credentials) throws(Errno) -> UInt64 {
        guard speaks42, whence == NFSDriver.seekData || whence == NFSDriver.seekHole, !missing42.withLock({ $0.contains(.noSeek) }) else {
            throw .notImplemented
        }
        drainWritesBehind(file.inode)
        let hole = whence == NFSDriver.seekHole
        do throws(Errno) {
            // No data (or hole) at or after `offset` comes back as NFS4ERR_NXIO: ENXIO.
            let (_, found) = try seek4(file.inode.handle, offset, hole: hole, caller)
            // A server must not answer before the offset asked, and data and a hole cannot
            // start at the same place: nfs-ganesha 4.3's VFS FSAL answers 0 to everything.
            var consistent = found >= offset
            if consistent && found == offset {
                // The other question failing (no data after a hole: ENXIO) is consistent too.
                let other = try? seek4(file.inode.handle, offset, hole: !hole, caller)
                consistent = other?.offset != offset
            }
            guard consistent else {
                logger.warning("NFS server \(client.options.server) answered SEEK inconsistently (offset \(offset): \(found)): SEEK_DATA/SEEK_HOLE not used on this export")
                throw lacks(.noSeek, .notImplemented)
            }
            return found
        } catch where unsupported(error) {
            throw lacks(.noSeek, .notImplemented)
        }
    }

    private func seek4(_ handle: FileHandle, _ offset: UInt64, hole: Bool, _ caller: Credentials) throws(Errno) -> (eof: Bool, offset: UInt64) {
        try compound42(caller, { c, _ in c.putfh(handle); c.seek(offset: offset, hole: hole) }, decode: { r throws(NFS4Error) in
            try r.putfh(); return try r.seek()
        })
    }

    public func copyFileRange(from source: NFSFile, at sourceOffset: UInt64, to destination: NFSFile, at destinationOffset: UInt64,
                              length: UInt64, flags: UInt64, _ caller: Credentials) throws(Errno) -> Int {
        guard speaks42, !missing42.withLock({ $0.contains(.noCopy) }) else { throw .notImplemented }
        drainWritesBehind(source.inode)
        drainWritesBehind(destination.inode)
        let from = source.inode.handle, to = destination.inode.handle
        let count = min(length, UInt64(UInt32.max))
        do throws(Errno) {
            let copied = try compound42(caller, { c, _ in
                c.putfh(from); c.savefh(); c.putfh(to); c.copy(from: sourceOffset, to: destinationOffset, count: count)
            }, decode: { r throws(NFS4Error) in
                try r.putfh(); try r.savefh(); try r.putfh(); return try r.copy()
            })
            // The copy is the server's own write: made stable now, as a synchronous WRITE is.
            _ = try client.compound(caller, { c, _ in c.putfh(to); c.commit() }, decode: { r throws(NFS4Error) in
                try r.putfh(); return try r.commit()
            })
            return Int(min(copied, count))
        } catch where unsupported(error) {
            throw lacks(.noCopy, .notImplemented)
        }
    }

    // MARK: - Extended attributes (RFC 8276: the `user.` namespace only)

    private static let userPrefix = Array("user.".utf8)

    /// The name without `user.`; other namespaces cannot travel (EOPNOTSUPP, as a file system
    /// without them answers).
    private func xattrName(_ name: AttributeName) throws(Errno) -> [UInt8] {
        guard speaks42, !missing42.withLock({ $0.contains(.noXattrs) }) else {
            throw speaks42 ? .notSupported : .notImplemented
        }
        guard name.bytes.starts(with: NFSDriver.userPrefix), name.bytes.count > NFSDriver.userPrefix.count else { throw .notSupported }
        return Array(name.bytes.dropFirst(NFSDriver.userPrefix.count))
    }

    private func xattrCall<T>(_ caller: Credentials, _ build: @escaping (inout NFS4Request, NFS4Session.Info) -> Void,
                              decode: @escaping (inout NFS4Reply) throws(NFS4Error) -> T) throws(Errno) -> T {
        do throws(Errno) { return try compound42(caller, build, decode: decode) } catch where unsupported(error) {
            throw lacks(.noXattrs, .notSupported)
        } catch where error == Errno(nfs4: NFS4Status.noXattr) {
            throw .noData
        }
    }

    public func getxattr(_ inode: NFSInode, name: AttributeName, into buffer: UnsafeMutableRawBufferPointer, _ caller: Credentials) throws(Errno) -> Int {
        let n = try xattrName(name)
        let handle = inode.handle
        return try xattrCall(caller, { c, _ in c.putfh(handle); n.withUnsafeBytes { c.getxattr($0) } }, decode: { r throws(NFS4Error) -> Int in
            try r.putfh()
            let value = try r.getxattr()
            if buffer.isEmpty { return value.count }
            guard value.count <= buffer.count else { throw .status(NFS4Status.range) }
            if !value.isEmpty { buffer.baseAddress!.copyMemory(from: value.baseAddress!, byteCount: value.count) }
            return value.count
        })
    }

    public func setxattr(_ inode: NFSInode, name: AttributeName, value: UnsafeRawBufferPointer, flags: Int32, _ caller: Credentials) throws(Errno) {
        let n = try xattrName(name)
        let handle = inode.handle, v = Array(value)
        let how: UInt32 = flags & NFSDriver.xattrCreate != 0 ? 1 : flags & NFSDriver.xattrReplace != 0 ? 2 : 0
        try xattrCall(caller, { c, _ in
            c.putfh(handle); n.withUnsafeBytes { name in v.withUnsafeBytes { c.setxattr(name, $0, how: how) } }
        }, decode: { r throws(NFS4Error) in try r.putfh(); try r.setxattr() })
    }

    public func removexattr(_ inode: NFSInode, name: AttributeName, _ caller: Credentials) throws(Errno) {
        let n = try xattrName(name)
        let handle = inode.handle
        try xattrCall(caller, { c, _ in c.putfh(handle); n.withUnsafeBytes { c.removexattr($0) } }, decode: { r throws(NFS4Error) in
            try r.putfh(); try r.removexattr()
        })
    }

    public func listxattr(_ inode: NFSInode, into buffer: UnsafeMutableRawBufferPointer, _ caller: Credentials) throws(Errno) -> Int {
        guard speaks42 else { throw .notImplemented }
        if missing42.withLock({ $0.contains(.noXattrs) }) { throw .notSupported }
        let handle = inode.handle
        var list: [UInt8] = [], cookie: UInt64 = 0
        // Bounded: a server that never says eof stops at the XATTR_LIST_MAX the kernel allows.
        for _ in 0..<1024 {
            let asked = cookie
            let (next, eof) = try xattrCall(caller, { c, _ in c.putfh(handle); c.listxattrs(cookie: asked, maxcount: 65536) },
                                            decode: { r throws(NFS4Error) in
                try r.putfh()
                return try r.listxattrs { name in list += NFSDriver.userPrefix + Array(name) + [0] }
            })
            if list.count > 65536 { throw .range }
            if eof { break }
            cookie = next
        }
        if buffer.isEmpty { return list.count }
        guard list.count <= buffer.count else { throw .range }
        buffer.copyBytes(from: list)
        return list.count
    }
}
