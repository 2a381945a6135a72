#if canImport(Glibc)
import Glibc
#endif
import CNFS
import FerryCore

extension NFSClient {
    /// PUTROOTFH, then LOOKUP each component of the export path.
    func root4(path: String) throws(Errno) -> FileHandle {
        let components = path.split(separator: "/").map { Array($0.utf8) }
        return try compound(.root, { c, _ in
            c.putrootfh()
            for component in components { component.withUnsafeBytes { c.lookup($0) } }
            c.getfh()
        }, decode: { r throws(NFS4Error) in
            try r.putrootfh()
            for _ in components { try r.lookup() }
            return try r.getfh()
        })
    }

    /// The largest READ and WRITE, and the lease (kept by `renewLeaseIfDue`).
    func transferSizes4(_ handle: FileHandle) throws(Errno) -> (Int, Int) {
        let d = try compound(.root, { c, _ in c.putfh(handle); c.getattr(NFS4Attribute.forTransferSizes) }, decode: { r throws(NFS4Error) in
            try r.putfh(); return try r.getattr()
        })
        if let lease = d.values[NFS4Attribute.leaseTime], lease > 0 { v4!.leaseSeconds.store(UInt32(clamping: lease), ordering: .relaxed) }
        return (Int(d.values[NFS4Attribute.maxRead] ?? 0), Int(d.values[NFS4Attribute.maxWrite] ?? 0))
    }

    /// Largest request of the v4.1+ session (0 without one): WRITEs stay within it.
    var sessionRequestLimit: Int { v4?.state.withLock { $0.maxRequest } ?? 0 }
}

/// The NFSv4 side of each wire operation the driver uses (NFSDriver.swift and
/// NFSDriver+IO.swift call these when the export speaks v4).
extension NFSDriver {
    static func bytes(_ name: UnsafePointer<CChar>) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: name, count: strlen(name))
    }

    func lookup4(_ directory: FileHandle, _ name: UnsafePointer<CChar>, _ caller: Credentials) throws(Errno) -> (FileHandle, Attributes) {
        let n = Array(NFSDriver.bytes(name))
        let found = try client.compound(caller, { c, _ in
            c.putfh(directory); n.withUnsafeBytes { c.lookup($0) }; c.getfh(); c.getattr(NFS4Attribute.forAttributes)
        }, decode: { r throws(NFS4Error) in
            try r.putfh(); try r.lookup()
            return (try r.getfh(), try r.getattr().attributes)
        })
        noteName(found.0, in: directory, n)
        return found
    }

    /// Notes where a file was seen, for its v4.0 lock's OPEN (NFS4Names.swift).
    func noteName(_ handle: FileHandle, in directory: FileHandle, _ name: [UInt8]) {
        guard let v4, !v4.usesSessions else { return }
        v4.names.withLock { $0.saw(handle, in: directory, name) }
    }

    func getattr4(_ handle: FileHandle, _ caller: Credentials) throws(Errno) -> Attributes {
        try client.compound(caller, { c, _ in c.putfh(handle); c.getattr(NFS4Attribute.forAttributes) },
                            decode: { r throws(NFS4Error) in try r.putfh(); return try r.getattr().attributes })
    }

    func setattr4(_ handle: FileHandle, _ s: sattr3, times: ClientTimes, _ caller: Credentials) throws(Errno) -> Attributes {
        let change = Encoded4(s, times: times)
        return try client.compound(caller, { c, _ in
            c.putfh(handle)
            if !change.bits.isEmpty { c.setattr(change) }
            c.getattr(NFS4Attribute.forAttributes)
        }, decode: { r throws(NFS4Error) in
            try r.putfh()
            if !change.bits.isEmpty { try r.setattr() }
            return try r.getattr().attributes
        })
    }

    func readlink4(_ handle: FileHandle, into buffer: UnsafeMutableRawBufferPointer, _ caller: Credentials) throws(Errno) -> Int {
        try client.compound(caller, { c, _ in c.putfh(handle); c.readlink() }, decode: { r throws(NFS4Error) in
            try r.putfh()
            let link = try r.readlink()
            let n = min(link.count, buffer.count)
            if n > 0 { buffer.baseAddress!.copyMemory(from: link.baseAddress!, byteCount: n) }
            return n
        })
    }

    /// CREATE (directories, symlinks, special files), then the new node's handle and attributes.
    func create4(_ directory: FileHandle, _ name: FileName, type: nfs_ftype4, mode: UInt32, linkTarget: UnsafeRawBufferPointer? = nil,
                 device: (UInt32, UInt32) = (0, 0), _ caller: Credentials) throws(Errno) -> (FileHandle, Attributes) {
        let n = Array(name.bytes), target = linkTarget.map { Array($0) }
        let attributes = Encoded4(createAttributes(mode: mode))
        return try client.compound(caller, reserving: 1024 + (target?.count ?? 0), { c, _ in
            c.putfh(directory)
            n.withUnsafeBytes { name in
                if let target {
                    target.withUnsafeBytes { c.create(type: type.rawValue, name: name, attributes: attributes, linkTarget: $0, device: device) }
                } else {
                    c.create(type: type.rawValue, name: name, attributes: attributes, device: device)
                }
            }
            c.getfh(); c.getattr(NFS4Attribute.forAttributes)
        }, decode: { r throws(NFS4Error) in
            try r.putfh(); try r.create()
            return (try r.getfh(), try r.getattr().attributes)
        })
    }

    /// A regular file: OPEN with create as a fresh open-owner, OPEN_CONFIRM if the server
    /// asks (v4.0), CLOSE. I/O then goes with the anonymous stateid. On v4.1+ the CLOSE names
    /// the current stateid and rides in the OPEN's COMPOUND: one round trip per create.
    func createFile4(_ directory: FileHandle, _ name: FileName, mode: UInt32, exclusive: Bool, truncate: Bool,
                     _ caller: Credentials) throws(Errno) -> (FileHandle, Attributes) {
        var attributes = createAttributes(mode: mode)
        if truncate { attributes.size.set_it = 1; attributes.size.set_size3_u.size = 0 }
        let change = Encoded4(attributes)
        let n = Array(name.bytes)
        let session = v4!
        let owner = Array("ferry-\(getpid())-\(session.owners.wrappingAdd(1, ordering: .relaxed).oldValue)".utf8)
        let closeInside = session.usesSessions && session.closesWithCurrentStateID.load(ordering: .relaxed)
        let opened = try client.compound(caller, needsClientID: true, { c, info in
            c.putfh(directory)
            n.withUnsafeBytes { c.openCreate(name: $0, exclusive: exclusive, attributes: change, clientID: info.clientID, owner: owner) }
            c.getfh(); c.getattr(NFS4Attribute.forAttributes)
            if closeInside { c.close(.current, seqid: 0) }
        }, decode: { r throws(NFS4Error) in
            try r.putfh()
            let (stateid, confirm) = try r.open()
            let (handle, attributes) = (try r.getfh(), try r.getattr().attributes)
            var closed = false
            if closeInside {
                do throws(NFS4Error) { try r.close(); closed = true } catch {
                    // The file is made and open: closed below with its own stateid.
                    if case .status(let s) = error, s == NFS4Status.badStateID {
                        session.closesWithCurrentStateID.store(false, ordering: .relaxed)
                    }
                }
            }
            return (handle, attributes, stateid, confirm, closed)
        })
        noteName(opened.0, in: directory, n)
        if opened.4 { return (opened.0, opened.1) }
        var stateid = opened.2
        var seqid: UInt32 = session.usesSessions ? 0 : 1
        if opened.3 {
            let confirming = stateid
            stateid = try client.compound(caller, { c, _ in c.putfh(opened.0); c.openConfirm(confirming, seqid: 1) }, decode: { r throws(NFS4Error) in
                try r.putfh(); return try r.openConfirm()
            })
            seqid = 2
        }
        let closing = stateid, closeSeqid = seqid
        do throws(Errno) {
            try client.compound(caller, { c, _ in c.putfh(opened.0); c.close(closing, seqid: closeSeqid) }, decode: { r throws(NFS4Error) in
                try r.putfh(); try r.close()
            })
        } catch {
            // The file exists; an open state the server still holds goes with the lease.
            logger.debug("NFSv4 CLOSE after create failed: \(error)")
        }
        return (opened.0, opened.1)
    }

    func link4(_ file: FileHandle, _ directory: FileHandle, _ name: FileName, _ caller: Credentials) throws(Errno) -> Attributes {
        let n = Array(name.bytes)
        let attributes = try client.compound(caller, { c, _ in
            c.putfh(file); c.savefh(); c.putfh(directory); n.withUnsafeBytes { c.link($0) }; c.restorefh(); c.getattr(NFS4Attribute.forAttributes)
        }, decode: { r throws(NFS4Error) in
            try r.putfh(); try r.savefh(); try r.putfh(); try r.link(); try r.restorefh()
            return try r.getattr().attributes
        })
        noteName(file, in: directory, n)
        return attributes
    }

    func remove4(_ directory: FileHandle, _ name: UnsafePointer<CChar>, _ caller: Credentials) throws(Errno) {
        let n = Array(NFSDriver.bytes(name))
        try client.compound(caller, { c, _ in c.putfh(directory); n.withUnsafeBytes { c.remove($0) } }, decode: { r throws(NFS4Error) in
            try r.putfh(); try r.remove()
        })
        if let v4, !v4.usesSessions { v4.names.withLock { $0.removed(directory, n) } }
    }

    func rename4(_ from: FileHandle, _ name: UnsafePointer<CChar>, _ to: FileHandle, _ newName: UnsafePointer<CChar>,
                 _ caller: Credentials) throws(Errno) {
        let old = Array(NFSDriver.bytes(name)), new = Array(NFSDriver.bytes(newName))
        try client.compound(caller, { c, _ in
            c.putfh(from); c.savefh(); c.putfh(to)
            old.withUnsafeBytes { o in new.withUnsafeBytes { c.rename(o, $0) } }
        }, decode: { r throws(NFS4Error) in
            try r.putfh(); try r.savefh(); try r.putfh(); try r.rename()
        })
        if let v4, !v4.usesSessions { v4.names.withLock { $0.renamed(from, old, to, new) } }
    }

    func statfs4(_ handle: FileHandle, _ caller: Credentials) throws(Errno) -> FileSystemStatistics {
        let d = try client.compound(caller, { c, _ in c.putfh(handle); c.getattr(NFS4Attribute.forStatistics) }, decode: { r throws(NFS4Error) in
            try r.putfh(); return try r.getattr()
        })
        let v = { (bit: UInt32) in d.values[bit] ?? 0 }
        let block: UInt64 = 4096
        return FileSystemStatistics(blocks: v(NFS4Attribute.spaceTotal) / block, freeBlocks: v(NFS4Attribute.spaceFree) / block,
                                    availableBlocks: v(NFS4Attribute.spaceAvailable) / block,
                                    files: v(NFS4Attribute.filesTotal), freeFiles: v(NFS4Attribute.filesFree),
                                    blockSize: UInt32(block), fragmentSize: UInt32(block), maximumNameLength: 255)
    }

    func access4(_ handle: FileHandle, _ wanted: UInt32, _ caller: Credentials) throws(Errno) -> UInt32 {
        try client.compound(caller, { c, _ in c.putfh(handle); c.access(wanted) }, decode: { r throws(NFS4Error) in
            try r.putfh(); return try r.access()
        })
    }

    /// READDIR with the attributes (handle included) of every entry; "." and ".." are not
    /// NFSv4 entries, so they are made here with the cookies v4 reserves for them (1, 2).
    func readdir4(_ directory: FileHandle, cookie: UInt64, verifier: UInt64, _ caller: Credentials) throws(Errno) -> ([ListedEntry], UInt64) {
        let serverCookie = cookie <= 2 ? 0 : cookie
        var (entries, verifierOut, selfID) = try client.compound(caller, { c, _ in
            c.putfh(directory); c.getattr(NFS4Attribute.bitmap([NFS4Attribute.fileID]))
            c.readdir(cookie: serverCookie, verifier: serverCookie == 0 ? 0 : verifier, bitmap: NFS4Attribute.forEntries)
        }, decode: { r throws(NFS4Error) -> ([ListedEntry], UInt64, UInt64) in
            try r.putfh()
            let selfID = try r.getattr().fileID
            var list: [ListedEntry] = []
            let (verifier, _) = try r.readdir { entry in
                var name = Array(entry.name)
                name.append(0)
                list.append(ListedEntry(name: name, fileid: entry.attributes?.fileID ?? 0, cookie: entry.cookie,
                                        handle: entry.attributes?.handle, attributes: entry.attributes?.attributes))
            }
            return (list, verifier, selfID)
        })
        if let v4, !v4.usesSessions {
            v4.names.withLock { names in
                for e in entries { if let h = e.handle { names.saw(h, in: directory, Array(e.name.dropLast())) } }
            }
        }
        if cookie < 2 {
            var dots: [ListedEntry] = []
            if cookie == 0 { dots.append(ListedEntry(name: [0x2E, 0], fileid: selfID, cookie: 1, handle: nil, attributes: nil)) }
            // Inode 0 would make readers skip the entry; the parent's number is not at hand.
            dots.append(ListedEntry(name: [0x2E, 0x2E, 0], fileid: 1, cookie: 2, handle: nil, attributes: nil))
            entries = dots + entries
        }
        return (entries, verifierOut)
    }
}
