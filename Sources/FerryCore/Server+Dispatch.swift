import CFerry
import FerryFUSE
#if canImport(Glibc)
import Glibc
#endif

extension FUSEServer {
    func dispatch(_ request: FUSERequest, header h: FUSEInHeader, caller: Credentials, payload: IOVectors?,
                  reply: inout ReplyArea) throws(Errno) -> ReplyDisposition {
        let unique = h.unique
        switch request {
        case .initialize:
            // A second INIT on a live session is a protocol violation.
            throw .protocolError

        case .destroy:
            // The session ends here, as when the connection is lost, so the guest can
            // mount the same tag again (a new INIT) in the same boot.
            destroySession()
            return emptyReply(unique, reply)

        case .lookup(let rawName):
            let parent = try inode(h.nodeID)
            let entry = try driver.lookup(parent, try name(rawName), caller, existing: { self.nodes.existing($0) })
            return try entryReply(entry, unique, reply)

        case .forget(let count):
            nodes.forget(h.nodeID, count: count)
            return .none

        case .batchForget(let list):
            for i in 0..<list.count {
                let (nodeID, count) = list[i]
                nodes.forget(nodeID, count: count)
            }
            return .none

        case .getattr(let g):
            let node = try inode(h.nodeID)
            let open = g.getattrFlags & FUSERequestFlag.getattrFH != 0 ? files.get(g.fh) : nil
            return attrReply(try driver.getattr(node, open, caller), unique, reply)

        case .setattr(let s):
            try writable()
            let node = try inode(h.nodeID)
            let open = s.valid & FUSESetattrValid.fh != 0 ? files.get(s.fh) : nil
            let wanted = changes(s)
            let after = try resizing(node, open, to: wanted.size, caller) { () throws(Errno) -> Attributes in
                try driver.setattr(node, open, wanted, caller)
            }
            return attrReply(after, unique, reply)

        case .readlink:
            let node = try inode(h.nodeID)
            let room = min(reply.scratch.count - FUSEOutHeader.size, Int(PATH_MAX))
            let target = UnsafeMutableRawBufferPointer(rebasing: reply.scratch[FUSEOutHeader.size..<(FUSEOutHeader.size + room)])
            let n = try driver.readlink(node, into: target, caller)
            FUSEReply.writeHeader(to: reply.scratch.baseAddress!, length: FUSEOutHeader.size + n, error: 0, unique: unique)
            return .inline(length: FUSEOutHeader.size + n)

        case .symlink(let rawName, let target):
            try writable()
            if target.isEmpty { throw .noEntry }
            if target.count >= Int(PATH_MAX) { throw .nameTooLong }
            let parent = try inode(h.nodeID)
            let entry = try makingInode { () throws(Errno) -> Driver.Entry in
                try driver.symlink(parent, try name(rawName), target: target, caller)
            }
            return try entryReply(entry, unique, reply)

        case .mknod(let m, let rawName):
            try writable()
            let type = m.mode & UInt32(S_IFMT)
            switch type {
            case UInt32(S_IFREG), UInt32(S_IFIFO), UInt32(S_IFSOCK): break
            case UInt32(S_IFCHR), UInt32(S_IFBLK): if !policy.allowDevices { throw .notPermitted }
            default: throw .invalid
            }
            let parent = try inode(h.nodeID)
            var creator = caller
            creator.umask = creationUmask(m.umask)
            let entry = try makingInode { () throws(Errno) -> Driver.Entry in
                try driver.mknod(parent, try name(rawName), mode: m.mode, rdev: m.rdev, creator)
            }
            return try entryReply(entry, unique, reply)

        case .mkdir(let m, let rawName):
            try writable()
            let parent = try inode(h.nodeID)
            let mode = (m.mode & 0o7777) | UInt32(S_IFDIR)
            var creator = caller
            creator.umask = creationUmask(m.umask)
            let entry = try makingInode { () throws(Errno) -> Driver.Entry in
                try driver.mkdir(parent, try name(rawName), mode: mode, creator)
            }
            return try entryReply(entry, unique, reply)

        case .unlink(let rawName):
            try writable()
            let parent = try inode(h.nodeID), victim = try name(rawName)
            try removing(victim, in: parent, caller) { () throws(Errno) in try driver.unlink(parent, victim, caller) }
            return emptyReply(unique, reply)

        case .rmdir(let rawName):
            try writable()
            let parent = try inode(h.nodeID), victim = try name(rawName)
            try removing(victim, in: parent, caller) { () throws(Errno) in try driver.rmdir(parent, victim, caller) }
            return emptyReply(unique, reply)

        case .rename(let newDirectory, let flags, let oldName, let newName):
            try writable()
            let noReplace = FUSERequestFlag.renameNoReplace, exchange = FUSERequestFlag.renameExchange
            let known = noReplace | exchange | FUSERequestFlag.renameWhiteout
            if flags & ~known != 0 || (flags & noReplace != 0 && flags & exchange != 0) { throw .invalid }
            let from = try inode(h.nodeID), to = try inode(newDirectory)
            let source = try name(oldName), destination = try name(newName)
            if flags & exchange != 0 {
                try driver.rename(from, source, to: to, destination, flags: flags, caller)
            } else {
                // Whatever the rename replaces is removed.
                try removing(destination, in: to, caller) { () throws(Errno) in
                    try driver.rename(from, source, to: to, destination, flags: flags, caller)
                }
            }
            return emptyReply(unique, reply)

        case .link(let oldNodeID, let newName):
            try writable()
            let target = try inode(oldNodeID), parent = try inode(h.nodeID)
            return try entryReply(try driver.link(target, to: parent, try name(newName), caller), unique, reply)

        case .open(let o):
            let flags = driverOpenFlags(o.flags)
            if policy.readOnly && (flags & O_ACCMODE != O_RDONLY || flags & O_TRUNC != 0) { throw .readOnly }
            let opened = try driver.open(try inode(h.nodeID), flags: flags, killSuidGid: o.openFlags & FUSERequestFlag.openKillSuidGid != 0, caller)
            return try openReply(opened, nodeID: h.nodeID, flags: flags, caller, unique, reply)

        case .create(let c, let rawName):
            try writable()
            let parent = try inode(h.nodeID)
            let mode = (c.mode & 0o7777) | UInt32(S_IFREG)
            var creator = caller
            creator.umask = creationUmask(c.umask)
            let (entry, opened) = try makingInode { () throws(Errno) -> (Driver.Entry, OpenedFile<Driver.File>) in
                try driver.create(parent, try name(rawName), mode: mode, flags: driverCreateFlags(c.flags),
                                  killSuidGid: c.openFlags & FUSERequestFlag.openKillSuidGid != 0, creator)
            }
            return try createReply(entry, opened, flags: driverCreateFlags(c.flags), caller, unique, reply)

        case .tmpfile(let c):
            try writable()
            let parent = try inode(h.nodeID)
            let mode = (c.mode & 0o7777) | UInt32(S_IFREG)
            var creator = caller
            creator.umask = creationUmask(c.umask)
            let (entry, opened) = try makingInode { () throws(Errno) -> (Driver.Entry, OpenedFile<Driver.File>) in
                try driver.tmpfile(parent, mode: mode, flags: driverCreateFlags(c.flags), creator)
            }
            return try createReply(entry, opened, flags: driverCreateFlags(c.flags), caller, unique, reply)

        case .read(let r):
            return try read(r, unique: unique, caller: caller, reply: &reply)

        case .write(let w, let data):
            try writable()
            let open = try file(w.fh)
            let killSuidGid = w.writeFlags & FUSERequestFlag.writeKillSuidGid != 0
            let length = payload?.totalLength ?? data.count
            var written = 0
            try growing(h.nodeID, open, to: try rangeEnd(w.offset, UInt64(length)), caller) { () throws(Errno) -> UInt64 in
                if let payload {
                    written = try driver.write(open, offset: w.offset, from: payload, killSuidGid: killSuidGid, caller)
                } else {
                    var vector = iovec(iov_base: UnsafeMutableRawPointer(mutating: data.baseAddress), iov_len: data.count)
                    written = try withUnsafeMutablePointer(to: &vector) { (p: UnsafeMutablePointer<iovec>) throws(Errno) -> Int in
                        try driver.write(open, offset: w.offset, from: IOVectors(base: p, count: 1), killSuidGid: killSuidGid, caller)
                    }
                }
                return w.offset + UInt64(written)
            }
            statistics.addBytesWritten(written)
            return encode(FUSEWriteOut(size: UInt32(written)), unique, reply)

        case .flush(let f):
            // The process closed a descriptor of this open file: a lock it waits for through
            // it is not granted afterwards (and FLUSH drops its POSIX locks).
            lockWaits.cancel(fh: f.fh)
            try driver.flush(try file(f.fh), lockOwner: f.lockOwner, caller)
            return emptyReply(unique, reply)

        case .release(let r):
            lockWaits.cancel(fh: r.fh)
            // Before the handle leaves the table, so its number cannot meanwhile go to a new
            // open whose backing share this would then give back.
            releasePassthrough(r.fh)
            if let open = files.remove(r.fh) {
                driver.release(open, flags: Int32(bitPattern: r.flags), caller)
            }
            return emptyReply(unique, reply)

        case .fsync(let f):
            try driver.fsync(try file(f.fh), dataOnly: f.fsyncFlags & FUSERequestFlag.fsyncDataOnly != 0, caller)
            return emptyReply(unique, reply)

        case .opendir(let o):
            let node = try inode(h.nodeID)
            let directory = try driver.opendir(node, flags: Int32(bitPattern: o.flags), caller)
            let fh: UInt64
            do {
                fh = try directories.insert(OpenDirectory(directory: directory, inode: node))
            } catch {
                // The kernel never gets this handle, so it never sends RELEASEDIR for it.
                driver.releasedir(directory)
                throw error
            }
            return encode(FUSEOpenOut(fh: fh, openFlags: policy.cache.opendirReplyFlags), unique, reply)

        case .readdir(let r):
            return try readdir(r, plus: false, unique: unique, caller: caller, reply: reply)

        case .readdirplus(let r):
            return try readdir(r, plus: true, unique: unique, caller: caller, reply: reply)

        case .releasedir(let r):
            if let open = directories.remove(r.fh) { driver.releasedir(open.directory) }
            return emptyReply(unique, reply)

        case .fsyncdir(let f):
            let open = try directory(f.fh)
            try driver.fsyncdir(open.directory, dataOnly: f.fsyncFlags & FUSERequestFlag.fsyncDataOnly != 0, caller)
            return emptyReply(unique, reply)

        case .statfs:
            let s = try driver.statfs(try inode(h.nodeID), caller)
            var out = FUSEStatfsOut()
            out.blocks = s.blocks; out.bfree = s.freeBlocks; out.bavail = s.availableBlocks
            out.files = s.files; out.ffree = s.freeFiles
            out.bsize = s.blockSize; out.frsize = s.fragmentSize; out.namelen = s.maximumNameLength
            if let quota { applyQuota(quota, to: &out) }
            return encode(out, unique, reply)

        case .setxattr(let s, let rawName, let value):
            guard policy.xattr else { throw .notImplemented }
            try writable()
            let attribute = try AttributeName.validated(rawName).get()
            let clearingSetGID = s.setxattrFlags & FUSERequestFlag.setxattrACLKillSGID != 0
            try driver.setxattr(try inode(h.nodeID), name: attribute, value: value, flags: Int32(bitPattern: s.flags),
                                clearingSetGID: clearingSetGID, caller)
            return emptyReply(unique, reply)

        case .getxattr(let size, let rawName):
            guard policy.xattr else { throw .notImplemented }
            let attribute = try AttributeName.validated(rawName).get()
            let node = try inode(h.nodeID)
            return try sizedReply(size, unique, reply) { (buffer) throws(Errno) -> Int in
                try driver.getxattr(node, name: attribute, into: buffer, caller)
            }

        case .listxattr(let size):
            guard policy.xattr else { throw .notImplemented }
            let node = try inode(h.nodeID)
            return try sizedReply(size, unique, reply) { (buffer) throws(Errno) -> Int in
                try driver.listxattr(node, into: buffer, caller)
            }

        case .removexattr(let rawName):
            guard policy.xattr else { throw .notImplemented }
            try writable()
            let attribute = try AttributeName.validated(rawName).get()
            try driver.removexattr(try inode(h.nodeID), name: attribute, caller)
            return emptyReply(unique, reply)

        case .access(let mask):
            if policy.readOnly && Int32(bitPattern: mask) & W_OK != 0 { throw .readOnly }
            try driver.access(try inode(h.nodeID), mask: Int32(bitPattern: mask), caller)
            return emptyReply(unique, reply)

        case .getlk(let l):
            try locksAgreed(l)
            let found = try driver.getlk(try file(l.fh), owner: l.owner, try recordLock(l.lock), caller)
            // The kernel answers EIO to a range past OFFSET_MAX (or reversed).
            let end = min(found.end, RecordLock.toEndOfFile)
            let lock = FUSEFileLock(start: min(found.start, end), end: end, type: UInt32(bitPattern: found.type), pid: found.pid)
            return encode(FUSELockOut(lock: lock), unique, reply)

        case .setlk(let l), .setlkw(let l):
            try locksAgreed(l)
            let open = try file(l.fh)
            let lock = try recordLock(l.lock)
            let flock = l.lockFlags & FUSERequestFlag.lockFlock != 0
            do {
                try driver.setlk(open, owner: l.owner, lock, flock: flock, caller)
                return emptyReply(unique, reply)
            } catch .again {
                guard case .setlkw = request else { throw .again }
                return try waitForLock(open, l, lock, flock: flock, unique: unique, caller, reply)
            }

        case .interrupt(let target):
            // Only a waiting lock outlives its request's turn on a queue thread; everything
            // else runs to completion, so there is nothing else to interrupt.
            lockWaits.interrupt(target)
            return .none

        case .notifyReply:
            return .none

        case .bmap, .ioctl, .poll, .setupMapping, .removeMapping:
            throw .notImplemented

        case .fallocate(let f):
            try writable()
            let open = try file(f.fh)
            let keepSize = Int32(bitPattern: f.mode) & Int32(FERRY_FALLOC_FL_KEEP_SIZE) != 0
            let punchHole = Int32(bitPattern: f.mode) & Int32(FERRY_FALLOC_FL_PUNCH_HOLE) != 0
            let end = try rangeEnd(f.offset, f.length)
            // A byte quota counts file sizes; blocks preallocated past the end (KEEP_SIZE)
            // take host space no size shows, so under one they are refused.
            if keepSize && !punchHole, quota?.limits.bytes != nil,
               end > (try driver.getattr(try inode(h.nodeID), open, caller).size) {
                throw .notSupported
            }
            try growing(h.nodeID, open, to: keepSize ? nil : end, caller) { () throws(Errno) -> UInt64 in
                try driver.fallocate(open, mode: Int32(bitPattern: f.mode), offset: f.offset, length: f.length, caller)
                return end
            }
            return emptyReply(unique, reply)

        case .lseek(let l):
            let offset = try driver.lseek(try file(l.fh), offset: l.offset, whence: Int32(bitPattern: l.whence), caller)
            return encode(FUSELseekOut(offset: offset), unique, reply)

        case .copyFileRange(let c):
            try writable()
            let source = try file(c.fhIn), destination = try file(c.fhOut)
            var n = 0
            _ = try rangeEnd(c.offsetIn, c.length)
            try growing(c.nodeIDOut, destination, to: try rangeEnd(c.offsetOut, c.length), caller) { () throws(Errno) -> UInt64 in
                n = try driver.copyFileRange(from: source, at: c.offsetIn, to: destination, at: c.offsetOut,
                                             length: c.length, flags: c.flags, caller)
                return c.offsetOut + UInt64(n)
            }
            statistics.addBytesWritten(n)
            return encode(FUSEWriteOut(size: UInt32(clamping: n)), unique, reply)

        case .syncfs:
            try driver.syncfs(try inode(h.nodeID), caller)
            return emptyReply(unique, reply)

        case .unknown(let opcode):
            logger.debug("unknown opcode", metadata: ["opcode": "\(opcode)"])
            throw .notImplemented
        }
    }

    /// Where a guest's range ends. Offsets and lengths are the guest's: a range past the
    /// largest file offset (loff_t) is EFBIG, as the kernel answers for a local file, never
    /// an overflow trap.
    private func rangeEnd(_ offset: UInt64, _ length: UInt64) throws(Errno) -> UInt64 {
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= UInt64(Int64.max) else { throw .fileTooBig }
        return end
    }

    private func changes(_ s: FUSESetattrIn) -> AttributeChanges {
        var c = AttributeChanges()
        if s.valid & FUSESetattrValid.mode != 0 { c.mode = s.mode & 0o7777 }
        if s.valid & FUSESetattrValid.uid != 0 { c.uid = policy.idMap.isIdentity ? s.uid : policy.idMap.hostUID(s.uid) }
        if s.valid & FUSESetattrValid.gid != 0 { c.gid = policy.idMap.isIdentity ? s.gid : policy.idMap.hostGID(s.gid) }
        if s.valid & FUSESetattrValid.size != 0 { c.size = s.size }
        if s.valid & FUSESetattrValid.atimeNow != 0 {
            c.accessTime = .now
        } else if s.valid & FUSESetattrValid.atime != 0 {
            c.accessTime = .set(Timestamp(seconds: Int64(bitPattern: s.atime), nanoseconds: s.atimensec))
        }
        if s.valid & FUSESetattrValid.mtimeNow != 0 {
            c.modificationTime = .now
        } else if s.valid & FUSESetattrValid.mtime != 0 {
            c.modificationTime = .set(Timestamp(seconds: Int64(bitPattern: s.mtime), nanoseconds: s.mtimensec))
        }
        // A SETATTR that names no change at all is how the kernel asks to drop set-id bits when
        // the server handles them (HANDLE_KILLPRIV_V2): chown(f, -1, -1) and the privilege
        // removal before another user's write arrive so. Taken as FATTR_KILL_SUIDGID, so the
        // reply already shows the cleared mode the kernel caches; drivers leave directories be.
        let changing = FUSESetattrValid.mode | FUSESetattrValid.uid | FUSESetattrValid.gid | FUSESetattrValid.size
            | FUSESetattrValid.atime | FUSESetattrValid.mtime | FUSESetattrValid.atimeNow | FUSESetattrValid.mtimeNow
        c.killSuidGid = s.valid & FUSESetattrValid.killSuidGid != 0 || s.valid & changing == 0
        return c
    }

    /// Lock requests reach the driver only on a session that agreed to send them: without
    /// FUSE_POSIX_LOCKS (FUSE_FLOCK_LOCKS for flock) a Linux client keeps its locks in its own
    /// kernel and sends none, so one that comes anyway is a hostile client's. ENOSYS, as the
    /// kernel itself takes it: a SETLKW that waited on a host lock would hold a queue thread,
    /// and DESTROY and the export's stop behind it, for as long as the host lock lasts.
    private func locksAgreed(_ l: FUSELockIn) throws(Errno) {
        let needed: FUSEInitFlags = l.lockFlags & FUSERequestFlag.lockFlock != 0 ? .flockLocks : .posixLocks
        guard agreedFlags.contains(needed) else { throw .notImplemented }
    }

    /// The kernel's lock range: `end` is inclusive and OFFSET_MAX (Int64.max) for "to end of
    /// file"; anything past it or reversed is a hostile client's (EINVAL, as fcntl answers).
    private func recordLock(_ l: FUSEFileLock) throws(Errno) -> RecordLock {
        let end = l.end == UInt64.max ? RecordLock.toEndOfFile : l.end
        guard l.start <= end, end <= RecordLock.toEndOfFile else { throw .invalid }
        return RecordLock(start: l.start, end: end, type: Int32(bitPattern: l.type), pid: l.pid)
    }

    /// SETLKW met a conflict: the reply waits on the export's lock-wait thread, which tries
    /// again until the lock is granted or the wait ends (INTERRUPT, FLUSH, session end).
    /// ENOLCK when the transport cannot defer this reply or too many wait already.
    private func waitForLock(_ open: Driver.File, _ l: FUSELockIn, _ lock: RecordLock, flock: Bool, unique: UInt64,
                             _ caller: Credentials, _ reply: ReplyArea) throws(Errno) -> ReplyDisposition {
        guard let sink = reply.deferral?.deferReply() else { throw Errno(ENOLCK) }
        // The caller's groups point into the request buffer, which the next request reuses.
        let waiter = Credentials(uid: caller.uid, gid: caller.gid, pid: caller.pid)
        let driver = self.driver, owner = l.owner
        let attempt: () -> Errno? = {
            do throws(Errno) {
                try driver.setlk(open, owner: owner, lock, flock: flock, waiter)
                return nil
            } catch {
                return error
            }
        }
        guard lockWaits.add(unique: unique, fh: l.fh, sink: sink, attempt: attempt) else { throw Errno(ENOLCK) }
        return .deferred
    }

    private func openReply(_ opened: OpenedFile<Driver.File>, nodeID: UInt64, flags: Int32, _ caller: Credentials, _ unique: UInt64,
                           _ reply: ReplyArea) throws(Errno) -> ReplyDisposition {
        let fh = try insert(opened.file, flags: flags, caller)
        return encode(openOut(opened, fh: fh, nodeID: nodeID), unique, reply)
    }

    /// CREATE and TMPFILE answer with an entry followed by an open reply.
    private func createReply(_ entry: Driver.Entry, _ opened: OpenedFile<Driver.File>, flags: Int32, _ caller: Credentials,
                             _ unique: UInt64, _ reply: ReplyArea) throws(Errno) -> ReplyDisposition {
        let fh = try insert(opened.file, flags: flags, caller)
        let entryOut: FUSEEntryOut
        do {
            entryOut = try self.entryOut(entry)
        } catch {
            if let file = files.remove(fh) { driver.release(file, flags: flags, caller) }
            throw error
        }
        let open = openOut(opened, fh: fh, nodeID: entryOut.nodeID)
        let base = reply.scratch.baseAddress!
        entryOut.encode(to: base + FUSEOutHeader.size)
        open.encode(to: base + FUSEOutHeader.size + FUSEEntryOut.size)
        let length = FUSEOutHeader.size + FUSEEntryOut.size + FUSEOpenOut.size
        FUSEReply.writeHeader(to: base, length: length, error: 0, unique: unique)
        return .inline(length: length)
    }

    /// Stores a file the driver just opened. When it cannot be stored (the handle table is
    /// full), the kernel never learns its `fh` and so never sends RELEASE: the driver is told
    /// here, or it would keep what it holds for the open (NFS counts opens per file, and an
    /// unlink of a file it believes open only hides the name) until the session ends.
    private func insert(_ file: Driver.File, flags: Int32, _ caller: Credentials) throws(Errno) -> UInt64 {
        do {
            return try files.insert(file)
        } catch {
            driver.release(file, flags: flags, caller)
            throw error
        }
    }

    /// GETXATTR / LISTXATTR: size 0 asks how big the answer is; otherwise the value itself.
    private func sizedReply(_ size: UInt32, _ unique: UInt64, _ reply: ReplyArea,
                            _ fill: (UnsafeMutableRawBufferPointer) throws(Errno) -> Int) throws(Errno) -> ReplyDisposition {
        if size == 0 {
            let needed = try fill(UnsafeMutableRawBufferPointer(start: nil, count: 0))
            return encode(FUSEGetxattrOut(size: UInt32(clamping: needed)), unique, reply)
        }
        let room = min(Int(size), reply.scratch.count - FUSEOutHeader.size)
        let buffer = UnsafeMutableRawBufferPointer(rebasing: reply.scratch[FUSEOutHeader.size..<(FUSEOutHeader.size + room)])
        let n = try fill(buffer)
        FUSEReply.writeHeader(to: reply.scratch.baseAddress!, length: FUSEOutHeader.size + n, error: 0, unique: unique)
        return .inline(length: FUSEOutHeader.size + n)
    }

    private func read(_ r: FUSEReadIn, unique: UInt64, caller: Credentials, reply: inout ReplyArea) throws(Errno) -> ReplyDisposition {
        let open = try file(r.fh)
        // Cut the caller's vectors down to the requested size: the kernel's buffers may be larger.
        var remaining = Int(r.size)
        var used = 0
        let vectors = reply.readVectors
        while used < vectors.count && remaining > 0 {
            let length = min(vectors.base[used].iov_len, remaining)
            vectors.base[used].iov_len = length
            remaining -= length
            used += 1
        }
        let n = used == 0 ? 0 : try driver.read(open, offset: r.offset, into: IOVectors(base: vectors.base, count: used), caller)
        statistics.addBytesRead(n)
        FUSEReply.writeHeader(to: reply.scratch.baseAddress!, length: FUSEOutHeader.size + n, error: 0, unique: unique)
        return .data(dataLength: n)
    }

    private func readdir(_ r: FUSEReadIn, plus: Bool, unique: UInt64, caller: Credentials, reply: ReplyArea) throws(Errno) -> ReplyDisposition {
        let open = try directory(r.fh)
        let room = min(Int(r.size), reply.scratch.count - FUSEOutHeader.size)
        var writer = FUSEDirentWriter(buffer: UnsafeMutableRawBufferPointer(rebasing: reply.scratch[FUSEOutHeader.size...]), limit: room)
        var stopError: Errno?
        do throws(Errno) {
            try driver.readdir(open.directory, at: r.offset, caller) { entry in
                // The kernel fails the whole listing (EIO) on an empty name or one with '/':
                // a backend's bad name is left out, as READDIRPLUS must (it cannot look it up).
                if !entry.isDotOrDotDot, case .failure = FileName.validated(entry.name) {
                    invalidEntryName(entry.name, in: open.inode)
                    return true
                }
                if !plus {
                    return writer.append(ino: entry.inode, offset: entry.nextOffset, type: entry.type, name: entry.name)
                }
                if entry.isDotOrDotDot {
                    // The kernel takes node id 0 as "no entry to cache" for these.
                    var out = FUSEEntryOut()
                    out.attr.ino = entry.inode
                    out.attr.mode = entry.type << 12
                    return writer.appendPlus(entry: out, offset: entry.nextOffset, type: entry.type, name: entry.name)
                }
                // Check room first: a looked-up entry that is not sent would leak a lookup count.
                guard writer.length + FUSEDirentWriter.direntPlusSize(nameLength: entry.name.count) <= room else { return false }
                guard case .success(let name) = FileName.validated(entry.name) else { return true }   // checked above
                let out: FUSEEntryOut
                do throws(Errno) {
                    out = try entryOut(try driver.lookup(open.inode, name, caller, existing: { self.nodes.existing($0) }))
                } catch {
                    if error == .tooManyOpenFiles { stopError = error; return false }
                    return true   // gone since the directory was read: skip it
                }
                return writer.appendPlus(entry: out, offset: entry.nextOffset, type: entry.type, name: entry.name)
            }
        } catch {
            if writer.isEmpty { throw error }
        }
        if writer.isEmpty, let stopError { throw stopError }
        FUSEReply.writeHeader(to: reply.scratch.baseAddress!, length: FUSEOutHeader.size + writer.length, error: 0, unique: unique)
        return .inline(length: FUSEOutHeader.size + writer.length)
    }
}
