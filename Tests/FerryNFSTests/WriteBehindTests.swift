import FerryCore
import FerryNFS
import FerryTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Write-behind: WRITEs answered before the server answers them must still lose nothing,
/// hide no error, show their data to READ and GETATTR, and stay within their bound.
@Suite("NFS write-behind against nfs-ganesha", .serialized,
       .requires(.root, .ganesha))
struct WriteBehindTests {
    let root = Credentials.root
    /// Not the owner of root's 0644 files: the server refuses its WRITEs.
    let stranger = Credentials(uid: 4321, gid: 4321, pid: 0)

    @Test(arguments: NFSTestVersion.allCases) func aFailedWriteBehindIsReturnedByFsyncAndByTheNextWrite(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport("behind-error-v\(version)")
            let driver = try NFSDriverTests.driver(export, version: version)
            let (_, opened) = try withName("f") { try driver.create(try driver.root().inode, $0, mode: 0o644, flags: O_RDWR, root) }
            let file = opened.file
            let data = [UInt8](repeating: 7, count: 64 << 10)
            let written = try withVectors(data) { try driver.write(file, offset: 0, from: $0, killSuidGid: false, stranger) }
            #expect(written == data.count, "answered before the server refused it")
            #expect(throws: Errno.accessDenied) { try driver.fsync(file, dataOnly: false, root) }
            try driver.fsync(file, dataOnly: false, root)   // returned once, then forgotten

            // Found by a READ (which waits for the writes behind), before the next WRITE: that WRITE fails too.
            _ = try withVectors(data) { try driver.write(file, offset: 0, from: $0, killSuidGid: false, stranger) }
            var back = [UInt8](repeating: 0, count: 16)
            _ = try withVectors(&back) { try driver.read(file, offset: 0, into: $0, root) }
            #expect(throws: Errno.accessDenied) {
                try withVectors(data) { try driver.write(file, offset: 0, from: $0, killSuidGid: false, root) }
            }
            #expect(throws: Errno.accessDenied) { try driver.flush(file, lockOwner: 0, root) }
            driver.release(file, flags: 0, root)
            #expect(FileManager.default.contents(atPath: export + "/f")?.count == 0)
        }
    }

    @Test(arguments: NFSTestVersion.allCases) func readGetattrAndLookupSeeWhatWasWrittenBehind(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport("behind-read-v\(version)")
            let driver = try NFSDriverTests.driver(export, version: version)
            let directory = try driver.root().inode
            let (entry, opened) = try withName("f") { try driver.create(directory, $0, mode: 0o644, flags: O_RDWR, root) }
            let data = (0..<(4 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 12) }
            func write(_ i: Int) throws {
                _ = try withVectors(Array(data[i << 20..<(i + 1) << 20])) {
                    try driver.write(opened.file, offset: UInt64(i << 20), from: $0, killSuidGid: false, root)
                }
            }
            try write(0); try write(1)
            #expect(opened.file.writeBehindBytes == 2 << 20)
            #expect(try driver.getattr(entry.inode, nil, root).size == 2 << 20)
            #expect(opened.file.writeBehindBytes == 0)
            try write(2)
            let found = try withName("f") { try driver.lookup(directory, $0, root, existing: { _ in entry.inode }) }
            #expect(found.attributes.size == 3 << 20)
            try write(3)
            // Through another open handle of the same file.
            let other = try driver.open(entry.inode, flags: O_RDONLY, killSuidGid: false, root).file
            var back = [UInt8](repeating: 0, count: data.count)
            let n = try withVectors(&back) { try driver.read(other, offset: 0, into: $0, root) }
            #expect(n == data.count && back == data)
            driver.release(other, flags: 0, root)
            driver.release(opened.file, flags: 0, root)
        }
    }

    /// The server restarts while WRITEs answered behind are outstanding or answered under
    /// the old verifier: FSYNC still puts every byte on the server.
    @Test(arguments: NFSTestVersion.allCases) func aRestartBetweenWritesBehindAndFsyncLosesNothing(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.exclusive {
            let export = try server.makeExport("behind-restart-v\(version)")
            let driver = try NFSDriverTests.driver(export, version: version)
            let writes = try SequentialWrites(driver, mebibytes: 6)
            for i in 0..<writes.mebibytes { try writes.write(i) }
            #expect(writes.file.writeBehindBytes == 6 << 20)
            try server.stop()
            try server.start()
            try writes.finish(expecting: export + "/f")
        }
    }

    @Test(arguments: NFSTestVersion.allCases) func unansweredWritesStayWithinTheirBound(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport("behind-bound-v\(version)")
            let driver = try NFSDriverTests.driver(export, version: version, writeBehindLimit: 2 << 20)
            let writes = try SequentialWrites(driver, mebibytes: 8)
            var most = 0
            for i in 0..<writes.mebibytes {
                try writes.write(i)
                most = max(most, writes.file.writeBehindBytes)
            }
            #expect(most == 2 << 20)
            #expect(driver.writesBehind.load(ordering: .relaxed) >= writes.mebibytes - 1)
            try writes.finish(expecting: export + "/f")
        }
    }
}
