#if canImport(Glibc)
import Glibc
#endif
import CNFS
import FerryCore

// Open files, READ and directories (WRITE and COMMIT: NFSDriver+Write.swift).
extension NFSDriver {
    public func open(_ inode: NFSInode, flags: Int32, killSuidGid: Bool, _ caller: Credentials) throws(Errno) -> OpenedFile<NFSFile> {
        switch inode.fileType {
        case UInt32(S_IFREG): break
        case UInt32(S_IFDIR): throw .isDirectory
        case UInt32(S_IFLNK): throw .loop
        default: throw .noDevice
        }
        // Registered before the server is asked, so that an UNLINK from now on hides the file
        // rather than removing it; a removal already under way is waited for, so the call
        // below sees it (ESTALE: the kernel looks the name up again and gets ENOENT) rather
        // than this open succeeding on a file about to vanish.
        let opened = register(inode, flags: flags, caller)
        do throws(Errno) {
            if flags & O_TRUNC != 0 {
                var s = unchangedAttributes()
                s.size.set_it = 1; s.size.set_size3_u.size = 0
                let truncated = try setattr(inode.handle, s, caller)
                if killSuidGid { _ = try clearSetID(inode.handle, try attributesOrFetch(truncated, inode.handle, caller), caller) }
            } else {
                // NFSv3 has no OPEN: ask the server whether this caller may do what the flags say,
                // so an open the server would refuse fails now rather than at the first READ/WRITE.
                var mask: Int32 = 0
                switch flags & O_ACCMODE {
                case O_WRONLY: mask = W_OK
                case O_RDWR: mask = R_OK | W_OK
                default: mask = R_OK
                }
                try access(inode, mask: mask, caller)
            }
        } catch {
            unregister(opened.file)
            // A file removed while the server checked it can come back as a server error
            // rather than ESTALE (CI saw one EIO in NFSRaceTests' open/unlink race, v4, under
            // load). If the file is gone, that is what the guest hears: ESTALE makes the
            // kernel look the name up again. A file still there keeps the server's error.
            if error == .io, isGone(inode.handle, caller) { throw .stale }
            throw error
        }
        return opened
    }

    /// Whether the server says `handle` names no file any more.
    private func isGone(_ handle: FileHandle, _ caller: Credentials) -> Bool {
        do throws(Errno) { _ = try getattr(handle, caller); return false } catch {
            return error == .stale || error == .noEntry
        }
    }

    /// A file just created: nobody else could have removed it before it was registered
    /// except by a name they looked up meanwhile, as after a local create.
    func opened(_ inode: NFSInode, flags: Int32, _ caller: Credentials) -> OpenedFile<NFSFile> {
        register(inode, flags: flags, caller)
    }

    /// Counts an open of `inode` and waits for the removals under way that may concern it.
    private func register(_ inode: NFSInode, flags: Int32, _ caller: Credentials) -> OpenedFile<NFSFile> {
        let file = NFSFile(inode: inode, flags: flags, opener: caller)
        register(file)
        return OpenedFile(file: file)
    }

    /// Counts `file`'s open (a new one, or one a migration brought) and waits for the
    /// removals under way that may concern it.
    func register(_ file: NFSFile) {
        let inode = file.inode
        inode.opens.add(1, ordering: .relaxed)
        let pending = openFiles.withLock { open -> [Removal] in
            open.byHandle[inode.handle, default: OpenFiles.Record()].count += 1
            open.files[ObjectIdentifier(file)] = file
            return open.removals(touching: inode.handle)
        }
        for removal in pending { removal.wait() }
    }

    public func release(_ file: NFSFile, flags: Int32, _ caller: Credentials) {
        do throws(Errno) { try sync(file, caller) } catch {
            logger.warning("NFS WRITE or COMMIT failed, reported at release: \(error)")
        }
        releaseLocks(file, caller)
        unregister(file)
    }

    /// The session ended (the guest's DESTROY, or the kernel's connection closed): its open
    /// files will never be released, so each is flushed (writes behind taken in, COMMIT)
    /// and released here, as its opener; their hidden names go with their last release.
    /// After a migration's save the guest went on at the destination, which took over
    /// the hidden names: they stay on the server.
    public func sessionEnded() {
        let leaving = sessionEndsMigration()
        let files = openFiles.withLock { Array($0.files.values) }
        for file in files {
            do throws(Errno) { try sync(file, file.opener) } catch {
                logger.warning("NFS WRITE or COMMIT failed, reported as the session ended: \(error)")
            }
            releaseLocks(file, file.opener)
            unregister(file, removingHiddenNames: !leaving)
        }
    }

    /// Takes back `file`'s open (once: a release after the session's end finds it gone);
    /// the last open of its file removes its hidden name, if it was unlinked while open,
    /// unless another daemon took it over (`removingHiddenNames` false).
    private func unregister(_ file: NFSFile, removingHiddenNames: Bool = true) {
        let handle = file.inode.handle
        let removal = Removal()
        removal.done.withLock { _ in
            let hiddenNames = openFiles.withLock { open -> [HiddenName] in
                guard open.files.removeValue(forKey: ObjectIdentifier(file)) != nil, var record = open.byHandle[handle] else { return [] }
                file.inode.opens.subtract(1, ordering: .relaxed)
                record.count -= 1
                if record.count > 0 { open.byHandle[handle] = record; return [] }
                open.byHandle[handle] = nil
                if !removingHiddenNames {
                    for hidden in record.hidden { open.hiddenNameGone(from: hidden.directory) }
                    return []
                }
                if !record.hidden.isEmpty {
                    open.removals.append((removal, handle))
                    open.hiddenBeingRemoved[handle, default: 0] += record.hidden.count
                    hiddenRemovalTick()
                }
                return record.hidden
            }
            guard !hiddenNames.isEmpty else { return }
            defer { openFiles.withLock { $0.removals.removeAll { $0.removal === removal } } }
            for hidden in hiddenNames {
                let unlinker = Credentials(uid: hidden.uid, gid: hidden.gid, pid: 0)
                do throws(Errno) {
                    try withCName(hidden.name) { name throws(Errno) in try remove(hidden.directory, name, unlinker) }
                } catch {
                    logger.warning("NFS: could not remove \(hidden.name), unlinked while open: \(error)")
                }
                // Counted until its REMOVE has landed: a GETATTR meanwhile sees it on the server.
                openFiles.withLock { open in
                    let left = (open.hiddenBeingRemoved[handle] ?? 1) - 1
                    open.hiddenBeingRemoved[handle] = left > 0 ? left : nil
                    open.hiddenNameGone(from: hidden.directory)
                }
                hiddenRemovalTick()
            }
        }
    }

    /// Takes `name` out of `directory` with `removeName` (a REMOVE, or a RENAME over it).
    /// If the name is a file someone still has open, it is renamed to a hidden name first
    /// (removed on its last release), and `removeName` runs after that only if
    /// `evenIfHidden` (a RENAME: the name is free now). An OPEN that registers while
    /// `removeName` is under way waits for it.
    func removeOrHide(_ directory: FileHandle, _ name: UnsafePointer<CChar>, _ caller: Credentials, evenIfHidden: Bool,
                      _ removeName: () throws(Errno) -> Void) throws(Errno) {
        let removal = Removal()
        let open = try removal.done.withLock { _ throws(Errno) -> FileHandle? in
            // Nothing open: no LOOKUP needed (the common case); any OPEN from now on waits.
            let nothingOpen = openFiles.withLock { open -> Bool in
                guard open.byHandle.isEmpty else { return false }
                open.removals.append((removal, nil))
                return true
            }
            if !nothingOpen {
                var handle: FileHandle?
                do throws(Errno) { handle = try lookupHandle(directory, name, caller).0 } catch {
                    if error != .noEntry { throw error }
                }
                let isOpen = openFiles.withLock { open -> Bool in
                    if let handle, open.byHandle[handle] != nil { return true }
                    open.removals.append((removal, handle))
                    return false
                }
                if isOpen { return handle }
            }
            defer { openFiles.withLock { $0.removals.removeAll { $0.removal === removal } } }
            try removeName()
            return nil
        }
        guard let open else { return }
        try hide(open, directory, name, caller)
        if evenIfHidden { try removeName() }
    }

    /// Renames the open file `handle`, named `name` in `directory`, to a hidden name.
    private func hide(_ handle: FileHandle, _ directory: FileHandle, _ name: UnsafePointer<CChar>, _ caller: Credentials) throws(Errno) {
        let hiddenName = hiddenPrefix + "\(getpid())-\(hiddenCounter.wrappingAdd(1, ordering: .relaxed).oldValue)"
        // Counted in its directory from before it can exist there to after its REMOVE.
        openFiles.withLock { $0.hiddenIn[directory, default: 0] += 1 }
        do throws(Errno) {
            try withCName(hiddenName) { hidden throws(Errno) in try rename(directory, name, directory, hidden, caller) }
        } catch {
            openFiles.withLock { $0.hiddenNameGone(from: directory) }
            throw error
        }
        let removal = Removal()
        try removal.done.withLock { _ throws(Errno) in
            let still = openFiles.withLock { open -> Bool in
                guard open.byHandle[handle] != nil else {
                    open.removals.append((removal, handle))
                    return false
                }
                open.byHandle[handle]!.hidden.append((directory, hiddenName, caller.uid, caller.gid))
                return true
            }
            if still { return }
            // Released while we were renaming: nobody will remove it later, so do it now.
            defer {
                openFiles.withLock { open in
                    open.removals.removeAll { $0.removal === removal }
                    open.hiddenNameGone(from: directory)
                }
            }
            try withCName(hiddenName) { hidden throws(Errno) in try remove(directory, hidden, caller) }
        }
    }

    /// How long an RMDIR (or a RENAME over a directory) the server found not empty waits for
    /// hidden names in that directory to go. A /dev/fuse kernel sends RELEASE in the
    /// background after close(2) returns, so `rm -rf` can ask to remove a directory before
    /// the release that removes its last (hidden) entry has run; a file still open after
    /// this long keeps its directory, as with the kernel's own NFS client.
    static let hiddenNameWait: Duration = .seconds(2)

    /// After the server refused to remove `name` in `directory` as not empty, in a call sent
    /// when `takeInClock` was at `asked`: true once the hidden names this daemon keeps in it
    /// are gone and one of them may have been what the server found (worth asking again:
    /// one went while this waited, or began or finished going since `asked`, so the server
    /// may have answered before its REMOVE landed); false if none was there or they outlast
    /// `hiddenNameWait`.
    func waitForHiddenNames(in directory: FileHandle, _ name: UnsafePointer<CChar>, asked: UInt64, _ caller: Credentials) -> Bool {
        var waited = false
        if openFiles.withLock({ !$0.hiddenIn.isEmpty }), let victim = try? lookupHandle(directory, name, caller).0 {
            let clock = ContinuousClock()
            let deadline = clock.now.advanced(by: Self.hiddenNameWait)
            while openFiles.withLock({ $0.hiddenIn[victim] != nil }) {
                if clock.now >= deadline { return false }
                waited = true
                usleep(1_000)
            }
        }
        return waited || lastHiddenChange.load(ordering: .sequentiallyConsistent) > asked
    }

    // MARK: - Data

    public func read(_ file: NFSFile, offset: UInt64, into buffers: IOVectors, _ caller: Credentials) throws(Errno) -> Int {
        let total = buffers.totalLength
        if total == 0 { return 0 }
        drainWritesBehind(file.inode)
        let handle = file.inode.handle
        let pieces = (total + readMax - 1) / readMax
        let maxPiece = readMax
        let isV4 = v4 != nil
        // Each piece lands at its place in `buffers`; a short piece (end of file) ends the read.
        let results = try client.perform(caller) { connection, deadline throws(ConnectionFailure) -> [Result<(Int, Bool), Errno>] in
            var results = [Result<(Int, Bool), Errno>](repeating: .failure(.io), count: pieces)
            var calls: [PendingCall] = []
            calls.reserveCapacity(pieces)
            for i in 0..<pieces {
                let start = i * maxPiece
                let count = min(maxPiece, total - start)
                if isV4 {
                    let pieceOffset = offset + UInt64(start)
                    // The data goes from the socket straight into `buffers` when it can.
                    let direct = DirectData(buffers: buffers, start: start, capacity: count)
                    calls.append(try client.send4(on: connection, deadline: deadline, direct: (direct, { reply in
                        guard (try? reply.putfh()) != nil, let (length, _) = try? reply.readHeader() else { return nil }
                        return length
                    }), { c, _ in
                        c.putfh(handle); c.read(offset: pieceOffset, count: count)
                    }, decode: { r in
                        do throws(NFS4Error) {
                            try r.putfh()
                            if let placed = direct.placed {
                                let (length, eof) = try r.readHeader()
                                results[i] = .success((min(placed, length, count), eof))
                                return
                            }
                            let (data, eof) = try r.read()
                            let n = min(data.count, count)
                            if n > 0 { buffers.copyIn(UnsafeRawBufferPointer(rebasing: data[0..<n]), at: start) }
                            results[i] = .success((n, eof))
                        } catch {
                            results[i] = .failure(self.client.failure(error))
                        }
                    }))
                    continue
                }
                calls.append(try connection.send({ rpc, cb, data in
                    handle.withNFS { fh in
                        var args = READ3args(file: fh, offset: offset + UInt64(start), count: count3(count))
                        return rpc_nfs3_read_async(rpc, cb, &args, data)
                    }
                }, onSuccess: { reply in
                    let res = reply.assumingMemoryBound(to: READ3res.self).pointee
                    guard res.status == NFS3_OK else { results[i] = .failure(self.client.failure(nfs3: res.status)); return }
                    let ok = res.READ3res_u.resok
                    let n = min(Int(ok.data.data_len), count)
                    if n > 0 { buffers.copyIn(UnsafeRawBufferPointer(start: ok.data.data_val, count: n), at: start) }
                    results[i] = .success((n, ok.eof != 0))
                }))
            }
            try connection.wait(for: calls, deadline: deadline)
            return results
        }
        var done = 0
        for (i, result) in results.enumerated() {
            switch result {
            case .failure(let error): if done == 0 { throw error } else { return done }
            case .success(let (n, eof)):
                done += n
                if eof || n < min(maxPiece, total - i * maxPiece) { return done }
            }
        }
        return done
    }

    // MARK: - Directories

    public func opendir(_ inode: NFSInode, flags: Int32, _ caller: Credentials) throws(Errno) -> NFSDirectory {
        guard inode.isDirectory else { throw .notDirectory }
        inode.opens.add(1, ordering: .relaxed)
        return NFSDirectory(inode: inode)
    }

    public func releasedir(_ directory: NFSDirectory) {
        directory.inode.opens.subtract(1, ordering: .relaxed)
    }

    /// A hidden name (a file unlinked while open) whose Ferry process on this host is gone:
    /// it crashed or was killed before the last release, so nobody else will remove it.
    /// Names of other hosts' daemons are left alone (they may still be serving).
    func removeIfLeftOver(_ name: [UInt8], in directory: FileHandle, _ caller: Credentials) {
        let prefix = Array(hiddenPrefix.utf8)
        guard name.starts(with: prefix) else { return }
        let pidDigits = name[prefix.count...].prefix { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
        guard let pid = Int32(String(decoding: pidDigits, as: UTF8.self)), pid != getpid(),
              kill(pid, 0) != 0 && errno == ESRCH else { return }
        // Taken over from a daemon that migrated its guest here: ours until our last release.
        let hiddenName = String(decoding: name.prefix { $0 != 0 }, as: UTF8.self)
        let ours = openFiles.withLock { open in
            open.byHandle.values.contains { $0.hidden.contains { $0.directory == directory && $0.name == hiddenName } }
        }
        if ours { return }
        name.withUnsafeBufferPointer { buffer in
            // Sound: `name` ends with the NUL readdir appended.
            let cName = UnsafeRawPointer(buffer.baseAddress!).assumingMemoryBound(to: CChar.self)
            do throws(Errno) { try remove(directory, cName, caller) } catch {
                logger.debug("NFS: leftover \(String(cString: cName)) not removed: \(error)")
            }
        }
    }

    struct ListedEntry { var name: [UInt8]; var fileid: UInt64; var cookie: UInt64; var handle: FileHandle?; var attributes: Attributes? }

    /// READDIRPLUS from `offset` (a server cookie). Entries are copied out and the connection
    /// released before `emit` runs: emitting may LOOKUP, which needs a connection too.
    public func readdir(_ directory: NFSDirectory, at offset: UInt64, _ caller: Credentials,
                        _ emit: (DirectoryEntry) -> Bool) throws(Errno) {
        let handle = directory.inode.handle
        let cookieVerifier = offset == 0 ? 0 : directory.cookieVerifier.withLock { $0 }
        let asked = takeInClock.load(ordering: .sequentiallyConsistent)
        let entries: [ListedEntry], verifierOut: UInt64
        do throws(Errno) {
            (entries, verifierOut) = try inDirectory(handle, caller) { caller throws(Errno) in try listed(handle, offset, cookieVerifier, caller) }
        } catch where error == Errno(ESTALE) {
            // The directory was removed while open (by this guest or another client): an open
            // stream on a removed directory lists nothing more, as on a local file system.
            return
        }
        directory.cookieVerifier.withLock { $0 = verifierOut }
        do throws(Errno) {
            try emitListed(entries, asked: asked, directory, handle, caller, emit)
        } catch where error == Errno(ESTALE) {
            // Removed while being listed (its entries' LOOKUPs find a stale directory): what was
            // emitted stands, and the stream ends there.
            return
        }
    }

    private func listed(_ handle: FileHandle, _ offset: UInt64, _ cookieVerifier: UInt64, _ caller: Credentials) throws(Errno) -> ([ListedEntry], UInt64) {
        if v4 != nil { return try readdir4(handle, cookie: offset, verifier: cookieVerifier, caller) }
        return try client.call(caller, on: handle, rpc_nfs3_readdirplus_async, { fh in
            var args = READDIRPLUS3args()
            args.dir = fh
            args.cookie = offset
            withUnsafeMutableBytes(of: &args.cookieverf) { $0.storeBytes(of: cookieVerifier, as: UInt64.self) }
            args.dircount = 8192
            args.maxcount = 32768
            return args
        }, reply: { (res: READDIRPLUS3res) -> Result<([ListedEntry], UInt64), Errno> in
            let ok = res.READDIRPLUS3res_u.resok
            var list: [ListedEntry] = []
            var e = ok.reply.entries
            while let entry = e {
                var name: [UInt8] = [0]
                if let cName = entry.pointee.name {
                    name = Array(UnsafeRawBufferPointer(start: cName, count: strlen(cName)))
                    name.append(0)
                }
                list.append(ListedEntry(name: name, fileid: entry.pointee.fileid, cookie: entry.pointee.cookie,
                                        handle: FerryNFS.handle(entry.pointee.name_handle),
                                        attributes: attributes(entry.pointee.name_attributes)))
                e = entry.pointee.nextentry
            }
            return .success((list, verifier(ok.cookieverf)))
        })
    }

    private func emitListed(_ entries: [ListedEntry], asked: UInt64, _ directory: NFSDirectory, _ handle: FileHandle, _ caller: Credentials,
                            _ emit: (DirectoryEntry) -> Bool) throws(Errno) {
        let inode = directory.inode
        inode.readdirEntries.withLock { cache in
            for entry in entries {
                if let h = entry.handle, let a = entry.attributes { cache[Array(entry.name.dropLast())] = (h, a, asked) }
            }
        }
        defer { inode.readdirEntries.withLock { $0.removeAll(keepingCapacity: true) } }
        for entry in entries {
            let visible = entry.name.count - 1
            if entry.name.starts(with: ".ferry-unlinked-".utf8) {
                removeIfLeftOver(entry.name, in: handle, caller)
                continue
            }
            let type = entry.attributes.map { directoryEntryType($0.mode) } ?? UInt32(DT_UNKNOWN)
            let more = entry.name.withUnsafeBytes { bytes in
                emit(DirectoryEntry(name: UnsafeRawBufferPointer(rebasing: bytes[0..<visible]), inode: entry.fileid,
                                    type: type, nextOffset: entry.cookie))
            }
            if !more { return }
        }
    }
}
