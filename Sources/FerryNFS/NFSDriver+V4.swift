#if canImport(Glibc)
import Glibc
#endif
import CNFS
import FerryCore
import Synchronization

/// NFSv4.0 state: the client id that OPEN (the only way to create a regular file) needs.
/// READ, WRITE and SETATTR use the anonymous stateid, and each OPEN is closed at once, so
/// no open state outlives a request; a lost client id (server restart, lease expired) is
/// simply established again.
final class NFS4Session: Sendable {
    let clientID = Mutex<UInt64?>(nil)
    /// Held while a client id is established: concurrent first OPENs must not each send
    /// SETCLIENTID for the same id string, or one's SETCLIENTID_CONFIRM meets the other's
    /// new confirm verifier and fails (NFS4ERR_STALE_CLIENTID/CLID_INUSE: EIO to the guest).
    let establishing = Mutex<Void>(())
    let owners = Atomic<UInt64>(0)
    let verifier = UInt64(Deadline.now())
}

extension NFSClient {
    /// One COMPOUND. `large` sends it on a connection of its own (libnfs 4.0 cannot encode a
    /// call of more than 4 KiB: a long symlink target; NFSConnection+OwnSocket.swift).
    func compound<T>(_ caller: Credentials, large: Bool = false, _ build: (NFS4Compound) -> Void,
                     decode: @escaping (NFS4Results) -> Result<T, Errno>) throws(Errno) -> T {
        let c = NFS4Compound()
        build(c)
        let results = { (raw: UnsafeMutableRawPointer) -> Result<T, Errno> in
            let res = raw.assumingMemoryBound(to: COMPOUND4res.self).pointee
            if res.status != NFS4_OK { return .failure(self.failure(nfs4: res.status)) }
            return decode(NFS4Results(results: UnsafeBufferPointer(start: res.resarray.resarray_val,
                                                                   count: Int(res.resarray.resarray_len))))
        }
        var attempts = 0
        while true {
            do throws(Errno) {
                if large { return try compoundOnOwnSocket(caller, c, results) }
                return try call(caller, { rpc, cb, data in c.send(rpc, cb, data) }, decode: results)
            } catch {
                // NFS4ERR_DELAY / GRACE: the server asks us to come back shortly.
                attempts += 1
                guard error == .again, attempts < 50 else { throw error }
                usleep(100_000)
            }
        }
    }

    private func compoundOnOwnSocket<T>(_ caller: Credentials, _ c: NFS4Compound,
                                        _ results: @escaping (UnsafeMutableRawPointer) -> Result<T, Errno>) throws(Errno) -> T {
        try perform(caller) { connection, deadline throws(ConnectionFailure) -> Result<T, Errno> in
            var result: Result<T, Errno> = .failure(.io)
            try connection.callOnOwnSocket(caller, version: UInt32(ferry_nfs_v4), procedure: UInt32(NFSPROC4_COMPOUND),
                                           size: NFSDriver.longCallSize, deadline: deadline,
                                           encode: { zdr in c.withArguments { zdr_COMPOUND4args(zdr, $0) != 0 } }, decode: { zdr in
                var res = COMPOUND4res()
                guard zdr_COMPOUND4res(zdr, &res) != 0 else { return }
                result = withUnsafeMutablePointer(to: &res) { results(UnsafeMutableRawPointer($0)) }
            })
            return result
        }.get()
    }

    /// PUTROOTFH, then LOOKUP each component of the export path.
    func root4(path: String) throws(Errno) -> FileHandle {
        try compound(.root, { c in
            c.putrootfh()
            for component in path.split(separator: "/") {
                Array(component.utf8).withUnsafeBytes { c.lookup($0) }
            }
            c.getfh()
        }, decode: { r in .success(FileHandle(r[r.results.count - 1].nfs_resop4_u.opgetfh.GETFH4res_u.resok4.object)) })
    }

    func transferSizes4(_ handle: FileHandle) throws(Errno) -> (Int, Int) {
        try compound(.root, { c in c.putfh(handle); c.getattr(NFS4Attribute.forTransferSizes) }, decode: { r in
            guard let d = Decoded4(r[1].nfs_resop4_u.opgetattr.GETATTR4res_u.resok4.obj_attributes) else { return .failure(.io) }
            return .success((Int(d.values[NFS4Attribute.maxRead] ?? 0), Int(d.values[NFS4Attribute.maxWrite] ?? 0)))
        })
    }

}

/// The NFSv4 side of each wire operation the driver uses (NFSDriver.swift and
/// NFSDriver+IO.swift call these when the export speaks v4).
extension NFSDriver {
    static func bytes(_ name: UnsafePointer<CChar>) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: name, count: strlen(name))
    }

    static func attributes4(_ r: nfs_resop4) -> Result<Attributes, Errno> {
        guard let d = Decoded4(r.nfs_resop4_u.opgetattr.GETATTR4res_u.resok4.obj_attributes) else { return .failure(.io) }
        return .success(d.attributes)
    }

    static func handle4(_ r: nfs_resop4) -> FileHandle { FileHandle(r.nfs_resop4_u.opgetfh.GETFH4res_u.resok4.object) }

    func lookup4(_ directory: FileHandle, _ name: UnsafePointer<CChar>, _ caller: Credentials) throws(Errno) -> (FileHandle, Attributes) {
        try client.compound(caller, { c in
            c.putfh(directory); c.lookup(NFSDriver.bytes(name)); c.getfh(); c.getattr(NFS4Attribute.forAttributes)
        }, decode: { r in NFSDriver.attributes4(r[3]).map { (NFSDriver.handle4(r[2]), $0) } })
    }

    func getattr4(_ handle: FileHandle, _ caller: Credentials) throws(Errno) -> Attributes {
        try client.compound(caller, { c in c.putfh(handle); c.getattr(NFS4Attribute.forAttributes) },
                     decode: { r in NFSDriver.attributes4(r[1]) })
    }

    func setattr4(_ handle: FileHandle, _ s: sattr3, times: ClientTimes, _ caller: Credentials) throws(Errno) -> Attributes {
        let change = Encoded4(s, times: times)
        return try client.compound(caller, { c in
            c.putfh(handle)
            if !change.bits.isEmpty { c.setattr(change) }
            c.getattr(NFS4Attribute.forAttributes)
        }, decode: { r in NFSDriver.attributes4(r[change.bits.isEmpty ? 1 : 2]) })
    }

    func readlink4(_ handle: FileHandle, into buffer: UnsafeMutableRawBufferPointer, _ caller: Credentials) throws(Errno) -> Int {
        try client.compound(caller, { c in c.putfh(handle); c.readlink() }, decode: { r in
            let link = r[1].nfs_resop4_u.opreadlink.READLINK4res_u.resok4.link
            let n = min(Int(link.utf8string_len), buffer.count)
            if n > 0 { buffer.baseAddress!.copyMemory(from: link.utf8string_val, byteCount: n) }
            return .success(n)
        })
    }

    /// CREATE (directories, symlinks, special files), then the new node's handle and attributes.
    func create4(_ directory: FileHandle, _ name: FileName, type: nfs_ftype4, mode: UInt32, linkTarget: UnsafeRawBufferPointer? = nil,
                 device: (UInt32, UInt32) = (0, 0), _ caller: Credentials) throws(Errno) -> (FileHandle, Attributes) {
        try client.compound(caller, large: (linkTarget?.count ?? 0) > NFSDriver.libnfsSymlinkTarget, { c in
            c.putfh(directory)
            c.create(type: type, name: name.bytes, attributes: Encoded4(createAttributes(mode: mode)), linkTarget: linkTarget, device: device)
            c.getfh(); c.getattr(NFS4Attribute.forAttributes)
        }, decode: { r in NFSDriver.attributes4(r[3]).map { (NFSDriver.handle4(r[2]), $0) } })
    }

    /// A regular file: OPEN with create as a fresh open-owner, OPEN_CONFIRM if the server
    /// asks, CLOSE. I/O then goes with the anonymous stateid.
    func createFile4(_ directory: FileHandle, _ name: FileName, mode: UInt32, exclusive: Bool, truncate: Bool,
                     _ caller: Credentials) throws(Errno) -> (FileHandle, Attributes) {
        var attributes = createAttributes(mode: mode)
        if truncate { attributes.size.set_it = 1; attributes.size.set_size3_u.size = 0 }
        let change = Encoded4(attributes)
        var failedID: UInt64?
        for attempt in 0..<2 {
            let clientID = try establishClient(caller, replacing: failedID)
            let owner = Array("ferry-\(getpid())-\(v4!.owners.wrappingAdd(1, ordering: .relaxed).oldValue)".utf8)
            let opened: (FileHandle, Attributes, stateid4, Bool)
            do throws(Errno) {
                opened = try client.compound(caller, { c in
                    c.putfh(directory)
                    c.openCreate(name: name.bytes, exclusive: exclusive, attributes: change, clientID: clientID, owner: owner)
                    c.getfh(); c.getattr(NFS4Attribute.forAttributes)
                }, decode: { r in
                    let ok = r[1].nfs_resop4_u.opopen.OPEN4res_u.resok4
                    let confirm = ok.rflags & UInt32(OPEN4_RESULT_CONFIRM) != 0
                    return NFSDriver.attributes4(r[3]).map { (NFSDriver.handle4(r[2]), $0, ok.stateid, confirm) }
                })
            } catch {
                // NFS4ERR_STALE_CLIENTID / EXPIRED map to EIO: establish the client id again once.
                if attempt == 0 && error == .io { failedID = clientID; continue }
                throw error
            }
            var stateid = opened.2
            var seqid: UInt32 = 1
            if opened.3 {
                stateid = try client.compound(caller, { c in c.putfh(opened.0); c.openConfirm(stateid, seqid: 1) }, decode: { r in
                    .success(r[1].nfs_resop4_u.opopen_confirm.OPEN_CONFIRM4res_u.resok4.open_stateid)
                })
                seqid = 2
            }
            let closing = stateid, closeSeqid = seqid
            try client.compound(caller, { c in c.putfh(opened.0); c.close(closing, seqid: closeSeqid) }, decode: { _ in .success(()) })
            return (opened.0, opened.1)
        }
        throw .io
    }

    /// SETCLIENTID + SETCLIENTID_CONFIRM, once, one thread at a time; again only when the
    /// id in use is still `replacing` (the one an OPEN just found lost): another thread may
    /// have established a new one meanwhile.
    private func establishClient(_ caller: Credentials, replacing lost: UInt64?) throws(Errno) -> UInt64 {
        let session = v4!
        if lost == nil, let id = session.clientID.withLock({ $0 }) { return id }
        return try session.establishing.withLock { _ throws(Errno) -> UInt64 in
            if let id = session.clientID.withLock({ $0 }), id != lost { return id }
            let id = Array("ferry-\(hostName())-\(getpid())-\(rootHandle.bytes.hashValue)".utf8)
            let (clientID, confirm) = try client.compound(.root, { c in c.setclientid(verifier: session.verifier, id: id) }, decode: { r in
                let ok = r[0].nfs_resop4_u.opsetclientid.SETCLIENTID4res_u.resok4
                return .success((ok.clientid, withUnsafeBytes(of: ok.setclientid_confirm) { $0.loadUnaligned(as: UInt64.self) }))
            })
            try client.compound(.root, { c in c.setclientidConfirm(clientID: clientID, confirm: confirm) }, decode: { _ in .success(()) })
            session.clientID.withLock { $0 = clientID }
            _ = caller
            return clientID
        }
    }

    func link4(_ file: FileHandle, _ directory: FileHandle, _ name: FileName, _ caller: Credentials) throws(Errno) -> Attributes {
        try client.compound(caller, { c in
            c.putfh(file); c.savefh(); c.putfh(directory); c.link(name.bytes); c.restorefh(); c.getattr(NFS4Attribute.forAttributes)
        }, decode: { r in NFSDriver.attributes4(r[5]) })
    }

    func remove4(_ directory: FileHandle, _ name: UnsafePointer<CChar>, _ caller: Credentials) throws(Errno) {
        try client.compound(caller, { c in c.putfh(directory); c.remove(NFSDriver.bytes(name)) }, decode: { _ in .success(()) })
    }

    func rename4(_ from: FileHandle, _ name: UnsafePointer<CChar>, _ to: FileHandle, _ newName: UnsafePointer<CChar>,
                 _ caller: Credentials) throws(Errno) {
        try client.compound(caller, { c in
            c.putfh(from); c.savefh(); c.putfh(to); c.rename(NFSDriver.bytes(name), NFSDriver.bytes(newName))
        }, decode: { _ in .success(()) })
    }

    func statfs4(_ handle: FileHandle, _ caller: Credentials) throws(Errno) -> FileSystemStatistics {
        try client.compound(caller, { c in c.putfh(handle); c.getattr(NFS4Attribute.forStatistics) }, decode: { r in
            guard let d = Decoded4(r[1].nfs_resop4_u.opgetattr.GETATTR4res_u.resok4.obj_attributes) else { return .failure(.io) }
            let v = { (bit: UInt32) in d.values[bit] ?? 0 }
            let block: UInt64 = 4096
            return .success(FileSystemStatistics(blocks: v(NFS4Attribute.spaceTotal) / block, freeBlocks: v(NFS4Attribute.spaceFree) / block,
                                                 availableBlocks: v(NFS4Attribute.spaceAvailable) / block,
                                                 files: v(NFS4Attribute.filesTotal), freeFiles: v(NFS4Attribute.filesFree),
                                                 blockSize: UInt32(block), fragmentSize: UInt32(block), maximumNameLength: 255))
        })
    }

    func access4(_ handle: FileHandle, _ wanted: UInt32, _ caller: Credentials) throws(Errno) -> UInt32 {
        try client.compound(caller, { c in c.putfh(handle); c.access(wanted) }, decode: { r in
            .success(r[1].nfs_resop4_u.opaccess.ACCESS4res_u.resok4.access)
        })
    }

    /// READDIR with the attributes (handle included) of every entry; "." and ".." are not
    /// NFSv4 entries, so they are made here with the cookies v4 reserves for them (1, 2).
    func readdir4(_ directory: FileHandle, cookie: UInt64, verifier: UInt64, _ caller: Credentials) throws(Errno) -> ([ListedEntry], UInt64) {
        let serverCookie = cookie <= 2 ? 0 : cookie
        var (entries, verifierOut, selfID) = try client.compound(caller, { c in
            c.putfh(directory); c.getattr(NFS4Attribute.bitmap([NFS4Attribute.fileID]))
            c.readdir(cookie: serverCookie, verifier: serverCookie == 0 ? 0 : verifier, bitmap: NFS4Attribute.forEntries)
        }, decode: { r -> Result<([ListedEntry], UInt64, UInt64), Errno> in
            let selfID = Decoded4(r[1].nfs_resop4_u.opgetattr.GETATTR4res_u.resok4.obj_attributes)?.fileID ?? 0
            let ok = r[2].nfs_resop4_u.opreaddir.READDIR4res_u.resok4
            var list: [ListedEntry] = []
            var e = ok.reply.entries
            while let entry = e {
                var name = Array(UnsafeRawBufferPointer(start: entry.pointee.name.utf8string_val, count: Int(entry.pointee.name.utf8string_len)))
                name.append(0)
                let decoded = Decoded4(entry.pointee.attrs)
                list.append(ListedEntry(name: name, fileid: decoded?.fileID ?? 0, cookie: entry.pointee.cookie,
                                        handle: decoded?.handle, attributes: decoded?.attributes))
                e = entry.pointee.nextentry
            }
            return .success((list, withUnsafeBytes(of: ok.cookieverf) { $0.loadUnaligned(as: UInt64.self) }, selfID))
        })
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
