import Foundation
import FerryTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Ownership through `ferry mount nfs://` as real users do it: processes that set their
/// uid, gid and supplementary groups (setpriv: setgroups, setgid, setuid, exec) run chgrp,
/// truncate and appends on a file the mount serves from nfs-ganesha.
@Suite("Ownership through ferry mount nfs://", .serialized,
       .requires(.root, .devFUSE, .ganesha))
struct NFSOwnershipThroughFerryMount {
    static let owner = "4321", supplementaryGroup: gid_t = 5555

    /// Runs `command` as uid/gid `user` with `groups` as its supplementary groups.
    static func run(as user: String, groups: [gid_t], _ command: [String]) throws -> ProcessOutput {
        let groupOption = groups.isEmpty ? ["--clear-groups"] : ["--groups", groups.map(String.init).joined(separator: ",")]
        return try runToCompletion("/usr/bin/setpriv", ["--reuid", user, "--regid", user] + groupOption + ["--"] + command)
    }

    /// A fresh directory in the shared NFS mount of `version` with `f` owned by the owner.
    static func file(version: Int, mode: mode_t) throws -> String {
        let mount = try NFSSharedMount.get(version: version)
        let directory = mount.mountpoint + "/ownership-" + UUID().uuidString.prefix(8)
        #expect(mkdir(directory, 0o755) == 0)
        let path = directory + "/f"
        #expect(FileManager.default.createFile(atPath: path, contents: Data("original".utf8)))
        #expect(chown(path, 4321, 4321) == 0 && chmod(path, mode) == 0)
        return path
    }

    static func mode(_ path: String) -> (mode: mode_t, gid: gid_t) {
        var st = stat()
        #expect(stat(path, &st) == 0)
        return (st.st_mode & 0o7777, st.st_gid)
    }

    @Test(arguments: [3, 4]) func theOwnerChgrpsToASupplementaryGroupAndSetIDBitsAreCleared(version: Int) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let path = try NFSOwnershipThroughFerryMount.file(version: version, mode: 0o6755)
            let chgrp = try NFSOwnershipThroughFerryMount.run(as: NFSOwnershipThroughFerryMount.owner, groups: [NFSOwnershipThroughFerryMount.supplementaryGroup],
                                                              ["chgrp", String(NFSOwnershipThroughFerryMount.supplementaryGroup), path])
            #expect(chgrp.succeeded, "chgrp by the owner, a member of the group, over NFSv\(version): \(chgrp.output)")
            let after = NFSOwnershipThroughFerryMount.mode(path)
            #expect(after.gid == NFSOwnershipThroughFerryMount.supplementaryGroup)
            #expect(after.mode == 0o755, "chown(2) by a user clears S_ISUID and S_ISGID: mode \(String(after.mode, radix: 8))")
            // Not a member: the kernel refuses, and so would the server.
            let outsider = try NFSOwnershipThroughFerryMount.run(as: NFSOwnershipThroughFerryMount.owner, groups: [], ["chgrp", "6666", path])
            #expect(!outsider.succeeded && NFSOwnershipThroughFerryMount.mode(path).gid == NFSOwnershipThroughFerryMount.supplementaryGroup)
        }
    }

    @Test(arguments: [3, 4]) func aWriteOrTruncateByAnotherUserClearsTheSetIDBits(version: Int) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let path = try NFSOwnershipThroughFerryMount.file(version: version, mode: 0o6777)
            let append = try NFSOwnershipThroughFerryMount.run(as: "1111", groups: [], ["sh", "-c", "printf more >> \"$0\"", path])
            #expect(append.succeeded, "append by another user: \(append.output)")
            #expect(NFSOwnershipThroughFerryMount.mode(path).mode == 0o777, "after a write by another user")
            #expect(chmod(path, 0o6777) == 0)
            let truncate = try NFSOwnershipThroughFerryMount.run(as: "1111", groups: [], ["truncate", "-s", "2", path])
            #expect(truncate.succeeded, "truncate by another user over NFSv\(version): \(truncate.output)")
            #expect(NFSOwnershipThroughFerryMount.mode(path).mode == 0o777, "after a truncate by another user")
        }
    }
}
