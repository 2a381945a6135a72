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

/// The NFS driver against the real nfs-ganesha of scripts/nfs (shared with the other NFS
/// suites of this process), called directly, without a kernel in between.
@Suite("NFS driver against nfs-ganesha", .serialized,
       .requires(.root, .ganesha))
struct NFSDriverTests {
    static func driver(_ export: String, version: NFSTestVersion = 3, timeout: Double? = 5, writeBehindLimit: Int = 8 << 20) throws -> NFSDriver {
        try NFSDriver(options: NFSOptions(server: "127.0.0.1", path: export, version: NFSProtocolVersion(version.rawValue)!, timeout: timeout),
                      logger: Logger(label: "ferry.nfs.test"), writeBehindLimit: writeBehindLimit)
    }

    let root = Credentials.root

    @Test(arguments: NFSTestVersion.allCases) func uncommittedWritesAreSentAgainWhenTheServerRestartsBeforeCommit(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.exclusive {
            let export = try server.makeExport("driver-verifier-v\(version)")
            let driver = try NFSDriverTests.driver(export, version: version)
            let rootEntry = try driver.root()
            let data = (0..<(256 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
            let (_, opened) = try withName("f") { name in
                try driver.create(rootEntry.inode, name, mode: 0o644, flags: O_RDWR, root)
            }
            let written = try withVectors(data) { try driver.write(opened.file, offset: 0, from: $0, killSuidGid: false, root) }
            #expect(written == data.count)
            try server.stop()
            try server.start()
            try driver.fsync(opened.file, dataOnly: false, root)
            #expect(driver.resentAfterVerifierChange.load(ordering: .relaxed) > 0,
                    "the server restarted between WRITE and COMMIT, yet nothing was sent again")
            var back = [UInt8](repeating: 0, count: data.count)
            let n = try withVectors(&back) { try driver.read(opened.file, offset: 0, into: $0, root) }
            #expect(n == data.count && back == data)
            driver.release(opened.file, flags: 0, root)
            #expect(FileManager.default.contents(atPath: export + "/f") == Data(data))
        }
    }

    /// A write made after the server restarted, over bytes the server lost, stays on top:
    /// the resend after the verifier change sends the lost write and everything after it,
    /// in the guest's order, never the lost one alone over a newer one.
    @Test(arguments: NFSTestVersion.allCases) func aResendAfterARestartKeepsTheNewerWriteOnTop(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.exclusive {
            let export = try server.makeExport("driver-resend-order-v\(version)")
            let driver = try NFSDriverTests.driver(export, version: version)
            let rootEntry = try driver.root()
            let old = [UInt8](repeating: 0x41, count: 64 << 10)
            let new = [UInt8](repeating: 0x42, count: 4096)
            let (entry, opened) = try withName("f") { name in
                try driver.create(rootEntry.inode, name, mode: 0o644, flags: O_RDWR, root)
            }
            #expect(try withVectors(old) { try driver.write(opened.file, offset: 0, from: $0, killSuidGid: false, root) } == old.count)
            // A GETATTR waits for the file's writes behind: the server has the old bytes, uncommitted.
            _ = try driver.getattr(entry.inode, opened.file, root)
            try server.stop()
            try server.start()
            #expect(try withVectors(new) { try driver.write(opened.file, offset: 4096, from: $0, killSuidGid: false, root) } == new.count)
            try driver.fsync(opened.file, dataOnly: false, root)
            #expect(driver.resentAfterVerifierChange.load(ordering: .relaxed) > 0)
            driver.release(opened.file, flags: 0, root)
            var expected = old
            expected.replaceSubrange(4096..<8192, with: new)
            #expect(FileManager.default.contents(atPath: export + "/f") == Data(expected))
        }
    }

    /// A long sequential write does not keep everything until close: WRITEs take COMMITs
    /// along once 8 MiB are uncommitted, so what is retained stays near that.
    @Test(arguments: NFSTestVersion.allCases) func aLongWriteCommitsBehindAndKeepsLittleUncommitted(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport("driver-commit-behind-v\(version)")
            let driver = try NFSDriverTests.driver(export, version: version)
            // COMMIT-behind starts once 8 MiB are written behind and 8 MiB more answered; v4 goes in small pieces.
            let writes = try SequentialWrites(driver, mebibytes: version.isV4 ? 20 : 24)
            var most = 0
            for i in 0..<writes.mebibytes {
                try writes.write(i)
                most = max(most, writes.file.uncommittedBytes)
            }
            #expect(driver.commitsBehind.load(ordering: .relaxed) > 0)
            #expect(most <= 9 << 20, "retained \(most) bytes: COMMIT-behind did not release them")
            try writes.finish(expecting: export + "/f")
        }
    }

    /// A restart between WRITEs: the COMMIT-behind that follows gets the new verifier and
    /// must send again everything written before the restart and not yet committed, and
    /// the final FSYNC everything else; what the file ends up holding is all of it.
    @Test(arguments: NFSTestVersion.allCases) func aCommitBehindAfterARestartSendsAgainWhatTheServerMayHaveLost(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.exclusive {
            let export = try server.makeExport("driver-behind-restart-v\(version)")
            let driver = try NFSDriverTests.driver(export, version: version)
            let writes = try SequentialWrites(driver, mebibytes: 28)
            for i in 0..<20 { try writes.write(i) }
            let uncommittedAtRestart = writes.file.uncommittedBytes
            #expect(uncommittedAtRestart > 0 && driver.commitsBehind.load(ordering: .relaxed) > 0)
            try server.stop()
            try server.start()
            for i in 20..<writes.mebibytes { try writes.write(i) }
            try writes.finish(expecting: export + "/f") {
                #expect(driver.resentAfterVerifierChange.load(ordering: .relaxed) << 20 >= uncommittedAtRestart,
                        "not everything uncommitted at the restart was sent again")
            }
        }
    }

    @Test(arguments: NFSTestVersion.allCases) func aFileUnlinkedWhileOpenStaysUsableUntilItsLastRelease(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport("driver-unlink-v\(version)")
            let driver = try NFSDriverTests.driver(export, version: version)
            let rootEntry = try driver.root()
            let (entry, opened) = try withName("f") { name in
                try driver.create(rootEntry.inode, name, mode: 0o644, flags: O_RDWR, root)
            }
            _ = try withVectors(Array("still here".utf8)) { try driver.write(opened.file, offset: 0, from: $0, killSuidGid: false, root) }
            try withName("f") { try driver.unlink(rootEntry.inode, $0, root) }
            #expect(throws: Errno.noEntry) { try withName("f") { try driver.lookup(rootEntry.inode, $0, root) } }
            #expect(try listing(driver, rootEntry.inode).isEmpty, "the hidden name shows in READDIR")
            #expect(try driver.getattr(entry.inode, opened.file, root).linkCount == 0)
            var back = [UInt8](repeating: 0, count: 10)
            _ = try withVectors(&back) { try driver.read(opened.file, offset: 0, into: $0, root) }
            #expect(String(decoding: back, as: UTF8.self) == "still here")
            #expect(try FileManager.default.contentsOfDirectory(atPath: export).count == 1, "the hidden file should be on the server")
            driver.release(opened.file, flags: 0, root)
            #expect(try FileManager.default.contentsOfDirectory(atPath: export).isEmpty, "the hidden file outlived its last release")
        }
    }

    /// Two names of one open file unlinked: each goes to a hidden name of its own, the link
    /// count seen is what the unlinks left, and the last release removes both hidden names
    /// (the second unlink used to overwrite the first hidden name: it leaked, and the link
    /// count stayed one too high, as ferry-churn saw).
    @Test(arguments: NFSTestVersion.allCases) func everyNameOfAnOpenFileUnlinkedIsHiddenAndRemovedAtTheLastRelease(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport("driver-unlink-links-v\(version)")
            let driver = try NFSDriverTests.driver(export, version: version)
            let rootEntry = try driver.root()
            let (entry, opened) = try withName("f") { name in
                try driver.create(rootEntry.inode, name, mode: 0o644, flags: O_RDWR, root)
            }
            for other in ["g", "h"] { _ = try withName(other) { try driver.link(entry.inode, to: rootEntry.inode, $0, root) } }
            #expect(try driver.getattr(entry.inode, opened.file, root).linkCount == 3)
            try withName("f") { try driver.unlink(rootEntry.inode, $0, root) }
            try withName("g") { try driver.unlink(rootEntry.inode, $0, root) }
            #expect(try driver.getattr(entry.inode, opened.file, root).linkCount == 1)
            // So do LOOKUP's and an open-or-create's (the kernel keeps the count they carry;
            // another process's LOOKUP used to give the server's, hidden names counted).
            #expect(try withName("h") { try driver.lookup(rootEntry.inode, $0, root) }.attributes.linkCount == 1)
            let (again, reopened) = try withName("h") { try driver.create(rootEntry.inode, $0, mode: 0o644, flags: O_RDWR, root) }
            #expect(again.attributes.linkCount == 1)
            driver.release(reopened.file, flags: 0, root)
            // A new link's reply counts what the kernel sees: h and i, not the hidden names.
            #expect(try withName("i") { try driver.link(entry.inode, to: rootEntry.inode, $0, root) }.attributes.linkCount == 2)
            try withName("i") { try driver.unlink(rootEntry.inode, $0, root) }
            #expect(try listing(driver, rootEntry.inode) == ["h"])
            driver.release(opened.file, flags: 0, root)
            #expect(try FileManager.default.contentsOfDirectory(atPath: export) == ["h"], "a hidden name outlived the last release")
            #expect(try withName("h") { try driver.lookup(rootEntry.inode, $0, root) }.attributes.linkCount == 1)
        }
    }

    /// rm -rf through a /dev/fuse mount: a file is unlinked while open, closed, and its
    /// directory removed; the kernel sends the RELEASE (which removes the hidden name) in
    /// the background, so the RMDIR can come first. It waits for the hidden name and
    /// succeeds (CI saw `unlinked_open_file` fail its cleanup with ENOTEMPTY); a file still
    /// open past the wait keeps its directory, ENOTEMPTY, as with the kernel's NFS client.
    @Test(arguments: NFSTestVersion.allCases) func aDirectoryWhoseOnlyEntryIsBeingReleasedCanBeRemoved(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport("driver-rmdir-release-v\(version)")
            let driver = try NFSDriverTests.driver(export, version: version)
            let rootEntry = try driver.root()
            for (directory, releaseAfter) in [("soon", 0.2), ("late", 3.0)] {
                let dir = try withName(directory) { try driver.mkdir(rootEntry.inode, $0, mode: 0o755, root) }
                let (_, opened) = try withName("f") { try driver.create(dir.inode, $0, mode: 0o644, flags: O_RDWR, root) }
                try withName("f") { try driver.unlink(dir.inode, $0, root) }
                let released = DispatchSemaphore(value: 0)
                Thread {
                    Thread.sleep(forTimeInterval: releaseAfter)
                    driver.release(opened.file, flags: 0, Credentials.root)
                    released.signal()
                }.start()
                var failure: Errno?
                do { try withName(directory) { try driver.rmdir(rootEntry.inode, $0, root) } } catch {
                    failure = error as? Errno
                    if failure == nil { throw error }
                }
                released.wait()
                if releaseAfter < 1 {
                    #expect(failure == nil, "RMDIR did not wait for the release under way")
                    #expect(!FileManager.default.fileExists(atPath: export + "/\(directory)"))
                } else {
                    #expect(failure == .notEmpty)
                    try withName(directory) { try driver.rmdir(rootEntry.inode, $0, root) }
                }
            }
        }
    }

    /// A directory removed while it is open lists nothing more, as on a local file system
    /// (the server answers its stale handle with ESTALE, which ferry-churn saw a reader get).
    @Test(arguments: NFSTestVersion.allCases) func aDirectoryRemovedWhileOpenListsNothingMore(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport("driver-rmdir-open-v\(version)")
            try FileManager.default.createDirectory(atPath: export + "/d", withIntermediateDirectories: false)
            let driver = try NFSDriverTests.driver(export, version: version)
            let dir = try withName("d") { try driver.lookup(try driver.root().inode, $0, root) }
            let open = try driver.opendir(dir.inode, flags: 0, root)
            defer { driver.releasedir(open) }
            try FileManager.default.removeItem(atPath: export + "/d")
            var seen = 0
            try driver.readdir(open, at: 0, root) { _ in seen += 1; return true }
            #expect(seen == 0)
        }
    }

    /// fstat(2) of an open directory or file removed on the server (by another process of
    /// the guest, or another client) answers its last attributes with no links, as on a local
    /// file system; glibc's opendir is open then fstat, and a directory removed in between
    /// gave ESTALE (ferry-churn saw `readdir: ESTALE`). A node not open keeps ESTALE, so the
    /// kernel looks its name up again and finds it gone.
    @Test(arguments: NFSTestVersion.allCases) func anOpenNodeRemovedOnTheServerAnswersFstatWithNoLinks(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport("driver-fstat-removed-v\(version)")
            for name in ["d", "e", "f"] {
                if name == "f" { _ = FileManager.default.createFile(atPath: export + "/f", contents: Data("x".utf8)) } else {
                    try FileManager.default.createDirectory(atPath: export + "/" + name, withIntermediateDirectories: false)
                }
            }
            let driver = try NFSDriverTests.driver(export, version: version)
            let root = try driver.root().inode
            let d = try withName("d") { try driver.lookup(root, $0, self.root) }
            let e = try withName("e") { try driver.lookup(root, $0, self.root) }
            let f = try withName("f") { try driver.lookup(root, $0, self.root) }
            let open = try driver.opendir(d.inode, flags: 0, self.root)
            let file = try driver.open(f.inode, flags: O_RDONLY, killSuidGid: false, self.root).file
            for name in ["d", "e", "f"] { try FileManager.default.removeItem(atPath: export + "/" + name) }

            let dir = try driver.getattr(d.inode, nil, self.root)
            #expect(dir.linkCount == 0 && dir.fileType == UInt32(S_IFDIR) && dir.mode & 0o7777 == d.attributes.mode & 0o7777)
            let gone = try driver.getattr(f.inode, file, self.root)
            #expect(gone.linkCount == 0 && gone.size == 1)
            #expect(throws: Errno(ESTALE)) { try driver.getattr(e.inode, nil, self.root) }
            driver.releasedir(open)
            driver.release(file, flags: 0, self.root)
            #expect(throws: Errno(ESTALE)) { try driver.getattr(d.inode, nil, self.root) }
        }
    }

    @Test(arguments: NFSTestVersion.allCases) func aHiddenFileLeftByADeadFerryIsRemovedWhenItsDirectoryIsRead(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport("driver-leftover-v\(version)")
            let driver = try NFSDriverTests.driver(export, version: version)
            var deadPID: Int32 = 4_000_000
            while kill(deadPID, 0) == 0 || errno != ESRCH { deadPID -= 1 }
            let leftover = driver.hiddenPrefix + "\(deadPID)-0"
            let alive = driver.hiddenPrefix + "\(getppid())-0"
            let foreign = ".ferry-unlinked-0-\(deadPID)-0"
            for name in [leftover, alive, foreign] { _ = FileManager.default.createFile(atPath: export + "/" + name, contents: nil) }
            #expect(try listing(driver, try driver.root().inode).isEmpty)
            let remaining = Set(try FileManager.default.contentsOfDirectory(atPath: export))
            #expect(remaining == [alive, foreign], "only the dead local daemon's leftover goes")
        }
    }

    @Test(arguments: NFSTestVersion.allCases) func aFileDeletedOnTheServerGivesESTALE(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport("driver-stale-v\(version)")
            let driver = try NFSDriverTests.driver(export, version: version)
            let rootEntry = try driver.root()
            let entry = try withName("d") { try driver.mkdir(rootEntry.inode, $0, mode: 0o755, root) }
            try FileManager.default.removeItem(atPath: export + "/d")
            #expect(throws: Errno.stale) { try driver.getattr(entry.inode, nil, root) }
            // The export itself is unaffected.
            _ = try driver.getattr(rootEntry.inode, nil, root)
        }
    }

    @Test(arguments: NFSTestVersion.allCases) func requestsActAsTheCaller(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport("driver-credentials-v\(version)")
            let driver = try NFSDriverTests.driver(export, version: version)
            let rootEntry = try driver.root()
            let user = Credentials(uid: 4321, gid: 8765, pid: 1)
            let made = try withName("mine") { try driver.mkdir(rootEntry.inode, $0, mode: 0o700, user) }
            #expect(made.attributes.uid == 4321 && made.attributes.gid == 8765)
            var st = stat()
            #expect(stat(export + "/mine", &st) == 0 && st.st_uid == 4321 && st.st_gid == 8765)
            // Another user cannot look inside: the server enforces it.
            let other = Credentials(uid: 1111, gid: 1111, pid: 1)
            #expect(throws: Errno.accessDenied) {
                try withName("x") { try driver.mkdir(made.inode, $0, mode: 0o755, other) }
            }
        }
    }

    @Test func aStoppedServerGivesEIOAndTheExportComesBackWithIt() async throws {
        let server = try NFSTestServer.shared()
        try await server.exclusive {
            let export = try server.makeExport("driver-outage")
            let driver = try NFSDriverTests.driver(export, timeout: 2)
            let rootEntry = try driver.root()
            try server.stop()
            #expect(throws: Errno.io) { try driver.getattr(rootEntry.inode, nil, root) }
            try server.start()
            #expect(try driver.getattr(rootEntry.inode, nil, root).isDirectory)
        }
    }

    /// With `hard`, a request waits for the server instead of failing: started while the
    /// server is down, it succeeds once the server is back (a soft export would give EIO).
    @Test func aHardExportWaitsForTheServer() async throws {
        let server = try NFSTestServer.shared()
        try await server.exclusive {
            let export = try server.makeExport("driver-hard")
            let driver = try NFSDriverTests.driver(export, timeout: nil)
            let rootEntry = try driver.root()
            try server.stop()
            let outcome = Mutex<Result<Attributes, Errno>?>(nil)
            let request = Thread { [root] in
                let result: Result<Attributes, Errno>
                do throws(Errno) { result = .success(try driver.getattr(rootEntry.inode, nil, root)) } catch { result = .failure(error) }
                outcome.withLock { $0 = result }
            }
            request.start()
            usleep(2_000_000)
            try server.start()
            while outcome.withLock({ $0 == nil }) { usleep(50_000) }
            #expect(try outcome.withLock { try $0!.get() }.isDirectory)
        }
    }

    @Test(arguments: NFSTestVersion.allCases) func readdirReportsEveryEntryAcrossSeveralCalls(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport("driver-readdir-v\(version)")
            for i in 0..<600 { _ = FileManager.default.createFile(atPath: export + "/entry-\(i)-" + String(repeating: "x", count: 40), contents: nil) }
            let driver = try NFSDriverTests.driver(export, version: version)
            let names = try listing(driver, try driver.root().inode, batch: 50)
            #expect(names.count == 600 && Set(names).count == 600)
        }
    }
}

/// A file "f" created in the export's root and written 1 MiB per WRITE, each at its place.
struct SequentialWrites {
    let driver: NFSDriver
    let file: NFSFile
    let mebibytes: Int
    let data: [UInt8]

    init(_ driver: NFSDriver, mebibytes: Int) throws {
        self.driver = driver
        self.mebibytes = mebibytes
        let root = try driver.root()
        file = try withName("f") { try driver.create(root.inode, $0, mode: 0o644, flags: O_RDWR, .root).1.file }
        data = (0..<(mebibytes << 20)).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ $0 >> 16) }
    }

    /// WRITEs mebibyte `i`.
    func write(_ i: Int) throws {
        let written = try withVectors(Array(data[i << 20..<(i + 1) << 20])) {
            try driver.write(file, offset: UInt64(i << 20), from: $0, killSuidGid: false, .root)
        }
        #expect(written == 1 << 20)
    }

    /// FSYNC (then `afterFsync`), release, and the server's copy at `path` must be all of it.
    func finish(expecting path: String, afterFsync: () -> Void = {}) throws {
        try driver.fsync(file, dataOnly: false, .root)
        afterFsync()
        #expect(file.uncommittedBytes == 0)
        driver.release(file, flags: 0, .root)
        #expect(FileManager.default.contents(atPath: path) == Data(data))
    }
}

/// Every name in `directory` but `.` and `..`, read `batch` entries per READDIR call.
func listing(_ driver: NFSDriver, _ directory: NFSInode, batch: Int = 1000, as caller: Credentials = .root) throws -> [String] {
    let open = try driver.opendir(directory, flags: 0, caller)
    defer { driver.releasedir(open) }
    var names: [String] = []
    var offset: UInt64 = 0
    while true {
        var got = 0
        try driver.readdir(open, at: offset, caller) { entry in
            if !entry.isDotOrDotDot { names.append(String(decoding: entry.name, as: UTF8.self)) }
            offset = entry.nextOffset
            got += 1
            return got < batch
        }
        if got == 0 { return names }
    }
}

/// A validated FileName for `string`, NUL-terminated in memory, alive during `body`.
func withName<R>(_ string: String, _ body: (FileName) throws -> R) throws -> R {
    var bytes = Array(string.utf8)
    let count = bytes.count
    bytes.append(0)
    return try bytes.withUnsafeBytes { buffer in
        try body(try FileName.validated(UnsafeRawBufferPointer(rebasing: buffer[0..<count])).get())
    }
}

/// `data` as one I/O vector.
func withVectors<R>(_ data: [UInt8], _ body: (IOVectors) throws -> R) throws -> R {
    var copy = data
    return try withVectors(&copy, body)
}

func withVectors<R>(_ data: inout [UInt8], _ body: (IOVectors) throws -> R) throws -> R {
    try data.withUnsafeMutableBytes { bytes in
        var vector = iovec(iov_base: bytes.baseAddress, iov_len: bytes.count)
        return try withUnsafeMutablePointer(to: &vector) { try body(IOVectors(base: $0, count: 1)) }
    }
}
