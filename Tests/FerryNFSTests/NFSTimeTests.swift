import FerryCore
import FerryNFS
import FerryTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Times outside what 32 bits hold, and the set-id bits a chown keeps, through the driver
/// against nfs-ganesha, read back from the exported directory itself.
@Suite("NFS times and set-id bits on chown against nfs-ganesha", .serialized,
       .requires(.root, .ganesha))
struct NFSTimeTests {
    /// A driver on a fresh export holding `f`, owned by 4321:4321 with `mode`.
    static func withFile(_ name: String, version: NFSTestVersion, mode: mode_t = 0o644, group: gid_t = 4321,
                         _ body: (NFSDriver, NFSInode, String) throws -> Void) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport("\(name)-v\(version)")
            let path = export + "/f"
            #expect(FileManager.default.createFile(atPath: path, contents: Data("original".utf8)))
            #expect(chown(path, 4321, group) == 0 && chmod(path, mode) == 0)
            let driver = try NFSDriverTests.driver(export, version: version)
            let file = try withName("f") { try driver.lookup(try driver.root().inode, $0, .root) }
            try body(driver, file.inode, path)
        }
    }

    static func onDisk(_ path: String) -> stat {
        var st = stat()
        _ = stat(path, &st)
        return st
    }

    static func setOnDisk(_ path: String, access: Timestamp, modification: Timestamp) {
        let times = [timespec(tv_sec: Int(access.seconds), tv_nsec: Int(access.nanoseconds)),
                     timespec(tv_sec: Int(modification.seconds), tv_nsec: Int(modification.nanoseconds))]
        #expect(utimensat(AT_FDCWD, path, times, 0) == 0)
    }

    static func stamp(_ t: timespec) -> Timestamp { Timestamp(seconds: Int64(t.tv_sec), nanoseconds: UInt32(t.tv_nsec)) }

    /// nfstime4 has signed 64-bit seconds: times before 1970 and after 2038 and 2106 are
    /// stored and reported exactly, to the nanosecond.
    @Test(arguments: [
        (Timestamp(seconds: -1, nanoseconds: 500_000_000), Timestamp(seconds: -2, nanoseconds: 999_999_999)),
        (Timestamp(seconds: -2_000_000_000, nanoseconds: 999_999_999), Timestamp(seconds: -1_999_999_999, nanoseconds: 0)),
        (Timestamp(seconds: 2_147_483_648, nanoseconds: 1), Timestamp(seconds: 4_294_967_295, nanoseconds: 999_999_999)),
        (Timestamp(seconds: 4_294_967_296, nanoseconds: 5), Timestamp(seconds: 7_258_118_400, nanoseconds: 999_999_999)),
    ])
    func nfsv4StoresTimesBefore1970AndAfter2106Exactly(access: Timestamp, modification: Timestamp) async throws {
        try await NFSTimeTests.withFile("times-wide", version: 4) { driver, file, path in
            let after = try driver.setattr(file, nil, AttributeChanges(accessTime: .set(access), modificationTime: .set(modification)), .root)
            #expect(after.accessTime == access && after.modificationTime == modification,
                    "reported \(after.accessTime) \(after.modificationTime)")
            let st = NFSTimeTests.onDisk(path)
            #expect(NFSTimeTests.stamp(st.st_atim) == access && NFSTimeTests.stamp(st.st_mtim) == modification,
                    "stored \(st.st_atim) \(st.st_mtim)")
            let again = try driver.getattr(file, nil, .root)
            #expect(again.accessTime == access && again.modificationTime == modification)
        }
    }

    /// nfstime3 holds unsigned 32-bit seconds: a time outside [0, 2^32) is refused with
    /// EOVERFLOW before anything is sent, and the stored times stay as they were (a wrapped
    /// time must never reach the disk).
    @Test(arguments: [Int64(-1), -2_000_000_000, 4_294_967_296, 7_258_118_400])
    func nfsv3RefusesATimeItCannotCarryAndLeavesTheStoredOne(seconds: Int64) async throws {
        try await NFSTimeTests.withFile("times-v3-refused", version: 3) { driver, file, path in
            let stored = Timestamp(seconds: 1_000_000_000, nanoseconds: 250)
            NFSTimeTests.setOnDisk(path, access: stored, modification: stored)
            let wide = Timestamp(seconds: seconds, nanoseconds: 7)
            #expect(throws: Errno(EOVERFLOW)) {
                try driver.setattr(file, nil, AttributeChanges(modificationTime: .set(wide)), .root)
            }
            #expect(throws: Errno(EOVERFLOW)) {
                try driver.setattr(file, nil, AttributeChanges(accessTime: .set(wide), modificationTime: .now), .root)
            }
            let st = NFSTimeTests.onDisk(path)
            #expect(NFSTimeTests.stamp(st.st_atim) == stored && NFSTimeTests.stamp(st.st_mtim) == stored,
                    "stored \(st.st_atim) \(st.st_mtim)")
        }
    }

    /// Between 2038 and 2106 the seconds no longer fit a signed 32-bit number but do fit
    /// nfstime3's unsigned one: they go and come back as they are, never negative.
    @Test func nfsv3CarriesTimesBetween2038And2106() async throws {
        try await NFSTimeTests.withFile("times-v3-2038", version: 3) { driver, file, path in
            let access = Timestamp(seconds: 2_147_483_648, nanoseconds: 1)
            let modification = Timestamp(seconds: 4_294_967_295, nanoseconds: 999_999_999)
            let after = try driver.setattr(file, nil, AttributeChanges(accessTime: .set(access), modificationTime: .set(modification)), .root)
            #expect(after.accessTime == access && after.modificationTime == modification,
                    "reported \(after.accessTime) \(after.modificationTime)")
            let st = NFSTimeTests.onDisk(path)
            #expect(NFSTimeTests.stamp(st.st_atim) == access && NFSTimeTests.stamp(st.st_mtim) == modification)
            let later = Timestamp(seconds: 3_000_000_000, nanoseconds: 42)
            NFSTimeTests.setOnDisk(path, access: later, modification: later)
            let read = try driver.getattr(file, nil, .root)
            #expect(read.accessTime == later && read.modificationTime == later)
        }
    }

    /// chown(2) by the owner clears S_ISUID, and S_ISGID only with group execute: without
    /// it S_ISGID marks mandatory locking and stays (Linux, setattr_should_drop_sgid).
    @Test(arguments: NFSTestVersion.allCases) func theOwnersChownKeepsSetgidWithoutGroupExecute(version: NFSTestVersion) async throws {
        try await NFSTimeTests.withFile("chown-sgid-lock", version: version, mode: 0o2745) { driver, file, path in
            let owner = Credentials(uid: 4321, gid: 4321, pid: 1)
            let after = try driver.setattr(file, nil, AttributeChanges(gid: 4321), owner)
            #expect(after.mode & 0o7777 == 0o2745, "mode \(String(after.mode & 0o7777, radix: 8))")
            #expect(NFSTimeTests.onDisk(path).st_mode & 0o7777 == 0o2745)
        }
    }

    /// The same file chowned by root to someone else keeps S_ISGID too; a set-gid program
    /// and S_ISUID still lose theirs.
    @Test(arguments: NFSTestVersion.allCases) func rootsChownKeepsOnlyTheMandatoryLockingSetgid(version: NFSTestVersion) async throws {
        try await NFSTimeTests.withFile("chown-sgid-root", version: version, mode: 0o6745) { driver, file, path in
            let after = try driver.setattr(file, nil, AttributeChanges(uid: 1234, gid: 5678), .root)
            #expect(after.mode & 0o7777 == 0o2745, "mode \(String(after.mode & 0o7777, radix: 8))")
            let st = NFSTimeTests.onDisk(path)
            #expect(st.st_mode & 0o7777 == 0o2745 && st.st_uid == 1234 && st.st_gid == 5678)
            #expect(chmod(path, 0o6755) == 0)
            let program = try driver.setattr(file, nil, AttributeChanges(uid: 4321), .root)
            #expect(program.mode & 0o7777 == 0o755, "mode \(String(program.mode & 0o7777, radix: 8))")
            #expect(NFSTimeTests.onDisk(path).st_mode & 0o7777 == 0o755)
        }
    }

    /// The owner in the file's group only through a supplementary group (FUSE does not send
    /// those; the kernel checked them) keeps S_ISGID without group execute on chown, as a
    /// chown to itself or a chgrp to its primary group.
    @Test(arguments: NFSTestVersion.allCases) func theOwnerInTheFilesSupplementaryGroupKeepsMandatoryLockingSetgidOnChown(version: NFSTestVersion) async throws {
        try await NFSTimeTests.withFile("chown-sgid-supplementary", version: version, mode: 0o2745, group: 5555) { driver, file, path in
            let owner = Credentials(uid: 4321, gid: 4321, pid: 1)
            let after = try driver.setattr(file, nil, AttributeChanges(uid: 4321), owner)
            #expect(after.mode & 0o7777 == 0o2745, "mode \(String(after.mode & 0o7777, radix: 8))")
            #expect(NFSTimeTests.onDisk(path).st_mode & 0o7777 == 0o2745)
            let moved = try driver.setattr(file, nil, AttributeChanges(gid: 4321), owner)
            #expect(moved.mode & 0o7777 == 0o2745 && moved.gid == 4321, "mode \(String(moved.mode & 0o7777, radix: 8))")
            #expect(NFSTimeTests.onDisk(path).st_mode & 0o7777 == 0o2745)
        }
    }
}
