import Foundation
import FerryTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Ownership and set-id bits through a real `ferry mount` of a local directory, changed by
/// real processes that become an unprivileged user with supplementary groups (setpriv:
/// setgroups, setgid, setuid). The host kernel checks them with all the groups
/// (default_permissions); FUSE tells the server the uid and gid only (issue 11, defect 3).
@Suite(.serialized, .requires(.root, .devFUSE, .setpriv))
struct OwnershipTests {
    /// Owns the files; also in group 1001, which only the kernel knows.
    static let owner = ["--reuid=1000", "--regid=1000", "--groups=1000,1001"]
    static let stranger = ["--reuid=1002", "--regid=1002", "--clear-groups"]

    @Test func ownerChgrpsToASupplementaryGroupAndSetIDBitsAreCleared() throws {
        let mount = try FerryMount()
        defer { mount.stop() }
        let m = mount.mountpoint
        #expect(chmod(m, 0o755) == 0)
        for name in ["chgrp", "chown"] {
            try makeFile("\(m)/\(name)", uid: 1000, gid: 1000, mode: 0o6755)
        }
        let chgrp = try runAs(Self.owner, "/usr/bin/chgrp", ["1001", "\(m)/chgrp"])
        #expect(chgrp.succeeded, "\(chgrp.output)")
        let chown = try runAs(Self.owner, "/usr/bin/chown", ["1000:1001", "\(m)/chown"])
        #expect(chown.succeeded, "\(chown.output)")
        for name in ["chgrp", "chown"] {
            let st = try hostStat("\(mount.source)/\(name)")
            #expect(st.st_gid == 1001 && st.st_uid == 1000, "\(name)")
            #expect(st.st_mode & 0o7777 == 0o755, "\(name): set-id bits must be cleared")
        }
    }

    @Test func ownerSetsSetGIDOnAFileOfASupplementaryGroup() throws {
        let mount = try FerryMount()
        defer { mount.stop() }
        let m = mount.mountpoint
        #expect(chmod(m, 0o755) == 0)
        try makeFile("\(m)/f", uid: 1000, gid: 1001, mode: 0o644)
        let result = try runAs(Self.owner, "/usr/bin/chmod", ["2755", "\(m)/f"])
        #expect(result.succeeded, "\(result.output)")
        #expect(try hostStat("\(mount.source)/f").st_mode & 0o7777 == 0o2755)
    }

    @Test func aWriteByAnotherUserClearsSetUIDAndSetGID() throws {
        let mount = try FerryMount()
        defer { mount.stop() }
        let m = mount.mountpoint
        #expect(chmod(m, 0o755) == 0)
        try makeFile("\(m)/w", uid: 0, gid: 0, mode: 0o6777)
        let result = try runAs(Self.stranger, "/bin/sh", ["-c", "printf x >> \(m)/w"])
        #expect(result.succeeded, "\(result.output)")
        #expect(try hostStat("\(mount.source)/w").st_mode & 0o7777 == 0o777)
    }

    /// With --posix-acl the umask is the server's to apply (FUSE_DONT_MASK): in a directory
    /// with a default ACL the ACL replaces it, elsewhere it still applies.
    @Test func aDefaultACLReplacesTheUmaskThroughAPosixACLMount() throws {
        let mount = try FerryMount(extraArguments: ["--posix-acl"])
        defer { mount.stop() }
        let m = mount.mountpoint
        #expect(mkdir("\(m)/acl", 0o777) == 0 && mkdir("\(m)/plain", 0o777) == 0)
        let set = try #require(setxattrFunction, "setxattr not found in the C library")
        let value = defaultACL(user: 7, group: 7, other: 7)
        #expect(value.withUnsafeBytes { set("\(m)/acl", "system.posix_acl_default", $0.baseAddress!, $0.count, 0) } == 0,
                "set the default ACL: errno \(errno)")
        let script = "umask 077 && : > \(m)/acl/f && mkdir \(m)/acl/d && : > \(m)/plain/f && mkdir \(m)/plain/d"
        let result = try runToCompletion("/bin/sh", ["-c", script])
        #expect(result.succeeded, "\(result.output)")
        #expect(try hostStat("\(mount.source)/acl/f").st_mode & 0o777 == 0o666)
        #expect(try hostStat("\(mount.source)/acl/d").st_mode & 0o777 == 0o777)
        #expect(try hostStat("\(mount.source)/plain/f").st_mode & 0o777 == 0o600)
        #expect(try hostStat("\(mount.source)/plain/d").st_mode & 0o777 == 0o700)
    }

    /// Setting an access ACL clears S_ISGID only for a caller outside the file's group: the
    /// kernel, which knows the groups, says so (FUSE_SETXATTR_ACL_KILL_SGID).
    @Test func settingAnAccessACLClearsSetGIDExactlyForCallersOutsideTheGroup() throws {
        let mount = try FerryMount(extraArguments: ["--posix-acl"])
        defer { mount.stop() }
        let m = mount.mountpoint
        #expect(chmod(m, 0o755) == 0)
        try makeFile("\(m)/member", uid: 1000, gid: 1001, mode: 0o2775)
        try makeFile("\(m)/outsider", uid: 1000, gid: 1003, mode: 0o2775)
        let acl = "bytes([2,0,0,0, 1,0,7,0,255,255,255,255, 4,0,7,0,255,255,255,255, 32,0,5,0,255,255,255,255])"
        for name in ["member", "outsider"] {
            let script = "import os; os.setxattr('\(m)/\(name)', 'system.posix_acl_access', \(acl))"
            let result = try runAs(Self.owner, "/usr/bin/python3", ["-c", script])
            #expect(result.succeeded, "\(name): \(result.output)")
        }
        #expect(try hostStat("\(mount.source)/member").st_mode & 0o7777 == 0o2775)
        #expect(try hostStat("\(mount.source)/outsider").st_mode & 0o7777 == 0o775)
    }

    // MARK: - Helpers

    /// Creates `path` through the mount as root, then gives it its owner and mode (chown
    /// first: it clears set-id bits).
    private func makeFile(_ path: String, uid: uid_t, gid: gid_t, mode: mode_t) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        try #require(fd >= 0, "create \(path): errno \(errno)")
        close(fd)
        try #require(chown(path, uid, gid) == 0, "chown \(path): errno \(errno)")
        try #require(chmod(path, mode) == 0, "chmod \(path): errno \(errno)")
    }

    private func runAs(_ identity: [String], _ program: String, _ arguments: [String]) throws -> ProcessOutput {
        try runToCompletion("/usr/bin/setpriv", identity + ["--", program] + arguments)
    }

    private func hostStat(_ path: String) throws -> stat {
        var st = stat()
        try #require(lstat(path, &st) == 0, "lstat \(path): errno \(errno)")
        return st
    }
}

/// glibc's setxattr(2) wrapper, looked up at run time (the Glibc module does not export
/// <sys/xattr.h>, and this test target has no C shim of its own).
private let setxattrFunction: (@convention(c) (UnsafePointer<CChar>, UnsafePointer<CChar>, UnsafeRawPointer, Int, Int32) -> Int32)? = {
    guard let symbol = dlsym(nil, "setxattr") else { return nil }
    return unsafeBitCast(symbol, to: (@convention(c) (UnsafePointer<CChar>, UnsafePointer<CChar>, UnsafeRawPointer, Int, Int32) -> Int32).self)
}()

/// A POSIX ACL xattr value with the three base entries (perms as rwx octal digits).
private func defaultACL(user: UInt16, group: UInt16, other: UInt16) -> [UInt8] {
    var bytes: [UInt8] = []
    func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    u32(2)  // POSIX_ACL_XATTR_VERSION
    for (tag, perm) in [(UInt16(0x01), user), (0x04, group), (0x20, other)] {  // USER_OBJ, GROUP_OBJ, OTHER
        u16(tag); u16(perm); u32(UInt32.max)
    }
    return bytes
}
