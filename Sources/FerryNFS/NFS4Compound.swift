#if canImport(Glibc)
import Glibc
#endif
import CNFS
import FerryCore

/// One NFSv4 COMPOUND being built: its operations and the memory their arguments point to
/// (freed with the builder, after libnfs has encoded the call).
final class NFS4Compound {
    private(set) var ops: [nfs_argop4] = []
    private var memory: [UnsafeMutableRawPointer] = []

    deinit { for block in memory { free(block) } }

    private func copy<C: Collection>(_ bytes: C) -> (UInt32, UnsafeMutablePointer<CChar>?) where C.Element == UInt8 {
        guard !bytes.isEmpty else { return (0, nil) }
        let block = malloc(bytes.count)!
        memory.append(block)
        UnsafeMutableRawBufferPointer(start: block, count: bytes.count).copyBytes(from: bytes)
        return (UInt32(bytes.count), block.assumingMemoryBound(to: CChar.self))
    }

    private func words(_ bitmap: [UInt32]) -> bitmap4 {
        let block = malloc(bitmap.count * 4)!.assumingMemoryBound(to: UInt32.self)
        memory.append(UnsafeMutableRawPointer(block))
        block.update(from: bitmap, count: bitmap.count)
        return bitmap4(bitmap4_len: u_int(bitmap.count), bitmap4_val: block)
    }

    private func component(_ name: UnsafeRawBufferPointer) -> component4 {
        let (n, p) = copy(name)
        return component4(utf8string_len: n, utf8string_val: p)
    }

    func fattr(_ e: Encoded4) -> fattr4 {
        let (n, p) = copy(e.values)
        return fattr4(attrmask: words(NFS4Attribute.bitmap(e.bits)), attr_vals: attrlist4(attrlist4_len: n, attrlist4_val: p))
    }

    private func add(_ op: nfs_opnum4, _ fill: (inout nfs_argop4) -> Void = { _ in }) {
        var a = nfs_argop4()
        a.argop = op
        fill(&a)
        ops.append(a)
    }

    func putfh(_ h: FileHandle) {
        let (n, p) = copy(h.bytes)
        add(OP_PUTFH) { $0.nfs_argop4_u.opputfh.object = nfs_fh4(nfs_fh4_len: n, nfs_fh4_val: p) }
    }
    func putrootfh() { add(OP_PUTROOTFH) }
    func getfh() { add(OP_GETFH) }
    func savefh() { add(OP_SAVEFH) }
    func restorefh() { add(OP_RESTOREFH) }
    func readlink() { add(OP_READLINK) }
    func lookup(_ name: UnsafeRawBufferPointer) {
        let c = component(name)
        add(OP_LOOKUP) { $0.nfs_argop4_u.oplookup.objname = c }
    }
    func getattr(_ bitmap: [UInt32]) {
        let b = words(bitmap)
        add(OP_GETATTR) { $0.nfs_argop4_u.opgetattr.attr_request = b }
    }
    func setattr(_ e: Encoded4) {
        let f = fattr(e)
        add(OP_SETATTR) { $0.nfs_argop4_u.opsetattr.obj_attributes = f }   // anonymous stateid: all zeros
    }
    func access(_ mask: UInt32) { add(OP_ACCESS) { $0.nfs_argop4_u.opaccess.access = mask } }
    func remove(_ name: UnsafeRawBufferPointer) {
        let c = component(name)
        add(OP_REMOVE) { $0.nfs_argop4_u.opremove.target = c }
    }
    func rename(_ old: UnsafeRawBufferPointer, _ new: UnsafeRawBufferPointer) {
        let o = component(old), n = component(new)
        add(OP_RENAME) { $0.nfs_argop4_u.oprename = RENAME4args(oldname: o, newname: n) }
    }
    func link(_ name: UnsafeRawBufferPointer) {
        let c = component(name)
        add(OP_LINK) { $0.nfs_argop4_u.oplink.newname = c }
    }
    func commit() { add(OP_COMMIT) }
    func read(offset: UInt64, count: Int) {
        add(OP_READ) { $0.nfs_argop4_u.opread.offset = offset; $0.nfs_argop4_u.opread.count = count4(count) }
    }
    /// `data` is only borrowed: it must stay valid until the call is sent.
    func write(offset: UInt64, stable: stable_how4, data: UnsafeRawBufferPointer) {
        add(OP_WRITE) {
            $0.nfs_argop4_u.opwrite.offset = offset
            $0.nfs_argop4_u.opwrite.stable = stable
            $0.nfs_argop4_u.opwrite.data.data_len = u_int(data.count)
            $0.nfs_argop4_u.opwrite.data.data_val = UnsafeMutablePointer(mutating: data.baseAddress?.assumingMemoryBound(to: CChar.self))
        }
    }
    func readdir(cookie: UInt64, verifier: UInt64, bitmap: [UInt32]) {
        let b = words(bitmap)
        add(OP_READDIR) {
            $0.nfs_argop4_u.opreaddir.cookie = cookie
            withUnsafeMutableBytes(of: &$0.nfs_argop4_u.opreaddir.cookieverf) { $0.storeBytes(of: verifier, as: UInt64.self) }
            $0.nfs_argop4_u.opreaddir.dircount = 8192
            $0.nfs_argop4_u.opreaddir.maxcount = 32768
            $0.nfs_argop4_u.opreaddir.attr_request = b
        }
    }
    /// CREATE of anything but a regular file: a directory, symlink, fifo, socket or device.
    func create(type: nfs_ftype4, name: UnsafeRawBufferPointer, attributes: Encoded4,
                linkTarget: UnsafeRawBufferPointer? = nil, device: (UInt32, UInt32) = (0, 0)) {
        let c = component(name), f = fattr(attributes)
        let target = linkTarget.map { copy($0) }
        add(OP_CREATE) {
            $0.nfs_argop4_u.opcreate.objtype.type = type
            if let target {
                $0.nfs_argop4_u.opcreate.objtype.createtype4_u.linkdata = linktext4(utf8string_len: target.0, utf8string_val: target.1)
            }
            if type == NF4BLK || type == NF4CHR {
                $0.nfs_argop4_u.opcreate.objtype.createtype4_u.devdata = specdata4(specdata1: device.0, specdata2: device.1)
            }
            $0.nfs_argop4_u.opcreate.objname = c
            $0.nfs_argop4_u.opcreate.createattrs = f
        }
    }
    /// OPEN with create of `name` in the current directory, as a fresh open-owner.
    func openCreate(name: UnsafeRawBufferPointer, exclusive: Bool, attributes: Encoded4, clientID: UInt64, owner: [UInt8]) {
        let c = component(name), f = fattr(attributes), o = copy(owner)
        add(OP_OPEN) {
            $0.nfs_argop4_u.opopen.seqid = 0
            $0.nfs_argop4_u.opopen.share_access = UInt32(OPEN4_SHARE_ACCESS_BOTH)
            $0.nfs_argop4_u.opopen.share_deny = UInt32(OPEN4_SHARE_DENY_NONE)
            $0.nfs_argop4_u.opopen.owner.clientid = clientID
            $0.nfs_argop4_u.opopen.owner.owner.owner_len = o.0
            $0.nfs_argop4_u.opopen.owner.owner.owner_val = o.1
            $0.nfs_argop4_u.opopen.openhow.opentype = OPEN4_CREATE
            $0.nfs_argop4_u.opopen.openhow.openflag4_u.how.mode = exclusive ? GUARDED4 : UNCHECKED4
            $0.nfs_argop4_u.opopen.openhow.openflag4_u.how.createhow4_u.createattrs = f
            $0.nfs_argop4_u.opopen.claim.claim = CLAIM_NULL
            $0.nfs_argop4_u.opopen.claim.open_claim4_u.file = c
        }
    }
    func openConfirm(_ stateid: stateid4, seqid: UInt32) {
        add(OP_OPEN_CONFIRM) { $0.nfs_argop4_u.opopen_confirm = OPEN_CONFIRM4args(open_stateid: stateid, seqid: seqid) }
    }
    func close(_ stateid: stateid4, seqid: UInt32) {
        add(OP_CLOSE) { $0.nfs_argop4_u.opclose = CLOSE4args(seqid: seqid, open_stateid: stateid) }
    }
    func setclientid(verifier: UInt64, id: [UInt8]) {
        let i = copy(id)
        let netid = copy(Array("tcp".utf8) + [0]), address = copy(Array("0.0.0.0.0.0".utf8) + [0])
        add(OP_SETCLIENTID) {
            withUnsafeMutableBytes(of: &$0.nfs_argop4_u.opsetclientid.client.verifier) { $0.storeBytes(of: verifier, as: UInt64.self) }
            $0.nfs_argop4_u.opsetclientid.client.id.id_len = i.0
            $0.nfs_argop4_u.opsetclientid.client.id.id_val = i.1
            $0.nfs_argop4_u.opsetclientid.callback.cb_program = 0
            $0.nfs_argop4_u.opsetclientid.callback.cb_location = clientaddr4(r_netid: netid.1, r_addr: address.1)
        }
    }
    func setclientidConfirm(clientID: UInt64, confirm: UInt64) {
        add(OP_SETCLIENTID_CONFIRM) {
            $0.nfs_argop4_u.opsetclientid_confirm.clientid = clientID
            withUnsafeMutableBytes(of: &$0.nfs_argop4_u.opsetclientid_confirm.setclientid_confirm) { $0.storeBytes(of: confirm, as: UInt64.self) }
        }
    }

    /// Queues the COMPOUND on `rpc` (libnfs encodes it before returning).
    func send(_ rpc: OpaquePointer, _ cb: rpc_cb, _ data: UnsafeMutableRawPointer) -> Int32 {
        withArguments { rpc_nfs4_compound_async(rpc, cb, $0, data) }
    }

    /// `body` with the COMPOUND's arguments, valid during the call.
    func withArguments<R>(_ body: (UnsafeMutablePointer<COMPOUND4args>) -> R) -> R {
        ops.withUnsafeMutableBufferPointer { buffer in
            var args = COMPOUND4args()
            args.minorversion = 0
            args.argarray.argarray_len = u_int(buffer.count)
            args.argarray.argarray_val = buffer.baseAddress
            return body(&args)
        }
    }
}

/// The results of a COMPOUND, by position.
struct NFS4Results {
    let results: UnsafeBufferPointer<nfs_resop4>
    subscript(_ i: Int) -> nfs_resop4 { results[i] }
}
