#if canImport(Glibc)
import Glibc
#endif
import CFerry
import FerryCore

/// Live migration of a local directory export (docs/migration.md, "POSIX identities").
///
/// A node's identity carries both ways to find it again: its path under the export root
/// (from `/proc/self/fd`, at switch-over) and its kernel file handle when the file system
/// gives one. The destination uses the one `MigrationOptions.mode` names; with
/// `verifyHandles` a path must lead to the file whose handle came along, and the file type
/// must always match, so a migration never silently hands the guest another file.
extension POSIXDriver {
    public var supportsMigration: Bool { true }

    static let identityVersion: UInt8 = 1

    /// A decoded node identity.
    struct MigratedIdentity {
        var fileType: UInt32
        var inodeNumber: UInt64
        var handle: KernelFileHandle?
        /// Relative to the export root, "" for the root itself; nil when the source found none.
        var path: String?
    }

    // MARK: Source

    public func migrationIdentity(ofNode inode: Inode, _ options: MigrationOptions) throws(Errno) -> [UInt8] {
        try withPathFD(inode) { fd throws(Errno) in
            try identity(ofPathFD: fd, fileType: inode.fileType, handle: inode.usesHandle ? inode.handle : nil,
                         isRoot: inode === rootInode, options)
        }
    }

    public func migrationIdentity(ofFile file: File, _ options: MigrationOptions) throws(Errno) -> [UInt8] {
        let flags = ferry_fcntl_int(file.fd, F_GETFL, 0)
        if flags < 0 { throw ownFailure("fcntl(F_GETFL)") }
        var w = MigrationWriter()
        w.u8(Self.identityVersion)
        w.u32(UInt32(bitPattern: flags))
        w.blob(try identity(ofOpenFD: file.fd, options))
        return w.bytes
    }

    public func migrationIdentity(ofDirectory directory: Directory, _ options: MigrationOptions) throws(Errno) -> [UInt8] {
        var w = MigrationWriter()
        w.u8(Self.identityVersion)
        w.blob(try identity(ofOpenFD: directory.fd, options))
        return w.bytes
    }

    private func identity(ofOpenFD fd: Int32, _ options: MigrationOptions) throws(Errno) -> [UInt8] {
        let pathFD = try reopen(fd, flags: oPath | O_CLOEXEC)
        defer { close(pathFD) }
        var stx = statx()
        if !statxFD(pathFD, &stx) { throw ownFailure("statx") }
        return try identity(ofPathFD: pathFD, fileType: stx.fileType, handle: nil, isRoot: stx.stx_ino == rootInode.key.inode
                            && stx.device == rootInode.key.device, options)
    }

    private func identity(ofPathFD fd: Int32, fileType: UInt32, handle known: KernelFileHandle?, isRoot: Bool,
                          _ options: MigrationOptions) throws(Errno) -> [UInt8] {
        var stx = statx()
        if !statxFD(fd, &stx) { throw ownFailure("statx") }
        let handle = known ?? KernelFileHandle(fd, emptyPath, flags: Int32(FERRY_AT_EMPTY_PATH))
        var path: String? = ""
        if !isRoot { path = try pathUnderRoot(fd) }
        if let p = path, !isRoot, options.confirmPaths, !(try pathLeads(p, toInode: stx)) { path = nil }
        // Without a path or a handle there is nothing to find the node by.
        if path == nil && handle == nil { throw .stale }
        var w = MigrationWriter()
        w.u8(Self.identityVersion)
        w.u32(fileType)
        w.u64(stx.stx_ino)
        if let handle {
            w.u8(1)
            w.u32(UInt32(bitPattern: handle.type))
            w.blob(handle.bytes)
        } else {
            w.u8(0)
        }
        if let path {
            w.u8(1)
            w.blob(Array(path.utf8))
        } else {
            w.u8(0)
        }
        return w.bytes
    }

    /// The path of an fd relative to the export root, from `/proc/self/fd`, or nil when
    /// the kernel knows none under the root (deleted, or reached from elsewhere).
    func pathUnderRoot(_ fd: Int32) throws(Errno) -> String? {
        guard let target = try procLink(fd), let root = try procLink(rootInode.pinnedFD) else { return nil }
        if target.hasSuffix(" (deleted)") { return nil }
        let prefix = root == "/" ? "/" : root + "/"
        guard target.hasPrefix(prefix), target.count > prefix.count else { return nil }
        let relative = String(target.dropFirst(prefix.count))
        // A path the destination could not open beneath its root is no path.
        if relative.split(separator: "/", omittingEmptySubsequences: false).contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) {
            return nil
        }
        return relative
    }

    private func procLink(_ fd: Int32) throws(Errno) -> String? {
        try withDescriptorName(fd) { name throws(Errno) -> String? in
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let n = readlinkat(procFD, name, &buffer, Int(PATH_MAX))
            guard n > 0 else { return nil }
            return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }

    /// Whether `path` (under the root) names the file `stx` describes: --migration-confirm-paths.
    private func pathLeads(_ path: String, toInode stx: statx) throws(Errno) -> Bool {
        guard let fd = try? openBeneathRoot(path) else { return false }
        defer { close(fd) }
        var here = statx()
        return statxFD(fd, &here) && here.stx_ino == stx.stx_ino && here.device == stx.device
    }

    /// An O_PATH fd on `path` under the root, never leaving it nor following a symlink.
    private func openBeneathRoot(_ path: String) throws(Errno) -> Int32 {
        if path.isEmpty { return try reopen(rootInode.pinnedFD, flags: oPath | O_CLOEXEC) }
        let fd = ferry_openat2(rootInode.pinnedFD, path, UInt64(oPath | O_NOFOLLOW | O_CLOEXEC), 0, openat2Resolve)
        if fd < 0 { throw Errno.current }
        return fd
    }

    // MARK: Destination

    static func decodeIdentity(_ bytes: [UInt8]) throws(Errno) -> MigratedIdentity {
        var r = MigrationReader(bytes)
        do {
            guard try r.u8() == identityVersion else { throw Errno.protocolError }
            var id = MigratedIdentity(fileType: try r.u32(), inodeNumber: try r.u64())
            if try r.u8() == 1 {
                let type = Int32(bitPattern: try r.u32())
                let bytes = try r.blob()
                guard let handle = KernelFileHandle(type: type, bytes: bytes) else { throw Errno.protocolError }
                id.handle = handle
            }
            if try r.u8() == 1 {
                id.path = String(decoding: try r.blob(), as: UTF8.self)
            }
            guard r.atEnd else { throw Errno.protocolError }
            return id
        } catch let e as Errno {
            throw e
        } catch {
            throw .protocolError
        }
    }

    public func migratedNode(_ identity: [UInt8], _ options: MigrationOptions) throws(Errno) -> Entry {
        let id = try Self.decodeIdentity(identity)
        if id.path == "" { return try root() }
        let fd: Int32
        switch options.mode {
        case .fileHandles:
            guard let handle = id.handle else { throw .stale }
            fd = withUnsafeBytes(of: handle.storage) {
                ferry_open_by_handle(mountFD, $0.baseAddress!.assumingMemoryBound(to: UInt8.self), handle.length, handle.type,
                                     oPath | O_CLOEXEC)
            }
            if fd < 0 { throw Errno.current }
        case .findPaths:
            guard let path = id.path else { throw .stale }
            fd = try openBeneathRoot(path)
            if options.verifyHandles {
                guard let sent = id.handle, let here = KernelFileHandle(fd, emptyPath, flags: Int32(FERRY_AT_EMPTY_PATH)),
                      here.type == sent.type, here.bytes == sent.bytes else {
                    close(fd)
                    throw .stale
                }
            }
        }
        let entry = try makeEntry(pathFD: fd)
        // Never another kind of file under the same node id.
        guard entry.inode.fileType == id.fileType else { throw .stale }
        return entry
    }

    public func migratedFile(_ identity: [UInt8], _ options: MigrationOptions) throws(Errno) -> File {
        var r = MigrationReader(identity)
        let flags: Int32, node: [UInt8]
        do {
            guard try r.u8() == Self.identityVersion else { throw Errno.protocolError }
            flags = Int32(bitPattern: try r.u32())
            node = try r.blob()
        } catch let e as Errno { throw e } catch { throw .protocolError }
        let entry = try migratedNode(node, options)
        try checkRegularFile(entry.inode)
        // As the guest opened it, minus what acts only at open time (O_TRUNC would empty it).
        let openFlags = sanitizedOpenFlags(flags) & ~O_TRUNC
        let fd = try withPathFD(entry.inode) { pathFD throws(Errno) in try reopen(pathFD, flags: openFlags) }
        return File(fd: fd)
    }

    public func migratedDirectory(_ identity: [UInt8], _ options: MigrationOptions) throws(Errno) -> Directory {
        var r = MigrationReader(identity)
        let node: [UInt8]
        do {
            guard try r.u8() == Self.identityVersion else { throw Errno.protocolError }
            node = try r.blob()
        } catch let e as Errno { throw e } catch { throw .protocolError }
        let entry = try migratedNode(node, options)
        guard entry.inode.isDirectory else { throw .notDirectory }
        let fd = try withPathFD(entry.inode) { pathFD throws(Errno) in
            try reopen(pathFD, flags: O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        }
        return Directory(fd: fd, bufferSize: Self.direntBufferSize)
    }
}

extension KernelFileHandle {
    /// The handle's bytes (`length` of them).
    var bytes: [UInt8] {
        withUnsafeBytes(of: storage) { Array($0[0..<Int(min(length, UInt32(FERRY_MAX_HANDLE_SZ)))]) }
    }

    /// A handle received in a migration state; nil if it cannot be one.
    init?(type: Int32, bytes: [UInt8]) {
        guard !bytes.isEmpty, bytes.count <= Int(FERRY_MAX_HANDLE_SZ) else { return nil }
        self.init()
        self.type = type
        self.length = UInt32(bytes.count)
        withUnsafeMutableBytes(of: &storage) { $0.copyBytes(from: bytes) }
    }
}
