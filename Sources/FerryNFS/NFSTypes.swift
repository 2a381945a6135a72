#if canImport(Glibc)
import Glibc
#endif
import CNFS
import FerryCore

/// An NFS file handle: the server's opaque name for a file, valid across server restarts
/// (until the file is deleted). It is the identity of a node: equal handles, same file.
public struct FileHandle: Hashable, Sendable {
    public let bytes: [UInt8]

    init(_ pointer: UnsafePointer<CChar>?, _ length: Int) {
        guard let pointer, length > 0 else { bytes = []; return }
        bytes = Array(UnsafeRawBufferPointer(start: pointer, count: min(length, Int(NFS3_FHSIZE))))
    }

    init(_ fh: nfs_fh3) { self.init(fh.data.data_val, Int(fh.data.data_len)) }
    init(bytes: [UInt8]) { self.bytes = Array(bytes.prefix(128)) }
    init(_ fh: nfs_fh4) {
        bytes = fh.nfs_fh4_len == 0 ? [] : Array(UnsafeRawBufferPointer(start: fh.nfs_fh4_val, count: min(Int(fh.nfs_fh4_len), 128)))
    }

    /// Calls `body` with an `nfs_fh3` that points into this handle's bytes.
    func withNFS<R, E: Error>(_ body: (nfs_fh3) throws(E) -> R) throws(E) -> R {
        try bytes.withUnsafeBufferPointer { buffer throws(E) in
            var fh = nfs_fh3()
            fh.data.data_len = u_int(buffer.count)
            // Sound: libnfs only reads the handle (it encodes it into the call before returning).
            fh.data.data_val = UnsafeMutablePointer(mutating: UnsafeRawPointer(buffer.baseAddress!).assumingMemoryBound(to: CChar.self))
            return try body(fh)
        }
    }
}

extension Errno {
    /// NFSv3 statuses are errno values where they can be; the rest map to the nearest one.
    init(nfs status: nfsstat3) {
        // The numbers are Solaris errno values; Linux's differ from 63 on.
        switch status {
        case NFS3ERR_PERM: self = .notPermitted
        case NFS3ERR_NOENT: self = .noEntry
        case NFS3ERR_IO: self = .io
        case NFS3ERR_NXIO: self = .noDevice
        case NFS3ERR_ACCES: self = .accessDenied
        case NFS3ERR_EXIST: self = .exists
        case NFS3ERR_XDEV: self = Errno(EXDEV)
        case NFS3ERR_NODEV: self = Errno(ENODEV)
        case NFS3ERR_NOTDIR: self = .notDirectory
        case NFS3ERR_ISDIR: self = .isDirectory
        case NFS3ERR_INVAL: self = .invalid
        case NFS3ERR_FBIG: self = Errno(EFBIG)
        case NFS3ERR_NOSPC: self = .noSpace
        case NFS3ERR_ROFS: self = .readOnly
        case NFS3ERR_MLINK: self = Errno(EMLINK)
        case NFS3ERR_NAMETOOLONG: self = .nameTooLong
        case NFS3ERR_NOTEMPTY: self = .notEmpty
        case NFS3ERR_DQUOT: self = .quotaExceeded
        case NFS3ERR_STALE, NFS3ERR_BADHANDLE: self = .stale
        case NFS3ERR_REMOTE: self = Errno(EREMOTE)
        case NFS3ERR_BAD_COOKIE: self = .invalid
        case NFS3ERR_NOTSUPP: self = .notSupported
        case NFS3ERR_TOOSMALL: self = .range
        case NFS3ERR_BADTYPE: self = .invalid
        case NFS3ERR_JUKEBOX: self = .again
        default: self = .io   // NOT_SYNC, SERVERFAULT, anything unknown
        }
    }
}

extension Attributes {
    init(_ a: fattr3) {
        let type: UInt32
        switch a.type {
        case NF3REG: type = UInt32(S_IFREG)
        case NF3DIR: type = UInt32(S_IFDIR)
        case NF3BLK: type = UInt32(S_IFBLK)
        case NF3CHR: type = UInt32(S_IFCHR)
        case NF3LNK: type = UInt32(S_IFLNK)
        case NF3SOCK: type = UInt32(S_IFSOCK)
        case NF3FIFO: type = UInt32(S_IFIFO)
        default: type = UInt32(S_IFREG)
        }
        self.init(inode: a.fileid, size: a.size, blocks: (a.used + 511) / 512,
                  accessTime: Timestamp(seconds: Int64(a.atime.seconds), nanoseconds: a.atime.nseconds),
                  modificationTime: Timestamp(seconds: Int64(a.mtime.seconds), nanoseconds: a.mtime.nseconds),
                  changeTime: Timestamp(seconds: Int64(a.ctime.seconds), nanoseconds: a.ctime.nseconds),
                  mode: type | (a.mode & 0o7777), linkCount: a.nlink, uid: a.uid, gid: a.gid,
                  rdev: UInt32(truncatingIfNeeded: makeDevice(a.rdev.specdata1, a.rdev.specdata2)),
                  blockSize: 4096)
    }
}

/// Linux's new-style dev_t encoding (what `makedev` does), as FUSE carries it in 32 bits.
func makeDevice(_ major: UInt32, _ minor: UInt32) -> UInt64 {
    let major = UInt64(major), minor = UInt64(minor)
    return (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12) | ((major & ~0xfff) << 32)
}

func deviceMajor(_ rdev: UInt32) -> UInt32 { (rdev >> 8) & 0xfff }
func deviceMinor(_ rdev: UInt32) -> UInt32 { (rdev & 0xff) | ((rdev >> 12) & 0xfff00) }

/// The `DT_*` value of an `S_IFMT` type.
func directoryEntryType(_ mode: UInt32) -> UInt32 { (mode & UInt32(S_IFMT)) >> 12 }

/// A `sattr3` that changes nothing; callers set what they want.
func unchangedAttributes() -> sattr3 {
    var s = sattr3()
    s.mode.set_it = 0; s.uid.set_it = 0; s.gid.set_it = 0; s.size.set_it = 0
    s.atime.set_it = DONT_CHANGE; s.mtime.set_it = DONT_CHANGE
    return s
}

func createAttributes(mode: UInt32) -> sattr3 {
    var s = unchangedAttributes()
    s.mode.set_it = 1; s.mode.set_mode3_u.mode = mode & 0o7777
    return s
}

/// An attribute result that may be absent (`post_op_attr`).
func attributes(_ p: post_op_attr) -> Attributes? {
    p.attributes_follow != 0 ? Attributes(p.post_op_attr_u.attributes) : nil
}

func handle(_ p: post_op_fh3) -> FileHandle? {
    p.handle_follows != 0 ? FileHandle(p.post_op_fh3_u.handle) : nil
}

/// The 8-byte write verifier as one integer, for comparing.
func verifier(_ v: (CChar, CChar, CChar, CChar, CChar, CChar, CChar, CChar)) -> UInt64 {
    withUnsafeBytes(of: v) { $0.loadUnaligned(as: UInt64.self) }
}

/// `body` with `string` as a NUL-terminated C string (String.withCString has no typed throws).
func withCName<R>(_ string: String, _ body: (UnsafePointer<CChar>) throws(Errno) -> R) throws(Errno) -> R {
    try Array(string.utf8CString).withUnsafeBufferPointer { buffer throws(Errno) in try body(buffer.baseAddress!) }
}

/// How SETATTR sets one of a file's times: not at all, to the server's clock, or to the
/// time the client gives. nfstime3 holds unsigned 32-bit seconds: callers refuse a time
/// outside that first (`nfs3Representable`); NFSv4 sends the full time (`ClientTimes`).
func nfsTime(_ change: AttributeChanges.TimeChange?) -> (time_how, nfstime3) {
    switch change {
    case nil: return (DONT_CHANGE, nfstime3())
    case .now?: return (SET_TO_SERVER_TIME, nfstime3())
    case .set(let t)?: return (SET_TO_CLIENT_TIME, nfstime3(seconds: u_int(truncatingIfNeeded: t.seconds), nseconds: t.nanoseconds))
    }
}

/// Whether nfstime3 (unsigned 32-bit seconds: 1970 to 7 Feb 2106) can carry `change`.
func nfs3Representable(_ change: AttributeChanges.TimeChange?) -> Bool {
    guard case .set(let t)? = change else { return true }
    return t.seconds >= 0 && t.seconds <= Int64(UInt32.max)
}

/// The times a SETATTR sets to the client's clock, whole: the `sattr3` that carries the rest
/// of a change holds only their low 32 bits, and NFSv4's nfstime4 has signed 64-bit seconds.
struct ClientTimes {
    var access: Timestamp?
    var modification: Timestamp?

    init(access: Timestamp? = nil, modification: Timestamp? = nil) {
        self.access = access; self.modification = modification
    }

    init(_ changes: AttributeChanges) {
        if case .set(let t)? = changes.accessTime { access = t }
        if case .set(let t)? = changes.modificationTime { modification = t }
    }
}
