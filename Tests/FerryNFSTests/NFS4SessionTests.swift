import FerryCore
import FerryNFS
import FerryTestSupport
import Foundation
import Logging
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// NFSv4 client state against a real nfs-ganesha: the v4.0 lease kept while idle, and a
/// v4.1 session lost to a server restart made again without losing an fsynced byte.
@Suite("NFSv4 client state against nfs-ganesha", .serialized,
       .requires(.root, .ganesha))
struct NFS4SessionTests {
    let root = Credentials.root

    /// Restarts the shared server with a lease of `seconds`, runs `body`, and restarts it
    /// with the usual lease.
    static func withLease<R>(_ seconds: Int, _ server: NFSTestServer, _ body: () throws -> R) throws -> R {
        defer { try? server.start() }
        try server.start(lease: seconds)
        return try body()
    }

    /// An export idle for three leases keeps its client id (v4.0) or session (v4.1+): the
    /// RENEWs or bare SEQUENCEs went out, so the next OPEN needs no new SETCLIENTID or
    /// EXCHANGE_ID (an expired lease would have cost one, and once an EIO:
    /// NFS4ERR_EXPIRED/STALE_CLIENTID, or BADSESSION).
    // The limit covers the wait for the shared server: `exclusive` waits for every suite
    // using it in parallel to finish its check.
    @Test(.timeLimit(.minutes(10)), arguments: [NFSTestVersion.v4_0, .v4_1, .v4_2])
    func anExportIdlePastItsLeaseKeepsItsClientState(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.exclusive {
            try Self.withLease(3, server) {
                let export = try server.makeExport("lease-v\(version)")
                let driver = try NFSDriverTests.driver(export, version: version, timeout: 10)
                defer { driver.destroy() }
                let rootEntry = try driver.root()
                let (_, first) = try withName("before") { try driver.create(rootEntry.inode, $0, mode: 0o644, flags: O_RDWR, root) }
                driver.release(first.file, flags: 0, root)
                #expect(driver.nfs4StatesMade == 1)
                sleep(10)
                let (_, second) = try withName("after") { try driver.create(rootEntry.inode, $0, mode: 0o644, flags: O_RDWR, root) }
                driver.release(second.file, flags: 0, root)
                #expect(driver.nfs4StatesMade == 1, "the client id was lost while the export was open: the lease was not renewed")
                #expect(FileManager.default.fileExists(atPath: export + "/after"))
            }
        }
    }

    /// WRITE then FSYNC in a loop on v4.1 while the server restarts under it: the session is
    /// lost (BADSESSION, then STALE_CLIENTID), made again, and every byte an FSYNC
    /// acknowledged is on the server's disk afterwards.
    // The limit covers the wait for the shared server: `exclusive` waits for every suite
    // using it in parallel to finish its check.
    @Test(.timeLimit(.minutes(10)), arguments: [NFSTestVersion.v4_1, .v4_2])
    func fsyncedWritesSurviveAServerRestartMidStream(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.exclusive {
            let export = try server.makeExport("restart-fsync-v\(version)")
            let driver = try NFSDriverTests.driver(export, version: version, timeout: 60)
            defer { driver.destroy() }
            let rootEntry = try driver.root()
            let (_, opened) = try withName("f") { try driver.create(rootEntry.inode, $0, mode: 0o644, flags: O_RDWR, root) }
            let chunk = 256 << 10, chunks = 48
            @Sendable func data(_ i: Int) -> [UInt8] { (0..<chunk).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i &* 7 &+ 1) } }
            let fsynced = Atomic<Int>(0)
            let failure = Mutex<String?>(nil)
            let writer = Thread {
                for i in 0..<chunks {
                    do {
                        let bytes = data(i)
                        let n = try withVectors(bytes) { try driver.write(opened.file, offset: UInt64(i * chunk), from: $0, killSuidGid: false, root) }
                        guard n == chunk else { failure.withLock { $0 = "short write \(n) at chunk \(i)" }; return }
                        try driver.fsync(opened.file, dataOnly: false, root)
                        fsynced.store(i + 1, ordering: .sequentiallyConsistent)
                        usleep(50_000)
                    } catch {
                        failure.withLock { $0 = "chunk \(i): \(error)" }
                        return
                    }
                }
            }
            writer.start()
            while fsynced.load(ordering: .sequentiallyConsistent) < 4 { usleep(10_000) }
            try server.stop()
            try server.start()
            while !writer.isFinished { usleep(50_000) }
            #expect(failure.withLock { $0 } == nil)
            driver.release(opened.file, flags: 0, root)
            let done = fsynced.load(ordering: .sequentiallyConsistent)
            #expect(done == chunks)
            let onDisk = [UInt8](FileManager.default.contents(atPath: export + "/f") ?? Data())
            for i in 0..<done {
                let start = i * chunk
                let matches = onDisk.count >= start + chunk && Array(onDisk[start..<start + chunk]) == data(i)
                #expect(matches, "chunk \(i), acknowledged by FSYNC, is not on the server")
                if !matches { break }
            }
            #expect(driver.nfs4StatesMade >= 2, "the server restarted, yet no new session was made")
        }
    }
}
