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
       .enabled(if: NFSTestServer.isInstalled, "\(NFSTestServer.whyNotInstalled)"))
struct NFSSymlinkTests {
    let root = Credentials.root

    /// A target of `length` bytes made of path components, as a long relative path is.
    static func target(_ length: Int) -> [UInt8] {
        (0..<length).map { $0 % 16 == 15 ? UInt8(ascii: "/") : UInt8(ascii: "a") + UInt8($0 % 26) }
    }

    @Test(arguments: [3, 4], [1023, 4095])
    func aLongSymlinkTargetIsCreatedAndReadBack(version: Int, length: Int) throws {
        let server = try NFSTestServer.shared()
        try server.shared {
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
