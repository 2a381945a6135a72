#if canImport(Glibc)
import Glibc
#endif
import CFerry
import FerryCore

/// The errno of a call on one of our own descriptors. EBADF/EFAULT there mean a bug in the
/// driver (a closed or wrong fd, a bad pointer), never a guest error: stop loudly.
@inline(__always)
func ownFailure(_ call: StaticString) -> Errno {
    let e = errno
    if e == EBADF || e == EFAULT {
        preconditionFailure("FerryPOSIX: \(call) failed with errno \(e): driver bug")
    }
    return Errno(e)
}

// The kernel's numbers come from CFerry's constants (the one place they are spelled);
// these are the combinations and Swift types this driver uses.
let statxMask = UInt32(FERRY_STATX_BASIC_STATS | FERRY_STATX_MNT_ID)
let emptyPathNoFollow = Int32(FERRY_AT_EMPTY_PATH | FERRY_AT_SYMLINK_NOFOLLOW)
let utimeNow = Int(FERRY_UTIME_NOW)
let utimeOmit = Int(FERRY_UTIME_OMIT)
let openat2Resolve = UInt64(FERRY_RESOLVE_BENEATH | FERRY_RESOLVE_NO_MAGICLINKS | FERRY_RESOLVE_NO_SYMLINKS)
let oPath = Int32(FERRY_O_PATH)
let oTmpfile = Int32(FERRY_O_TMPFILE)
/// `__O_TMPFILE` without O_DIRECTORY.
let oTmpfileBit = oTmpfile & ~O_DIRECTORY

/// The empty path for `*at(fd, "", AT_EMPTY_PATH)` calls. Passing a Swift `""` to a C
/// string parameter copies it into a temporary heap buffer on every call; this is made once.
// nonisolated(unsafe): these C strings are written once, inside the global's one-time
// (thread-safe) initialiser, and only ever read after; no thread can see them change.
nonisolated(unsafe) let emptyPath: UnsafePointer<CChar> = {
    let p = UnsafeMutablePointer<CChar>.allocate(capacity: 1)
    p.pointee = 0
    return UnsafePointer(p)
}()

/// "system.posix_acl_default", made once like `emptyPath`.
nonisolated(unsafe) let defaultACLName: UnsafePointer<CChar> = cString("system.posix_acl_default")
/// "system.posix_acl_access".
nonisolated(unsafe) let accessACLName: UnsafePointer<CChar> = cString("system.posix_acl_access")

private func cString(_ s: StaticString) -> UnsafePointer<CChar> {
    let count = s.utf8CodeUnitCount
    let p = UnsafeMutablePointer<CChar>.allocate(capacity: count + 1)
    for i in 0..<count { p[i] = CChar(bitPattern: s.utf8Start[i]) }
    p[count] = 0
    return UnsafePointer(p)
}

/// Stats an fd (O_PATH or open) without following anything.
@inline(__always)
func statxFD(_ fd: Int32, _ out: inout statx) -> Bool {
    ferry_statx(fd, emptyPath, emptyPathNoFollow, statxMask, &out) == 0
}

extension statx {
    /// STATX_MNT_ID lives in the first padding word of glibc's (older) struct statx.
    var mountID: Int32 {
        if stx_mask & UInt32(FERRY_STATX_MNT_ID) == 0 { return 0 }
        let offset = 144  // after stx_dev_minor; struct statx is 256 bytes, fixed by the kernel ABI
        return withUnsafeBytes(of: self) { Int32(truncatingIfNeeded: $0.load(fromByteOffset: offset, as: UInt64.self)) }
    }
    var device: UInt64 { UInt64(stx_dev_major) << 32 | UInt64(stx_dev_minor) }
    var fileType: UInt32 { UInt32(stx_mode) & FileMode.typeMask }
}

@inline(__always)
private func timestamp(_ t: statx_timestamp) -> Timestamp {
    Timestamp(seconds: t.tv_sec, nanoseconds: t.tv_nsec)
}

/// The kernel's `new_encode_dev`, which is what FUSE carries in 32 bits.
@inline(__always)
func encodeDevice(major: UInt32, minor: UInt32) -> UInt32 {
    (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)
}

extension Attributes {
    init(_ s: statx) {
        self.init(inode: s.stx_ino, size: s.stx_size, blocks: s.stx_blocks,
                  accessTime: timestamp(s.stx_atime), modificationTime: timestamp(s.stx_mtime),
                  changeTime: timestamp(s.stx_ctime), mode: UInt32(s.stx_mode), linkCount: s.stx_nlink,
                  uid: s.stx_uid, gid: s.stx_gid,
                  rdev: encodeDevice(major: s.stx_rdev_major, minor: s.stx_rdev_minor),
                  blockSize: s.stx_blksize)
    }
}

/// Formats `fd` as a NUL-terminated decimal name ("17"), in a stack buffer: its name in
/// /proc/self/fd, which the driver opens relative to its O_PATH fd on that directory.
@inline(__always)
func withDescriptorName<R>(_ fd: Int32, _ body: (UnsafePointer<CChar>) throws(Errno) -> R) throws(Errno) -> R {
    precondition(fd >= 0, "FerryPOSIX: negative descriptor")
    return try withUnsafeTemporaryAllocation(of: CChar.self, capacity: 32) { buffer throws(Errno) -> R in
        var i = 0
        let start = i
        var value = UInt32(fd)
        repeat {
            buffer[i] = CChar(UInt8(ascii: "0") + UInt8(value % 10)); i += 1
            value /= 10
        } while value != 0
        // Digits came out least significant first.
        var lo = start, hi = i - 1
        while lo < hi { buffer.swapAt(lo, hi); lo += 1; hi -= 1 }
        buffer[i] = 0
        return try body(UnsafePointer(buffer.baseAddress!))
    }
}

/// True when the NUL-less name bytes start with `prefix`.
@inline(__always)
func hasPrefix(_ bytes: UnsafeRawBufferPointer, _ prefix: StaticString) -> Bool {
    let n = prefix.utf8CodeUnitCount
    if bytes.count < n { return false }
    let p = prefix.utf8Start
    for i in 0..<n where bytes[i] != p[i] { return false }
    return true
}

