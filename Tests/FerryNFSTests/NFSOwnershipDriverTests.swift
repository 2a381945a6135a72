import FerryCore
import FerryNFS
import FerryTestSupport
import Foundation
import Logging
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Ownership and set-id bits over NFS, called as FUSE calls the driver: with the caller's uid
/// and gid and no supplementary groups, after the kernel has checked the permission.
@Suite("NFS ownership and set-id bits against nfs-ganesha", .serialized,
       .requires(.root, .ganesha))
struct NFSOwnershipDriverTests {
    static let owner = Credentials(uid: 4321, gid: 4321, pid: 1)
    static let other = Credentials(uid: 1111, gid: 1111, pid: 1)
    static let supplementaryGroup: UInt32 = 5555

    /// A driver on a fresh export holding `f`, owned by `owner` (primary group) with `mode`.
    static func withFile(_ name: String, version: NFSTestVersion, mode: mode_t, group: gid_t = 4321,
                         _ body: (NFSDriver, NFSInode, String) throws -> Void) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport("\(name)-v\(version)")
            let path = export + "/f"
            #expect(FileManager.default.createFile(atPath: path, contents: Data("original".utf8)))
            #expect(chown(path, 4321, group) == 0 && chmod(path, mode) == 0)
            let driver = try NFSDriverTests.driver(export, version: version)
            let file = try withName("f") { try driver.lookup(try driver.root().inode, $0, owner) }
            try body(driver, file.inode, path)
        }
    }

    static func onDisk(_ path: String) -> stat {
        var st = stat()
        _ = stat(path, &st)
        return st
    }

    @Test(arguments: NFSTestVersion.allCases) func theOwnerChangesTheGroupToASupplementaryGroupAndLosesSetIDBits(version: NFSTestVersion) async throws {
        try await NFSOwnershipDriverTests.withFile("driver-chgrp", version: version, mode: 0o6755) { driver, file, path in
            let after = try driver.setattr(file, nil, AttributeChanges(gid: NFSOwnershipDriverTests.supplementaryGroup), NFSOwnershipDriverTests.owner)
            #expect(after.gid == NFSOwnershipDriverTests.supplementaryGroup && after.uid == 4321)
            // chown(2) by a user clears S_ISUID, and S_ISGID with group execute.
            #expect(after.mode & 0o7777 == 0o755, "mode \(String(after.mode & 0o7777, radix: 8))")
            let st = NFSOwnershipDriverTests.onDisk(path)
            #expect(st.st_gid == NFSOwnershipDriverTests.supplementaryGroup && st.st_mode & 0o7777 == 0o755)
        }
    }

    /// The group the kernel vouched for is added to the caller's, nothing more: the server
    /// still refuses a change the caller may not make.
    @Test(arguments: NFSTestVersion.allCases) func someoneWhoDoesNotOwnTheFileStillCannotChangeItsOwnerOrGroup(version: NFSTestVersion) async throws {
        try await NFSOwnershipDriverTests.withFile("driver-chgrp-other", version: version, mode: 0o644) { driver, file, path in
            #expect(throws: Errno.notPermitted) {
                try driver.setattr(file, nil, AttributeChanges(gid: NFSOwnershipDriverTests.supplementaryGroup), NFSOwnershipDriverTests.other)
            }
            #expect(throws: Errno.notPermitted) {
                try driver.setattr(file, nil, AttributeChanges(uid: 1111), NFSOwnershipDriverTests.owner)
            }
            let st = NFSOwnershipDriverTests.onDisk(path)
            #expect(st.st_uid == 4321 && st.st_gid == 4321)
        }
    }

    /// The kernel lets S_ISGID through a chmod only when the caller is in the file's group.
    @Test(arguments: NFSTestVersion.allCases) func theOwnerInTheFilesSupplementaryGroupKeepsSetgidOnChmod(version: NFSTestVersion) async throws {
        try await NFSOwnershipDriverTests.withFile("driver-chmod-sgid", version: version, mode: 0o644,
                                             group: NFSOwnershipDriverTests.supplementaryGroup) { driver, file, path in
            let after = try driver.setattr(file, nil, AttributeChanges(mode: 0o2755), NFSOwnershipDriverTests.owner)
            #expect(after.mode & 0o7777 == 0o2755, "mode \(String(after.mode & 0o7777, radix: 8))")
            #expect(NFSOwnershipDriverTests.onDisk(path).st_mode & 0o7777 == 0o2755)
        }
    }

    /// A write, a truncate and an O_TRUNC open by someone else clear S_ISUID, and S_ISGID
    /// with group execute, as the kernel asks (KILL_SUIDGID), though the writer may not chmod.
    @Test(arguments: NFSTestVersion.allCases) func aWriteOrTruncateBySomeoneElseClearsTheSetIDBits(version: NFSTestVersion) async throws {
        try await NFSOwnershipDriverTests.withFile("driver-kill-suid", version: version, mode: 0o6777) { driver, file, path in
            let other = NFSOwnershipDriverTests.other
            let opened = try driver.open(file, flags: O_WRONLY, killSuidGid: false, other)
            #expect(try withVectors(Array("changed".utf8)) { try driver.write(opened.file, offset: 0, from: $0, killSuidGid: true, other) } == 7)
            driver.release(opened.file, flags: 0, other)
            #expect(NFSOwnershipDriverTests.onDisk(path).st_mode & 0o7777 == 0o777, "after a write")

            #expect(chmod(path, 0o6777) == 0)
            let truncated = try driver.setattr(file, nil, AttributeChanges(size: 0, killSuidGid: true), other)
            #expect(truncated.size == 0 && truncated.mode & 0o7777 == 0o777, "after a truncate: \(String(truncated.mode & 0o7777, radix: 8))")

            #expect(chmod(path, 0o6777) == 0)
            let reopened = try driver.open(file, flags: O_WRONLY | O_TRUNC, killSuidGid: true, other)
            driver.release(reopened.file, flags: 0, other)
            #expect(NFSOwnershipDriverTests.onDisk(path).st_mode & 0o7777 == 0o777, "after an O_TRUNC open")

            // S_ISGID without group execute is not a set-id program: it stays.
            #expect(chmod(path, 0o6767) == 0)
            _ = try driver.setattr(file, nil, AttributeChanges(size: 0, killSuidGid: true), other)
            #expect(NFSOwnershipDriverTests.onDisk(path).st_mode & 0o7777 == 0o2767)
        }
    }

    /// A directory whose group is one of the caller's supplementary groups (the kernel
    /// checked that before it sent the request; FUSE carries that group only on the create
    /// itself): LOOKUP, creating, listing and removing in it work as for the kernel. What
    /// the group class does not grant is still refused by the server.
    @Test(arguments: NFSTestVersion.allCases) func aSupplementaryGroupMemberWorksInTheGroupsDirectory(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport("driver-team-v\(version)")
            for (name, mode) in [("team", mode_t(0o770)), ("private", mode_t(0o700))] {
                #expect(mkdir(export + "/" + name, mode) == 0 && chown(export + "/" + name, 0, 4444) == 0 && chmod(export + "/" + name, mode) == 0)
            }
            let driver = try NFSDriverTests.driver(export, version: version)
            let rootEntry = try driver.root()
            let member = Credentials(uid: 65534, gid: 65534, pid: 1)
            let team = try withName("team") { try driver.lookup(rootEntry.inode, $0, member) }
            #expect(throws: Errno.noEntry) { try withName("by-member") { try driver.lookup(team.inode, $0, member) } }
            let (made, opened) = try withName("by-member") { try driver.create(team.inode, $0, mode: 0o644, flags: O_WRONLY | O_EXCL, member) }
            driver.release(opened.file, flags: 0, member)
            #expect(made.attributes.uid == 65534)
            _ = try withName("dir-by-member") { try driver.mkdir(team.inode, $0, mode: 0o755, member) }
            #expect(try withName("by-member") { try driver.lookup(team.inode, $0, member) }.attributes.uid == 65534)
            #expect(Set(try listing(driver, team.inode, as: member)) == ["by-member", "dir-by-member"])
            try withName("by-member") { try driver.unlink(team.inode, $0, member) }
            let privateDirectory = try withName("private") { try driver.lookup(rootEntry.inode, $0, member) }
            #expect(throws: Errno.accessDenied) { try withName("x") { try driver.mkdir(privateDirectory.inode, $0, mode: 0o755, member) } }
            #expect(throws: Errno.accessDenied) { try withName("x") { try driver.lookup(privateDirectory.inode, $0, member) } }
        }
    }

    /// With ids mapped or squashed (`trustClientGroups` off) a guest could not name the
    /// directory's group, so none is added: the server's refusal stands.
    @Test(arguments: NFSTestVersion.allCases) func noGroupIsAddedWhenTheGuestsIdsAreMapped(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport("driver-team-mapped-v\(version)")
            #expect(mkdir(export + "/team", 0o770) == 0 && chown(export + "/team", 0, 4444) == 0 && chmod(export + "/team", 0o770) == 0)
            let options = NFSOptions(server: "127.0.0.1", path: export, version: NFSProtocolVersion(version.rawValue)!, timeout: 5, trustClientGroups: false)
            let driver = try NFSDriver(options: options, logger: Logger(label: "ferry.nfs.test"))
            let caller = Credentials(uid: 65534, gid: 65534, pid: 1)
            let team = try withName("team") { try driver.lookup(try driver.root().inode, $0, caller) }
            #expect(throws: Errno.accessDenied) { try withName("x") { try driver.lookup(team.inode, $0, caller) } }
            #expect(throws: Errno.accessDenied) { try withName("x") { try driver.mkdir(team.inode, $0, mode: 0o755, caller) } }
        }
    }
}
