import CFerry
import CFerrySandbox
import Foundation
import Testing

import FerryCore
@testable import FerryPOSIX

/// Ownership, modes and set-id bits when the caller is not root. FUSE tells a server the
/// caller's uid and gid, never its supplementary groups; the client kernel has checked the
/// request with all of them (issue 11, defect 3), so the driver must not refuse or strip
/// what those groups allow.
@Suite(.serialized) struct CredentialTests {
    /// Owns the files below; also a member of `supplementaryGroup`, which FUSE never says.
    static let owner = Credentials(uid: 1000, gid: 1000, pid: 1)
    static let supplementaryGroup: UInt32 = 1001
    static let stranger = Credentials(uid: 1002, gid: 1002, pid: 1)

    // MARK: - chown and chmod by the owner

    @Test func ownerChangesTheGroupToASupplementaryGroup() throws {
        try withExport { path, driver in
            let file = try makeFile(driver, "f", uid: 1000, gid: 1000, mode: 0o644)
            let after = try driver.setattr(file.inode, nil, AttributeChanges(gid: Self.supplementaryGroup), Self.owner)
            #expect(after.gid == Self.supplementaryGroup && after.uid == 1000)
            // chown(f, own uid, group), as `chown user:group` sends it.
            let back = try driver.setattr(file.inode, nil, AttributeChanges(uid: 1000, gid: 1000), Self.owner)
            #expect(back.gid == 1000 && back.uid == 1000)
            POSIXDriver.resetThreadCredentials()
            #expect(hostStat("\(path)/f")!.st_gid == 1000)
        }
    }

    @Test func ownersChownClearsSetUIDAndGroupExecutableSetGIDOfARegularFile() throws {
        try withExport { path, driver in
            // With KILLPRIV_V2 the kernel asks for the clearing (FATTR_KILL_SUIDGID); without
            // it, it is the chown itself that must clear them, as chown(2) does.
            for kill in [true, false] {
                let file = try makeFile(driver, "f\(kill)", uid: 1000, gid: 1000, mode: 0o6755)
                let after = try driver.setattr(file.inode, nil, AttributeChanges(gid: Self.supplementaryGroup, killSuidGid: kill),
                                               Self.owner)
                #expect(after.mode & 0o7777 == 0o755, "kill flag \(kill)")
                POSIXDriver.resetThreadCredentials()
                #expect(hostStat("\(path)/f\(kill)")!.st_mode & 0o7777 == 0o755)
            }
            // Set-group-ID without group execute (a locking marker) stays, as Linux keeps it
            // for an owner in the file's group.
            let marker = try makeFile(driver, "marker", uid: 1000, gid: 1000, mode: 0o2644)
            let kept = try driver.setattr(marker.inode, nil, AttributeChanges(gid: Self.supplementaryGroup, killSuidGid: true),
                                          Self.owner)
            #expect(kept.mode & 0o7777 == 0o2644)
            // A directory keeps its set-group-ID bit: chown(2) clears nothing there.
            let dir = try withName("d") { try driver.mkdir(try driver.rootInode(), $0, mode: 0o755, .root) }
            _ = try driver.setattr(dir.inode, nil, AttributeChanges(uid: 1000, gid: 1000), .root)
            _ = try driver.setattr(dir.inode, nil, AttributeChanges(mode: 0o2775), .root)
            let directory = try driver.setattr(dir.inode, nil, AttributeChanges(gid: Self.supplementaryGroup), Self.owner)
            #expect(directory.mode & 0o7777 == 0o2775 && directory.gid == Self.supplementaryGroup)
        }
    }

    @Test func ownersChmodKeepsSetGIDOnAFileOfASupplementaryGroup() throws {
        try withExport { path, driver in
            let file = try makeFile(driver, "f", uid: 1000, gid: Self.supplementaryGroup, mode: 0o644)
            let after = try driver.setattr(file.inode, nil, AttributeChanges(mode: 0o2755), Self.owner)
            #expect(after.mode & 0o7777 == 0o2755)
            POSIXDriver.resetThreadCredentials()
            #expect(hostStat("\(path)/f")!.st_mode & 0o7777 == 0o2755)
        }
    }

    /// What the host can check by itself still holds: only the owner changes a node's mode
    /// or group, and an owner who is not root cannot give a file away.
    @Test func othersCannotChangeModeOrOwnerAndOwnersCannotGiveFilesAway() throws {
        try withExport { path, driver in
            let file = try makeFile(driver, "f", uid: 1000, gid: 1000, mode: 0o644)
            #expect(errnoOf { _ = try driver.setattr(file.inode, nil, AttributeChanges(mode: 0o666), Self.stranger) } == EPERM)
            #expect(errnoOf { _ = try driver.setattr(file.inode, nil, AttributeChanges(gid: 1002), Self.stranger) } == EPERM)
            #expect(errnoOf { _ = try driver.setattr(file.inode, nil, AttributeChanges(uid: 1002), Self.owner) } == EPERM)
            POSIXDriver.resetThreadCredentials()
            let st = hostStat("\(path)/f")!
            #expect(st.st_mode & 0o7777 == 0o644 && st.st_uid == 1000 && st.st_gid == 1000)
        }
    }

    /// Without KILLPRIV_V2 the kernel clears set-id bits for a write or truncation by any
    /// user with a SETATTR of the mode minus those bits, sent as that user: it must succeed
    /// (else the write fails with EPERM), and nothing more may be changed that way.
    @Test func anyUserMayClearSetIDBitsAsAWriteWouldButChangeNothingElse() throws {
        try withExport { path, driver in
            let file = try makeFile(driver, "f", uid: 0, gid: 0, mode: 0o6777)
            let after = try driver.setattr(file.inode, nil, AttributeChanges(mode: 0o777), Self.stranger)
            #expect(after.mode & 0o7777 == 0o777)
            let other = try makeFile(driver, "g", uid: 0, gid: 0, mode: 0o6755)
            #expect(errnoOf { _ = try driver.setattr(other.inode, nil, AttributeChanges(mode: 0o757), Self.stranger) } == EPERM)
            #expect(errnoOf { _ = try driver.setattr(other.inode, nil, AttributeChanges(mode: 0o7755), Self.stranger) } == EPERM)
            #expect(try driver.getattr(other.inode, nil, .root).mode & 0o7777 == 0o6755)
            // Only regular files: a directory's set-group-ID is no privilege a write gives up.
            let dir = try withName("d") { try driver.mkdir(try driver.rootInode(), $0, mode: 0o775, .root) }
            _ = try driver.setattr(dir.inode, nil, AttributeChanges(mode: 0o2775), .root)
            #expect(errnoOf { _ = try driver.setattr(dir.inode, nil, AttributeChanges(mode: 0o775), Self.stranger) } == EPERM)
            #expect(try driver.getattr(dir.inode, nil, .root).mode & 0o7777 == 0o2775)
        }
        // Also when the host re-checks every request as the caller.
        try withExport(POSIXOptions(trustClientPermissions: false)) { path, driver in
            let file = try makeFile(driver, "f", uid: 0, gid: 0, mode: 0o4755)
            #expect(try driver.setattr(file.inode, nil, AttributeChanges(mode: 0o755), Self.stranger).mode & 0o7777 == 0o755)
            #expect(errnoOf { _ = try driver.setattr(file.inode, nil, AttributeChanges(mode: 0o777), Self.stranger) } == EPERM)
        }
    }

    // MARK: - Writes

    @Test func aWriteByAnotherUserClearsSetUIDAndGroupExecutableSetGID() throws {
        try withExport { path, driver in
            for kill in [true, false] {
                let file = try makeFile(driver, "f\(kill)", uid: 0, gid: 0, mode: 0o6777)
                let opened = try driver.open(file.inode, flags: O_WRONLY, killSuidGid: false, Self.stranger)
                #expect(try write(driver, opened.file, [1, 2, 3], kill: kill, Self.stranger) == 3)
                #expect(try driver.getattr(file.inode, nil, .root).mode & 0o7777 == 0o777, "kill flag \(kill)")
            }
            // Root keeps them (CAP_FSETID) unless its kernel says it lacks that capability.
            for kill in [false, true] {
                let file = try makeFile(driver, "root\(kill)", uid: 0, gid: 0, mode: 0o6777)
                let opened = try driver.open(file.inode, flags: O_WRONLY, killSuidGid: false, .root)
                _ = try write(driver, opened.file, [1], kill: kill, .root)
                #expect(try driver.getattr(file.inode, nil, .root).mode & 0o7777 == (kill ? 0o777 : 0o6777))
            }
        }
    }

    // MARK: - Creation modes and the umask

    @Test func creatingADriverLeavesTheUmaskAlone() throws {
        let dir = try makeDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let seen = try onThreadWithOwnUmask(0o027) { () throws -> mode_t in
            _ = try POSIXDriver(root: dir)
            return currentUmask()
        }
        #expect(seen == 0o027)
    }

    /// The client kernel has applied its umask; the daemon's (whatever it is) must not
    /// take more bits away.
    @Test func nodesGetTheModeAskedForWhateverTheProcessUmask() throws {
        try withExport { path, driver in
            try onThreadWithOwnUmask(0o077) { () throws in
                let root = try driver.rootInode()
                let (file, _) = try driver.create(root, "f", mode: 0o666, flags: O_RDWR, .root)
                #expect(file.attributes.mode & 0o7777 == 0o666)
                let dir = try withName("d") { try driver.mkdir(root, $0, mode: 0o777, .root) }
                #expect(dir.attributes.mode & 0o7777 == 0o777)
                let fifo = try withName("p") { try driver.mknod(root, $0, mode: UInt32(S_IFIFO) | 0o666, rdev: 0, .root) }
                #expect(fifo.attributes.mode & 0o7777 == 0o666)
                let (unnamed, _) = try driver.tmpfile(root, mode: 0o664, flags: O_RDWR, .root)
                #expect(unnamed.attributes.mode & 0o7777 == 0o664)
                let (user, _) = try driver.create(root, "u", mode: 0o664, flags: O_RDWR, Self.owner)
                #expect(user.attributes.mode & 0o7777 == 0o664)
            }
            POSIXDriver.resetThreadCredentials()
            #expect(hostStat("\(path)/f")!.st_mode & 0o7777 == 0o666)
            #expect(hostStat("\(path)/d")!.st_mode & 0o7777 == 0o777)
            #expect(hostStat("\(path)/p")!.st_mode & 0o7777 == 0o666)
            #expect(hostStat("\(path)/u")!.st_mode & 0o7777 == 0o664)
        }
    }

    /// With FUSE_DONT_MASK (negotiated with POSIX ACLs) the umask comes with the request;
    /// in a directory with a default ACL it must not be applied: the ACL replaces it.
    @Test func aDefaultACLReplacesTheCallersUmask() throws {
        try withExport { path, driver in
            let root = try driver.rootInode()
            let inherit = try withName("acl") { try driver.mkdir(root, $0, mode: 0o777, .root) }
            POSIXDriver.resetThreadCredentials()
            try setHostACL("\(path)/acl", "system.posix_acl_default", user: 7, group: 7, other: 7)
            let caller = Credentials(uid: 0, gid: 0, pid: 1, umask: 0o022)
            let (file, _) = try driver.create(inherit.inode, "f", mode: 0o666, flags: O_RDWR, caller)
            #expect(file.attributes.mode & 0o7777 == 0o666)
            let dir = try withName("d") { try driver.mkdir(inherit.inode, $0, mode: 0o777, caller) }
            #expect(dir.attributes.mode & 0o7777 == 0o777)
            // Without one, the umask applies.
            let (plain, _) = try driver.create(root, "plain", mode: 0o666, flags: O_RDWR, caller)
            #expect(plain.attributes.mode & 0o7777 == 0o644)
            let plainDir = try withName("pd") { try driver.mkdir(root, $0, mode: 0o777, caller) }
            #expect(plainDir.attributes.mode & 0o7777 == 0o755)
            POSIXDriver.resetThreadCredentials()
            #expect(hostStat("\(path)/acl/f")!.st_mode & 0o7777 == 0o666)
            #expect(hostStat("\(path)/plain")!.st_mode & 0o7777 == 0o644)
        }
    }

    // MARK: - POSIX ACLs and set-group-ID

    /// Setting an access ACL clears set-group-ID only for a caller outside the file's group:
    /// the client kernel decides (it knows the groups) and says so with
    /// FUSE_SETXATTR_ACL_KILL_SGID; without it, the host must not decide otherwise.
    @Test func anACLSetByAnOwnerInTheGroupThroughASupplementaryGroupKeepsSetGID() throws {
        try withExport { path, driver in
            let file = try makeFile(driver, "f", uid: 1000, gid: Self.supplementaryGroup, mode: 0o2775)
            try withAttributeName("system.posix_acl_access") { name in
                try aclValue(user: 7, group: 7, other: 5).withUnsafeBytes {
                    try driver.setxattr(file.inode, name: name, value: $0, flags: 0, Self.owner)
                }
            }
            #expect(try driver.getattr(file.inode, nil, .root).mode & 0o7777 == 0o2775)
        }
    }

    // MARK: - Helpers

    /// A regular file `name` in the export's root, owned by uid:gid with `mode`, made as root.
    func makeFile(_ driver: POSIXDriver, _ name: String, uid: UInt32, gid: UInt32, mode: UInt32) throws -> POSIXDriver.Entry {
        let (entry, _) = try driver.create(try driver.rootInode(), name, mode: 0o644, flags: O_RDWR, .root)
        // chown first: it clears set-id bits.
        _ = try driver.setattr(entry.inode, nil, AttributeChanges(uid: uid, gid: gid), .root)
        _ = try driver.setattr(entry.inode, nil, AttributeChanges(mode: mode), .root)
        return entry
    }

    func write(_ driver: POSIXDriver, _ file: POSIXDriver.File, _ bytes: [UInt8], kill: Bool,
               _ caller: Credentials) throws -> Int {
        var data = bytes
        return try data.withUnsafeMutableBytes { buffer in
            var vector = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
            return try driver.write(file, offset: 0, from: IOVectors(base: &vector, count: 1), killSuidGid: kill, caller)
        }
    }
}

/// A POSIX ACL xattr value with only the three base entries (perms as rwx octal digits).
func aclValue(user: UInt16, group: UInt16, other: UInt16) -> [UInt8] {
    var bytes: [UInt8] = []
    func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    u32(2)  // POSIX_ACL_XATTR_VERSION
    for (tag, perm) in [(UInt16(0x01), user), (0x04, group), (0x20, other)] {  // USER_OBJ, GROUP_OBJ, OTHER
        u16(tag); u16(perm); u32(UInt32.max)
    }
    return bytes
}

/// Sets an ACL on a host directory or file, as the test process.
func setHostACL(_ path: String, _ name: String, user: UInt16, group: UInt16, other: UInt16) throws {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    try #require(fd >= 0)
    defer { close(fd) }
    let value = aclValue(user: user, group: group, other: other)
    let rc = value.withUnsafeBytes { ferry_fsetxattr(fd, name, $0.baseAddress, $0.count, 0) }
    try #require(rc == 0, "setting \(name) on \(path): errno \(errno) (the test needs a file system with POSIX ACLs)")
}

func makeDirectory() throws -> String {
    var template = Array("/tmp/ferry-creds-XXXXXX".utf8CString)
    let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    try #require(made != nil)
    return String(cString: made!)
}

/// The calling thread's umask, read without changing it for longer than two system calls
/// on this thread's own file-system context.
func currentUmask() -> mode_t {
    let mask = umask(0o022)
    umask(mask)
    return mask
}

/// Runs `body` on a new thread that has its own file-system context (unshare(CLONE_FS)) and
/// umask `mask`: what it sees and sets there is its own, never the test process's.
func onThreadWithOwnUmask<R>(_ mask: mode_t, _ body: () throws -> R) throws -> R {
    var result: Result<R, any Error>?
    withoutActuallyEscaping(body) { body in
        let job = ThreadJob {
            guard ferry_sb_unshare(0x200) == 0 else {  // CLONE_FS
                result = .failure(Errno.current)
                return
            }
            umask(mask)
            result = Result { try body() }
        }
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            Unmanaged<ThreadJob>.fromOpaque(raw!).takeRetainedValue().run()
            return nil
        }, Unmanaged.passRetained(job).toOpaque())
        precondition(rc == 0, "pthread_create failed")
        pthread_join(thread, nil)
    }
    return try result!.get()
}

/// @unchecked Sendable: `run` is called once, on the thread it was made for, while the maker waits in join.
private final class ThreadJob: @unchecked Sendable {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}

extension CredentialTests {
    /// FUSE_SETXATTR_ACL_KILL_SGID: the client kernel found the caller outside the file's
    /// group; S_ISGID goes, even though the host, seeing the caller's primary group, would
    /// keep it.
    @Test func theACLKillSGIDFlagClearsSetGID() throws {
        try withExport { path, driver in
            let file = try makeFile(driver, "f", uid: 1000, gid: 1000, mode: 0o2775)
            try withAttributeName("system.posix_acl_access") { name in
                try aclValue(user: 7, group: 7, other: 5).withUnsafeBytes {
                    try driver.setxattr(file.inode, name: name, value: $0, flags: 0, clearingSetGID: true, Self.owner)
                }
            }
            #expect(try driver.getattr(file.inode, nil, .root).mode & 0o7777 == 0o775)
            POSIXDriver.resetThreadCredentials()
            #expect(hostStat("\(path)/f")!.st_mode & 0o7777 == 0o775)
        }
    }

    /// FUSE_OPEN_KILL_SUIDGID on a CREATE that truncates an existing file: the kernel says
    /// the caller (root here, as a process without CAP_FSETID would be) cannot keep them.
    @Test func createTruncatingAnExistingFileHonoursTheKillFlag() throws {
        try withExport { path, driver in
            for kill in [true, false] {
                let file = try makeFile(driver, "f\(kill)", uid: 0, gid: 0, mode: 0o6755)
                _ = try withName("f\(kill)") {
                    try driver.create(try driver.rootInode(), $0, mode: 0o644, flags: O_RDWR | O_TRUNC, killSuidGid: kill, .root)
                }
                #expect(try driver.getattr(file.inode, nil, .root).mode & 0o7777 == (kill ? 0o755 : 0o6755))
            }
        }
    }
}
