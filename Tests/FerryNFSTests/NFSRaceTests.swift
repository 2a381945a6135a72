import Dispatch
import FerryCore
import FerryNFS
import FerryTestSupport
import Foundation
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Races that ferry-churn found through `ferry mount nfs://`, reproduced at the driver
/// level against the real nfs-ganesha, with several requests at once as the kernel sends them.
@Suite("NFS driver under concurrent requests", .serialized, .requires(.root, .ganesha))
struct NFSRaceTests {
    let root = Credentials.root

    /// Runs `body(i)` on `count` threads released together; returns when all are done.
    static func together(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        let ready = Atomic<Int>(0)
        let finished = DispatchGroup()
        for i in 0..<count {
            finished.enter()
            Thread {
                ready.add(1, ordering: .sequentiallyConsistent)
                while ready.load(ordering: .sequentiallyConsistent) < count { sched_yield() }
                body(i)
                finished.leave()
            }.start()
        }
        finished.wait()
    }

    /// The first creates of a fresh export all come at once (the second `ferry mount` of
    /// ferry-churn): each needs the NFSv4 client id, and it must be established once, not
    /// by every one of them at the same time (one's SETCLIENTID_CONFIRM then failed: EIO).
    @Test(arguments: NFSTestVersion.allCases) func concurrentFirstCreatesOfAFreshExportAllSucceed(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport("race-first-creates-v\(version)")
            let failures = Mutex<[String]>([])
            for round in 0..<6 {
                let driver = try NFSDriverTests.driver(export, version: version)
                let rootInode = try driver.root().inode
                NFSRaceTests.together(6) { i in
                    do {
                        let (_, opened) = try withName("r\(round)-\(i)") { name in
                            try driver.create(rootInode, name, mode: 0o644, flags: O_WRONLY | O_CREAT | O_EXCL, .root)
                        }
                        driver.release(opened.file, flags: 0, .root)
                    } catch {
                        failures.withLock { $0.append("round \(round), file \(i): \(error)") }
                    }
                }
                driver.destroy()
            }
            #expect(failures.withLock { $0 }.isEmpty, "O_CREAT|O_EXCL creates that failed: \(failures.withLock { $0 })")
            #expect(try FileManager.default.contentsOfDirectory(atPath: export).count == 36)
        }
    }

    /// Attributes the server gave before a write behind was taken in (a READDIRPLUS listing,
    /// or a LOOKUP answered while the write was on its way) are not handed out once that
    /// write was answered: the guest, told the write was done, would see an older size.
    @Test(arguments: NFSTestVersion.allCases) func attributesListedBeforeAWriteBehindLandedAreNotHandedOutAfter(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport("race-listed-size-v\(version)")
            let driver = try NFSDriverTests.driver(export, version: version)
            let rootEntry = try driver.root()
            let (entry, opened) = try withName("f") { name in
                try driver.create(rootEntry.inode, name, mode: 0o644, flags: O_WRONLY, root)
            }
            let data = [UInt8](repeating: 0x5a, count: 4450)
            let directory = try driver.opendir(rootEntry.inode, flags: 0, root)
            defer { driver.releasedir(directory) }
            var looked: [Attributes] = []
            var failure: Error?
            // The listing is answered first (size 0); the write, its close, then the
            // LOOKUP the core makes for the listed entry, as for a READDIRPLUS reply.
            try driver.readdir(directory, at: 0, root) { listed in
                guard String(decoding: listed.name, as: UTF8.self) == "f" else { return true }
                do {
                    _ = try withVectors(data) { try driver.write(opened.file, offset: 0, from: $0, killSuidGid: false, root) }
                    try driver.flush(opened.file, lockOwner: 0, root)
                    looked.append(try withName("f") { name in
                        try driver.lookup(rootEntry.inode, name, root, existing: { $0 == entry.key ? entry.inode : nil })
                    }.attributes)
                } catch { failure = error }
                return true
            }
            driver.release(opened.file, flags: 0, root)
            #expect(failure == nil)
            #expect(looked.map(\.size) == [4450], "LOOKUP after the write and its close gave size \(looked.map(\.size))")
        }
    }

    /// An OPEN and an UNLINK of the same file at once: the open either fails (ESTALE or
    /// ENOENT: the kernel looks the name up again) or its file stays readable until
    /// released (POSIX); never an open whose READ then gets ESTALE.
    @Test(arguments: NFSTestVersion.allCases) func anOpenRacingAnUnlinkNeverLeavesAnUnreadableFile(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport("race-open-unlink-v\(version)")
            let driver = try NFSDriverTests.driver(export, version: version)
            let rootInode = try driver.root().inode
            let content = Array("content of a file being deleted".utf8)
            let failures = Mutex<[String]>([])
            let openedCount = Atomic<Int>(0)
            for round in 0..<150 {
                let name = "u\(round)"
                let (entry, created) = try withName(name) { n in
                    try driver.create(rootInode, n, mode: 0o644, flags: O_WRONLY, root)
                }
                _ = try withVectors(content) { try driver.write(created.file, offset: 0, from: $0, killSuidGid: false, root) }
                driver.release(created.file, flags: 0, root)
                NFSRaceTests.together(2) { i in
                    if i == 1 {
                        do { try withName(name) { try driver.unlink(rootInode, $0, .root) } } catch {
                            failures.withLock { $0.append("\(name): unlink: \(error)") }
                        }
                        return
                    }
                    let opened: OpenedFile<NFSFile>
                    do throws(Errno) { opened = try driver.open(entry.inode, flags: O_RDONLY, killSuidGid: false, .root) } catch {
                        if error != .stale && error != .noEntry { failures.withLock { $0.append("\(name): open: \(error)") } }
                        return
                    }
                    openedCount.add(1, ordering: .relaxed)
                    var back = [UInt8](repeating: 0, count: content.count)
                    do {
                        let n = try withVectors(&back) { try driver.read(opened.file, offset: 0, into: $0, .root) }
                        if Array(back[..<n]) != content { failures.withLock { $0.append("\(name): read \(n) bytes, wrong content") } }
                    } catch {
                        failures.withLock { $0.append("\(name): read of an open file: \(error)") }
                    }
                    driver.release(opened.file, flags: 0, .root)
                }
            }
            #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 })")
            #expect(openedCount.load(ordering: .relaxed) > 0, "no open ever won the race: nothing was tested")
            #expect(try FileManager.default.contentsOfDirectory(atPath: export).isEmpty, "left behind")
        }
    }
}
