#if canImport(Glibc)
import Glibc
#endif
import CNFS
import FerryCore

/// NFSv4 attributes travel as a bitmap plus the XDR encoding of each attribute whose bit is
/// set, in bit order (RFC 7530 §5). These are the ones Ferry asks for and sets.
enum NFS4Attribute {
    static let supported: UInt32 = 0, type: UInt32 = 1, size: UInt32 = 4, fsid: UInt32 = 8, leaseTime: UInt32 = 10
    static let fileHandle: UInt32 = 19, fileID: UInt32 = 20
    static let filesAvailable: UInt32 = 21, filesFree: UInt32 = 22, filesTotal: UInt32 = 23
    static let maxRead: UInt32 = 30, maxWrite: UInt32 = 31, mode: UInt32 = 33, links: UInt32 = 35
    static let owner: UInt32 = 36, ownerGroup: UInt32 = 37, rawDevice: UInt32 = 41
    static let spaceAvailable: UInt32 = 42, spaceFree: UInt32 = 43, spaceTotal: UInt32 = 44, spaceUsed: UInt32 = 45
    static let accessTime: UInt32 = 47, accessTimeSet: UInt32 = 48, changeTime: UInt32 = 52
    static let modifyTime: UInt32 = 53, modifyTimeSet: UInt32 = 54

    /// What GETATTR asks for to make `Attributes`.
    static let forAttributes: [UInt32] = bitmap([type, size, fileID, mode, links, owner, ownerGroup, rawDevice, spaceUsed,
                                                 accessTime, changeTime, modifyTime])
    /// READDIR's request: the same plus the handle, so entries need no LOOKUP.
    static let forEntries: [UInt32] = bitmap([type, size, fileHandle, fileID, mode, links, owner, ownerGroup, rawDevice,
                                              spaceUsed, accessTime, changeTime, modifyTime])
    static let forStatistics: [UInt32] = bitmap([filesAvailable, filesFree, filesTotal, spaceAvailable, spaceFree, spaceTotal])
    /// What the export's root tells at mount: transfer sizes and the lease a v4.0 client renews.
    static let forTransferSizes: [UInt32] = bitmap([leaseTime, maxRead, maxWrite])

    static func bitmap(_ bits: [UInt32]) -> [UInt32] {
        var words = [UInt32](repeating: 0, count: Int((bits.max() ?? 0) / 32) + 1)
        for bit in bits { words[Int(bit / 32)] |= 1 << (bit % 32) }
        return words
    }
}

/// Everything Ferry reads out of an `fattr4`.
struct Decoded4 {
    var type: UInt32 = 0
    var size: UInt64 = 0
    var handle: FileHandle?
    var fileID: UInt64 = 0
    var mode: UInt32 = 0
    var links: UInt32 = 0
    var uid: UInt32 = 65534, gid: UInt32 = 65534
    var rdev: (UInt32, UInt32) = (0, 0)
    var used: UInt64 = 0
    var atime = Timestamp(seconds: 0, nanoseconds: 0), ctime = Timestamp(seconds: 0, nanoseconds: 0)
    var mtime = Timestamp(seconds: 0, nanoseconds: 0)
    var values: [UInt32: UInt64] = [:]

    var attributes: Attributes {
        let fileType: UInt32
        switch type {
        case 2: fileType = UInt32(S_IFDIR)
        case 3: fileType = UInt32(S_IFBLK)
        case 4: fileType = UInt32(S_IFCHR)
        case 5: fileType = UInt32(S_IFLNK)
        case 6: fileType = UInt32(S_IFSOCK)
        case 7: fileType = UInt32(S_IFIFO)
        default: fileType = UInt32(S_IFREG)
        }
        return Attributes(inode: fileID, size: size, blocks: (used + 511) / 512, accessTime: atime, modificationTime: mtime,
                          changeTime: ctime, mode: fileType | (mode & 0o7777), linkCount: links, uid: uid, gid: gid,
                          rdev: UInt32(truncatingIfNeeded: makeDevice(rdev.0, rdev.1)), blockSize: 4096)
    }

    /// Decodes an fattr4's bitmap `words` and `encoded` values; nil if it holds an attribute Ferry
    /// did not ask for or is cut short.
    init?(words: [UInt32], encoded: UnsafeRawBufferPointer) {
        var r = XDRReader(encoded)
        for (w, word) in words.enumerated() {
            for b in 0..<32 where word & (1 << UInt32(b)) != 0 {
                let bit = UInt32(w * 32 + b)
                switch bit {
                case NFS4Attribute.type: guard let v = r.u32() else { return nil }; type = v
                case NFS4Attribute.leaseTime: guard let v = r.u32() else { return nil }; values[bit] = UInt64(v)
                case NFS4Attribute.size: guard let v = r.u64() else { return nil }; size = v
                case NFS4Attribute.fsid: guard r.u64() != nil, r.u64() != nil else { return nil }
                case NFS4Attribute.fileHandle:
                    guard let bytes = r.opaque(max: 128) else { return nil }
                    handle = FileHandle(bytes: Array(bytes))
                case NFS4Attribute.fileID: guard let v = r.u64() else { return nil }; fileID = v
                case NFS4Attribute.mode: guard let v = r.u32() else { return nil }; mode = v
                case NFS4Attribute.links: guard let v = r.u32() else { return nil }; links = v
                case NFS4Attribute.owner: guard let s = r.opaque() else { return nil }; uid = numericID(s)
                case NFS4Attribute.ownerGroup: guard let s = r.opaque() else { return nil }; gid = numericID(s)
                case NFS4Attribute.rawDevice: guard let a = r.u32(), let b = r.u32() else { return nil }; rdev = (a, b)
                case NFS4Attribute.spaceUsed: guard let v = r.u64() else { return nil }; used = v
                case NFS4Attribute.accessTime: guard let t = r.time() else { return nil }; atime = t
                case NFS4Attribute.changeTime: guard let t = r.time() else { return nil }; ctime = t
                case NFS4Attribute.modifyTime: guard let t = r.time() else { return nil }; mtime = t
                case NFS4Attribute.filesAvailable, NFS4Attribute.filesFree, NFS4Attribute.filesTotal,
                     NFS4Attribute.maxRead, NFS4Attribute.maxWrite, NFS4Attribute.spaceAvailable,
                     NFS4Attribute.spaceFree, NFS4Attribute.spaceTotal:
                    guard let v = r.u64() else { return nil }; values[bit] = v
                default: return nil
                }
            }
        }
    }
}

/// Owners travel as strings; Ferry speaks numeric ones ("1000"), as AUTH_SYS clients do
/// when the server does not map names. A name it cannot map is nobody (65534).
private func numericID(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
    UInt32(String(decoding: bytes, as: UTF8.self)) ?? 65534
}

/// An attribute change as NFSv4 SETATTR (and create) carries it.
struct Encoded4 {
    var bits: [UInt32] = []
    var values: [UInt8] = []

    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.bigEndian) { values.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { u32(UInt32(v >> 32)); u32(UInt32(truncatingIfNeeded: v)) }
    /// settime4 SET_TO_CLIENT_TIME4 and the nfstime4.
    mutating func time(_ t: Timestamp) { u32(1); u64(UInt64(bitPattern: t.seconds)); u32(t.nanoseconds) }
    mutating func string(_ s: String) {
        let b = Array(s.utf8)
        u32(UInt32(b.count)); values.append(contentsOf: b)
        values.append(contentsOf: [UInt8](repeating: 0, count: (4 - b.count % 4) % 4))
    }

    /// Attributes in ascending bit order, as the protocol requires. A time set to the client's
    /// clock comes from `times` when given there (nfstime4: signed 64-bit seconds, so before
    /// 1970 and after 2106 go as they are), else from `s`.
    init(_ s: sattr3, times: ClientTimes = ClientTimes()) {
        if s.size.set_it != 0 { bits.append(NFS4Attribute.size); u64(s.size.set_size3_u.size) }
        if s.mode.set_it != 0 { bits.append(NFS4Attribute.mode); u32(s.mode.set_mode3_u.mode) }
        if s.uid.set_it != 0 { bits.append(NFS4Attribute.owner); string(String(s.uid.set_uid3_u.uid)) }
        if s.gid.set_it != 0 { bits.append(NFS4Attribute.ownerGroup); string(String(s.gid.set_gid3_u.gid)) }
        if s.atime.set_it != DONT_CHANGE {
            bits.append(NFS4Attribute.accessTimeSet)
            if s.atime.set_it == SET_TO_CLIENT_TIME {
                let t = s.atime.set_atime_u.atime
                time(times.access ?? Timestamp(seconds: Int64(t.seconds), nanoseconds: t.nseconds))
            } else { u32(0) }
        }
        if s.mtime.set_it != DONT_CHANGE {
            bits.append(NFS4Attribute.modifyTimeSet)
            if s.mtime.set_it == SET_TO_CLIENT_TIME {
                let t = s.mtime.set_mtime_u.mtime
                time(times.modification ?? Timestamp(seconds: Int64(t.seconds), nanoseconds: t.nseconds))
            } else { u32(0) }
        }
    }
}

extension Errno {
    /// NFSv4 statuses below 10000 are NFSv3's; the v4-only ones map to their nearest errno.
    init(nfs4 status: UInt32) {
        let raw = Int(status)
        switch raw {
        case 0..<10000, 10001, 10003...10007: self = Errno(nfs: nfsstat3(rawValue: UInt32(raw)))
        case 10014, 10020: self = .stale          // FHEXPIRED, NOFILEHANDLE
        case 10008, 10013: self = .again          // DELAY, GRACE
        case 10029: self = .loop                  // SYMLINK
        case 10032: self = .notSupported          // ATTRNOTSUPP
        case 10040, 10041: self = .invalid        // BADCHAR, BADNAME
        case 10039: self = .invalid               // BADOWNER
        case 10010, 10015, 10038: self = .accessDenied   // DENIED, SHARE_DENIED, OPENMODE
        case 10046: self = Errno(EBUSY)           // FILE_OPEN
        case 10004: self = .notSupported          // NOTSUPP
        case 10095: self = .noData                // NOXATTR (RFC 8276)
        case 10096: self = Errno(E2BIG)           // XATTR2BIG
        case 0xFFFF_0001: self = .range           // NFS4Status.range: a value larger than the caller's buffer
        default: self = .io
        }
    }
}
