// Bits inside request arguments, as named in <linux/fuse.h> 7.38.

/// FATTR_* bits of `fuse_setattr_in.valid`: which attributes SETATTR changes.
public enum FUSESetattrValid {
    public static let mode: UInt32 = 1 << 0
    public static let uid: UInt32 = 1 << 1
    public static let gid: UInt32 = 1 << 2
    public static let size: UInt32 = 1 << 3
    public static let atime: UInt32 = 1 << 4
    public static let mtime: UInt32 = 1 << 5
    public static let fh: UInt32 = 1 << 6
    public static let atimeNow: UInt32 = 1 << 7
    public static let mtimeNow: UInt32 = 1 << 8
    public static let lockOwner: UInt32 = 1 << 9
    public static let ctime: UInt32 = 1 << 10
    public static let killSuidGid: UInt32 = 1 << 11
}

/// Flag bits of the other request argument structs.
public enum FUSERequestFlag {
    /// `fuse_getattr_in.getattr_flags`: `fh` names an open file.
    public static let getattrFH: UInt32 = 1 << 0
    /// `fuse_open_in.open_flags`: clear setuid/setgid (O_TRUNC by an unprivileged caller).
    public static let openKillSuidGid: UInt32 = 1 << 0
    /// `fuse_setxattr_in.setxattr_flags` (FUSE_SETXATTR_EXT): the caller setting an access
    /// ACL is not in the file's group and lacks CAP_FSETID: clear setgid.
    public static let setxattrACLKillSGID: UInt32 = 1 << 0
    /// `fuse_write_in.write_flags`: clear setuid/setgid after this write.
    public static let writeKillSuidGid: UInt32 = 1 << 2
    /// `fuse_fsync_in.fsync_flags`: data only (fdatasync).
    public static let fsyncDataOnly: UInt32 = 1 << 0
    /// `fuse_rename2_in.flags` (renameat2's): fail if the target exists / swap the two /
    /// leave a whiteout.
    public static let renameNoReplace: UInt32 = 1 << 0
    public static let renameExchange: UInt32 = 1 << 1
    public static let renameWhiteout: UInt32 = 1 << 2
    /// `fuse_lk_in.lk_flags`: a BSD flock, not a POSIX record lock.
    public static let lockFlock: UInt32 = 1 << 0
}
