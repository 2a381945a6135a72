import FerryCore
@testable import FerryNFS
import FerryTestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// An open NFS file remembers who opened it, to flush it as them when the session ends.
/// The opening request's supplementary groups are a view into that request's buffer, which
/// the transport reuses for the next request: the file keeps a copy of its own.
@Suite("NFS opener's groups", .serialized, .requires(.root, .ganesha))
struct NFSOpenerGroupsTests {
    @Test(arguments: NFSTestVersion.allCases) func anOpenFileKeepsItsOpenersGroupsAfterTheRequestBufferIsReused(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.exclusive {
            let export = try server.makeExport("opener-groups-v\(version)")
            let driver = try NFSDriverTests.driver(export, version: version)
            let top = try driver.root().inode
            // The request's buffer, as the transport owns it.
            let buffer = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: 2)
            defer { buffer.deallocate() }
            buffer[0] = 4242; buffer[1] = 4343
            let caller = Credentials(uid: 0, gid: 0, pid: 1, groups: UnsafeBufferPointer(buffer))
            let (_, opened) = try withName("f") { try driver.create(top, $0, mode: 0o644, flags: O_RDWR, caller) }
            // The next request lands in the same buffer.
            buffer[0] = 7; buffer[1] = 8
            #expect(Array(opened.file.opener.groups) == [4242, 4343])
            driver.release(opened.file, flags: O_RDWR, .root)
        }
    }
}
