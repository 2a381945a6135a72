import FerryCore
import FerryNFS
import FerryTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Symlinks over NFS: targets up to PATH_MAX - 1 bytes, and a symlink's own times.
@Suite("NFS symlinks against nfs-ganesha", .serialized,
       .requires(.root, .ganesha))
struct NFSSymlinkTests {
    let root = Credentials.root

    /// A target of `length` bytes made of path components, as a long relative path is.
    static func target(_ length: Int) -> [UInt8] {
        (0..<length).map { $0 % 16 == 15 ? UInt8(ascii: "/") : UInt8(ascii: "a") + UInt8($0 % 26) }
    }

    @Test(arguments: [3, 4], [1023, 4095])
    func aLongSymlinkTargetIsCreatedAndReadBack(version: NFSTestVersion, length: Int) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport("driver-symlink-\(length)-v\(version)")
            let driver = try NFSDriverTests.driver(export, version: version)
            let rootEntry = try driver.root()
            var target = NFSSymlinkTests.target(length)
            target.append(0)
            let made = try target.withUnsafeBytes { bytes in
                try withName("l") { name in
                    try driver.symlink(rootEntry.inode, name, target: UnsafeRawBufferPointer(rebasing: bytes[0..<length]), root)
                }
            }
            #expect(made.attributes.size == UInt64(length))
            var back = [UInt8](repeating: 0, count: 4096)
            let n = try back.withUnsafeMutableBytes { try driver.readlink(made.inode, into: $0, root) }
            #expect(n == length && Array(back[0..<n]) == Array(target[0..<length]))
            // And on the server's disk.
            var onDisk = [CChar](repeating: 0, count: 4096)
            #expect(Glibc.readlink(export + "/l", &onDisk, onDisk.count) == length)
        }
    }
}

extension NFSSymlinkTests {
    /// nfs-ganesha's VFS FSAL answers SETATTR of a symlink's times with success and leaves
    /// them as they were (FSAL_VFS/file.c: "Setting time on symlinks is illegal"); the driver
    /// says EOPNOTSUPP rather than report a change that did not happen, and touches neither
    /// the link nor its target. A server that stores them makes the first expectation fail.
    @Test(arguments: NFSTestVersion.allCases) func aSymlinksOwnTimesAreSetOrRefusedNeverPretended(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport("driver-symlink-times-v\(version)")
            #expect(FileManager.default.createFile(atPath: export + "/f", contents: nil))
            let driver = try NFSDriverTests.driver(export, version: version)
            let rootEntry = try driver.root()
            let made = try Array("f\0".utf8).withUnsafeBytes { bytes in
                try withName("l") { try driver.symlink(rootEntry.inode, $0, target: UnsafeRawBufferPointer(rebasing: bytes[0..<1]), root) }
            }
            var before = stat(), target = stat()
            #expect(lstat(export + "/l", &before) == 0 && stat(export + "/f", &target) == 0)
            let old = Timestamp(seconds: 1_000_000_000, nanoseconds: 6)
            #expect(throws: Errno.notSupported) {
                try driver.setattr(made.inode, nil, AttributeChanges(accessTime: .set(old), modificationTime: .set(old)), root)
            }
            #expect(throws: Errno.notSupported, "touch -h: the times set to the server's clock") {
                try driver.setattr(made.inode, nil, AttributeChanges(accessTime: .now, modificationTime: .now), root)
            }
            var after = stat(), targetAfter = stat()
            #expect(lstat(export + "/l", &after) == 0 && after.st_mtim.tv_sec == before.st_mtim.tv_sec)
            #expect(stat(export + "/f", &targetAfter) == 0 && targetAfter.st_mtim.tv_sec == target.st_mtim.tv_sec)
            // The same SETATTR on a regular file is stored to the nanosecond.
            let file = try withName("f") { try driver.lookup(rootEntry.inode, $0, root) }
            let set = try driver.setattr(file.inode, nil, AttributeChanges(accessTime: .set(old), modificationTime: .set(old)), root)
            #expect(set.modificationTime == old && set.accessTime == old)
        }
    }
}
