import FerryCore
@testable import FerryNFS
import FerryTestSupport
import Foundation
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// NFSv4 record locks against the real nfs-ganesha: two driver instances are two
/// NFS clients of one export, so what one locks the other sees through the server alone.
@Suite("NFS record locks against nfs-ganesha", .serialized,
       .requires(.root, .ganesha))
struct NFSLockTests {
    let root = Credentials.root
    static let whole = RecordLock.toEndOfFile

    /// Two clients of a fresh export with the file `f` open read-write in each.
    private func twoClients(_ name: String, _ version: NFSTestVersion,
                            _ body: (NFSDriver, NFSFile, NFSDriver, NFSFile) throws -> Void) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport(name)
            let a = try NFSDriverTests.driver(export, version: version)
            defer { a.destroy() }
            let b = try NFSDriverTests.driver(export, version: version)
            defer { b.destroy() }
            let (_, fa) = try withName("f") { try a.create(try a.root().inode, $0, mode: 0o644, flags: O_RDWR, root) }
            let entry = try withName("f") { try b.lookup(try b.root().inode, $0, root) }
            let fb = try b.open(entry.inode, flags: O_RDWR, killSuidGid: false, root)
            try body(a, fa.file, b, fb.file)
            b.release(fb.file, flags: 0, root)
            a.release(fa.file, flags: 0, root)
        }
    }

    @Test(arguments: [NFSTestVersion.v4_0, .v4_1, .v4_2])
    func aWriteLockOfOneClientIsSeenAndRefusedByAnotherUntilUnlocked(version: NFSTestVersion) async throws {
        try await twoClients("locks-v\(version)", version) { a, fa, b, fb in
            #expect(a.supportsRecordLocks && b.supportsRecordLocks)
            try a.setlk(fa, owner: 1, RecordLock(start: 100, end: 199, type: F_WRLCK, pid: 10), flock: false, root)
            let seen = try b.getlk(fb, owner: 2, RecordLock(start: 0, end: Self.whole, type: F_RDLCK, pid: 20), root)
            #expect(seen == RecordLock(start: 100, end: 199, type: F_WRLCK, pid: 0))
            // Outside the range: free.
            let outside = try b.getlk(fb, owner: 2, RecordLock(start: 200, end: 299, type: F_WRLCK, pid: 20), root)
            #expect(outside.type == F_UNLCK)
            #expect(throws: Errno.again) {
                try b.setlk(fb, owner: 2, RecordLock(start: 150, end: 150, type: F_RDLCK, pid: 20), flock: false, root)
            }
            // The owner does not conflict with itself.
            #expect(try a.getlk(fa, owner: 1, RecordLock(start: 0, end: Self.whole, type: F_WRLCK, pid: 10), root).type == F_UNLCK)
            try a.setlk(fa, owner: 1, RecordLock(start: 100, end: 199, type: F_UNLCK, pid: 10), flock: false, root)
            #expect(try b.getlk(fb, owner: 2, RecordLock(start: 0, end: Self.whole, type: F_WRLCK, pid: 20), root).type == F_UNLCK)
            try b.setlk(fb, owner: 2, RecordLock(start: 150, end: Self.whole, type: F_RDLCK, pid: 20), flock: false, root)
            // A read lock lets another read lock in, and is reported to a writer, to end of file.
            try a.setlk(fa, owner: 1, RecordLock(start: 0, end: Self.whole, type: F_RDLCK, pid: 10), flock: false, root)
            let reader = try a.getlk(fa, owner: 1, RecordLock(start: 0, end: Self.whole, type: F_WRLCK, pid: 10), root)
            #expect(reader == RecordLock(start: 150, end: Self.whole, type: F_RDLCK, pid: 0))
        }
    }

    @Test(arguments: [NFSTestVersion.v4_0, .v4_1, .v4_2])
    func closingTheFileDropsItsOwnersLocks(version: NFSTestVersion) async throws {
        try await twoClients("locks-close-v\(version)", version) { a, fa, b, fb in
            try a.setlk(fa, owner: 7, RecordLock(start: 0, end: Self.whole, type: F_WRLCK, pid: 10), flock: false, root)
            #expect(a.lockOwnerCount == 1)
            #expect(throws: Errno.again) {
                try b.setlk(fb, owner: 8, RecordLock(start: 0, end: 0, type: F_WRLCK, pid: 20), flock: false, root)
            }
            // FLUSH of the owner (its process closed a descriptor): its locks go.
            try a.flush(fa, lockOwner: 7, root)
            #expect(a.lockOwnerCount == 0)
            try b.setlk(fb, owner: 8, RecordLock(start: 0, end: 0, type: F_WRLCK, pid: 20), flock: false, root)
            try b.setlk(fb, owner: 8, RecordLock(start: 0, end: 0, type: F_UNLCK, pid: 20), flock: false, root)
            // RELEASE of the last open: every owner's locks go, and the open state.
            try a.setlk(fa, owner: 9, RecordLock(start: 5, end: 5, type: F_WRLCK, pid: 10), flock: false, root)
            let entry = try withName("f") { try a.lookup(try a.root().inode, $0, root) }
            let again = try a.open(entry.inode, flags: O_RDONLY, killSuidGid: false, root)
            a.release(again.file, flags: 0, root)
            #expect(a.lockOwnerCount == 1, "a release while the file is still open elsewhere kept the owner's locks")
            a.release(fa, flags: 0, root)
            #expect(a.lockOwnerCount == 0)
            #expect(try b.getlk(fb, owner: 8, RecordLock(start: 0, end: Self.whole, type: F_WRLCK, pid: 20), root).type == F_UNLCK)
            // Locks again after the release reopen the open state.
            let reopened = try a.open(entry.inode, flags: O_RDWR, killSuidGid: false, root)
            try a.setlk(reopened.file, owner: 9, RecordLock(start: 5, end: 5, type: F_WRLCK, pid: 10), flock: false, root)
            #expect(try b.getlk(fb, owner: 8, RecordLock(start: 0, end: Self.whole, type: F_WRLCK, pid: 20), root).start == 5)
            a.release(reopened.file, flags: 0, root)
            #expect(try b.getlk(fb, owner: 8, RecordLock(start: 0, end: Self.whole, type: F_WRLCK, pid: 20), root).type == F_UNLCK)
        }
    }

    /// flock: a whole-file lock of the open file, gone with its release.
    @Test(arguments: [NFSTestVersion.v4_0, .v4_1])
    func flockLocksTheWholeFileUntilTheOpenFileIsReleased(version: NFSTestVersion) async throws {
        try await twoClients("locks-flock-v\(version)", version) { a, fa, b, fb in
            try a.setlk(fa, owner: 0xF00, RecordLock(start: 0, end: 0, type: F_WRLCK, pid: 10), flock: true, root)
            #expect(throws: Errno.again) {
                try b.setlk(fb, owner: 0xB00, RecordLock(start: 0, end: 0, type: F_RDLCK, pid: 20), flock: true, root)
            }
            let seen = try b.getlk(fb, owner: 2, RecordLock(start: 1 << 40, end: 1 << 40, type: F_RDLCK, pid: 20), root)
            #expect(seen.type == F_WRLCK && seen.start == 0 && seen.end == Self.whole)
            // Another open file of the same client is another flock owner: refused too.
            let entry = try withName("f") { try a.lookup(try a.root().inode, $0, root) }
            let second = try a.open(entry.inode, flags: O_RDWR, killSuidGid: false, root)
            #expect(throws: Errno.again) {
                try a.setlk(second.file, owner: 0xF01, RecordLock(start: 0, end: 0, type: F_WRLCK, pid: 10), flock: true, root)
            }
            a.release(fa, flags: 0, root)
            try b.setlk(fb, owner: 0xB00, RecordLock(start: 0, end: 0, type: F_RDLCK, pid: 20), flock: true, root)
            try b.setlk(fb, owner: 0xB00, RecordLock(start: 0, end: 0, type: F_UNLCK, pid: 20), flock: true, root)
            a.release(second.file, flags: 0, root)
            // `twoClients` releases `fa` once more: a release after the first finds nothing.
        }
    }

    /// A session made again while the server kept this client (EXCHANGE_ID answers
    /// EXCHGID4_FLAG_CONFIRMED_R) reclaims nothing: the locks and their stateids still hold.
    /// A reclaim here would be refused (the server is in no grace period) and lose them.
    @Test func aSessionMadeAgainWhileTheServerKeptTheClientKeepsItsLocks() async throws {
        try await twoClients("locks-session-again", .v4_1) { a, fa, b, fb in
            try a.setlk(fa, owner: 1, RecordLock(start: 0, end: 9, type: F_WRLCK, pid: 10), flock: false, root)
            let session = try #require(a.client.v4)
            let made = a.nfs4StatesMade
            session.lost(session.state.withLock { $0.generation })
            try a.setlk(fa, owner: 1, RecordLock(start: 20, end: 29, type: F_WRLCK, pid: 10), flock: false, root)
            #expect(a.nfs4StatesMade == made + 1)
            #expect(throws: Errno.again) {
                try b.setlk(fb, owner: 2, RecordLock(start: 5, end: 5, type: F_WRLCK, pid: 20), flock: false, root)
            }
            try a.setlk(fa, owner: 1, RecordLock(start: 0, end: Self.whole, type: F_UNLCK, pid: 10), flock: false, root)
            try b.setlk(fb, owner: 2, RecordLock(start: 5, end: 5, type: F_WRLCK, pid: 20), flock: false, root)
        }
    }

    /// v3 keeps locks in the client's kernel: the core agrees no lock flags.
    @Test func v3KeepsLocksInTheClientsKernel() async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport("locks-local-v3")
            let driver = try NFSDriverTests.driver(export, version: .v3)
            defer { driver.destroy() }
            #expect(!driver.supportsRecordLocks)
            let (_, opened) = try withName("f") { try driver.create(try driver.root().inode, $0, mode: 0o644, flags: O_RDWR, root) }
            #expect(throws: Errno.notImplemented) {
                try driver.setlk(opened.file, owner: 1, RecordLock(start: 0, end: 0, type: F_WRLCK, pid: 1), flock: false, root)
            }
            driver.release(opened.file, flags: 0, root)
        }
    }

    // MARK: - v4.0: seqids and the open by name

    /// One process (lock owner) with locks on two files at once: each file has its own
    /// lock owner name on v4.0, so the two seqid streams never mix.
    @Test func aV40ProcessLocksTwoFilesAtOnce() async throws {
        try await twoClients("locks40-two", .v4_0) { a, fa, b, fb in
            let (_, ga) = try withName("g") { try a.create(try a.root().inode, $0, mode: 0o644, flags: O_RDWR, root) }
            let gEntry = try withName("g") { try b.lookup(try b.root().inode, $0, root) }
            let gb = try b.open(gEntry.inode, flags: O_RDWR, killSuidGid: false, root)
            for round in 0..<5 {
                let at = UInt64(round * 10)
                try a.setlk(fa, owner: 1, RecordLock(start: at, end: at + 4, type: F_WRLCK, pid: 10), flock: false, root)
                try a.setlk(ga.file, owner: 1, RecordLock(start: at, end: at + 4, type: F_WRLCK, pid: 10), flock: false, root)
                try a.setlk(fa, owner: 1, RecordLock(start: at + 2, end: at + 2, type: F_UNLCK, pid: 10), flock: false, root)
            }
            #expect(a.lockOwnerCount == 2)
            for (file, start) in [(fb, UInt64(0)), (gb.file, UInt64(0))] {
                let seen = try b.getlk(file, owner: 2, RecordLock(start: 0, end: Self.whole, type: F_RDLCK, pid: 20), root)
                #expect(seen.type == F_WRLCK && seen.start == start && seen.pid == 0)
            }
            // The hole unlocked in f is free; g has none.
            try b.setlk(fb, owner: 2, RecordLock(start: 42, end: 42, type: F_WRLCK, pid: 20), flock: false, root)
            #expect(throws: Errno.again) {
                try b.setlk(gb.file, owner: 2, RecordLock(start: 42, end: 42, type: F_WRLCK, pid: 20), flock: false, root)
            }
            // GETLK of a's own other owner names the pid it locked as.
            let own = try a.getlk(ga.file, owner: 3, RecordLock(start: 0, end: Self.whole, type: F_WRLCK, pid: 30), root)
            #expect(own.pid == 10)
            try a.setlk(ga.file, owner: 1, RecordLock(start: 0, end: Self.whole, type: F_UNLCK, pid: 10), flock: false, root)
            try b.setlk(gb.file, owner: 2, RecordLock(start: 42, end: 42, type: F_WRLCK, pid: 20), flock: false, root)
            b.release(gb.file, flags: 0, root)
            a.release(ga.file, flags: 0, root)
        }
    }

    /// Many LOCK and LOCKU of one owner, some refused: every reply moves the seqid on,
    /// and the server still takes the next request and shows the other client the truth.
    @Test func fiftyV40LockUnlockCyclesKeepTheSeqidsInStep() async throws {
        try await twoClients("locks40-cycles", .v4_0) { a, fa, b, fb in
            try b.setlk(fb, owner: 2, RecordLock(start: 1000, end: 1000, type: F_WRLCK, pid: 20), flock: false, root)
            for cycle in 0..<50 {
                let at = UInt64(cycle)
                try a.setlk(fa, owner: 1, RecordLock(start: at, end: at + 10, type: F_WRLCK, pid: 10), flock: false, root)
                if cycle % 10 == 0 {
                    #expect(throws: Errno.again) {
                        try a.setlk(fa, owner: 1, RecordLock(start: 1000, end: 1000, type: F_WRLCK, pid: 10), flock: false, root)
                    }
                }
                try a.setlk(fa, owner: 1, RecordLock(start: at, end: at + 10, type: F_UNLCK, pid: 10), flock: false, root)
            }
            try a.setlk(fa, owner: 1, RecordLock(start: 7, end: 7, type: F_WRLCK, pid: 10), flock: false, root)
            #expect(try b.getlk(fb, owner: 2, RecordLock(start: 0, end: 999, type: F_WRLCK, pid: 20), root)
                    == RecordLock(start: 7, end: 7, type: F_WRLCK, pid: 0))
            try a.setlk(fa, owner: 1, RecordLock(start: 7, end: 7, type: F_UNLCK, pid: 10), flock: false, root)
            #expect(try b.getlk(fb, owner: 2, RecordLock(start: 0, end: 999, type: F_WRLCK, pid: 20), root).type == F_UNLCK)
        }
    }

    /// A rename the driver made itself (so it knows the new name): the v4.0 OPEN the lock
    /// needs finds the file there. So too for a file unlinked while open (its hidden name).
    @Test func aV40LockAfterARenameOrUnlinkThroughTheDriverWorks() async throws {
        try await twoClients("locks40-rename", .v4_0) { a, fa, b, fb in
            let dir = try a.root().inode
            try withName("f") { old in try withName("moved") { try a.rename(dir, old, to: dir, $0, flags: 0, root) } }
            try a.setlk(fa, owner: 1, RecordLock(start: 0, end: 9, type: F_WRLCK, pid: 10), flock: false, root)
            #expect(try b.getlk(fb, owner: 2, RecordLock(start: 0, end: Self.whole, type: F_WRLCK, pid: 20), root).start == 0)
            try a.setlk(fa, owner: 1, RecordLock(start: 0, end: 9, type: F_UNLCK, pid: 10), flock: false, root)
            a.release(fa, flags: 0, root)   // the lock open goes with the last release
            // Open again, unlinked while open: its next first lock opens the hidden name.
            let entry = try withName("moved") { try a.lookup(dir, $0, root) }
            let again = try a.open(entry.inode, flags: O_RDWR, killSuidGid: false, root)
            try withName("moved") { try a.unlink(dir, $0, root) }
            try a.setlk(again.file, owner: 1, RecordLock(start: 5, end: 5, type: F_WRLCK, pid: 10), flock: false, root)
            #expect(try b.getlk(fb, owner: 2, RecordLock(start: 0, end: Self.whole, type: F_WRLCK, pid: 20), root).start == 5)
            try a.setlk(again.file, owner: 1, RecordLock(start: 5, end: 5, type: F_UNLCK, pid: 10), flock: false, root)
            #expect(try b.getlk(fb, owner: 2, RecordLock(start: 0, end: Self.whole, type: F_WRLCK, pid: 20), root).type == F_UNLCK)
            a.release(again.file, flags: 0, root)
        }
    }

    /// The name the driver knows now leads to another file (replaced by another client):
    /// the lock is refused (ENOLCK), and the other file is left without lock or open.
    @Test func aV40LockOnAFileReplacedBehindFerrysBackIsRefused() async throws {
        try await twoClients("locks40-replaced", .v4_0) { a, fa, b, fb in
            let bDir = try b.root().inode
            let (_, otherOpen) = try withName("other") { try b.create(bDir, $0, mode: 0o644, flags: O_RDWR, root) }
            try withName("other") { o in try withName("f") { try b.rename(bDir, o, to: bDir, $0, flags: 0, root) } }
            #expect(throws: Errno(ENOLCK)) {
                try a.setlk(fa, owner: 1, RecordLock(start: 0, end: 9, type: F_WRLCK, pid: 10), flock: false, root)
            }
            #expect(a.lockOwnerCount == 0)
            // The file now named f holds no lock of a's, nor does the one a has open.
            #expect(try b.getlk(otherOpen.file, owner: 2, RecordLock(start: 0, end: Self.whole, type: F_WRLCK, pid: 20), root).type == F_UNLCK)
            try b.setlk(otherOpen.file, owner: 2, RecordLock(start: 0, end: Self.whole, type: F_WRLCK, pid: 20), flock: false, root)
            #expect(try b.getlk(fb, owner: 2, RecordLock(start: 0, end: Self.whole, type: F_WRLCK, pid: 20), root).type == F_UNLCK)
            b.release(otherOpen.file, flags: 0, root)
        }
    }
}

/// Locks across a server restart. A server with a grace period gives back the locks its
/// clients held (they reclaim them before anyone else may lock); one without refuses the
/// reclaims, and the owner hears ENOLCK once instead of locking on top of locks it no
/// longer has, then starts afresh.
@Suite("NFS record locks after a server restart", .serialized, .requires(.root, .ganesha))
struct NFSLockRestartTests {
    let root = Credentials.root
    static let whole = RecordLock.toEndOfFile

    /// Two clients of a fresh export, each with the files `names` open read-write. With a
    /// `lease`, the server is started again with it first and as the default at the end.
    private func twoClients(_ server: NFSTestServer, _ name: String, lease: Int? = nil, files names: [String],
                            version: NFSTestVersion = .v4_1,
                            _ body: (NFSDriver, [NFSFile], NFSDriver, [NFSFile]) throws -> Void) throws {
        if let lease { try server.start(lease: lease) }
        defer { if lease != nil { _ = try? server.start() } }
        let export = try server.makeExport(name)
        let a = try NFSDriverTests.driver(export, version: version, timeout: 60)
        defer { a.destroy() }
        let b = try NFSDriverTests.driver(export, version: version, timeout: 60)
        defer { b.destroy() }
        var fa: [NFSFile] = [], fb: [NFSFile] = []
        for name in names {
            let (_, opened) = try withName(name) { try a.create(try a.root().inode, $0, mode: 0o644, flags: O_RDWR, root) }
            fa.append(opened.file)
            let entry = try withName(name) { try b.lookup(try b.root().inode, $0, root) }
            fb.append(try b.open(entry.inode, flags: O_RDWR, killSuidGid: false, root).file)
        }
        try body(a, fa, b, fb)
        for f in fb { b.release(f, flags: 0, root) }
        for f in fa { a.release(f, flags: 0, root) }
    }

    // The limits cover the wait for the shared server: `exclusive` waits for every suite
    // using it in parallel to finish its check.
    @Test(.timeLimit(.minutes(10))) func locksHeldAcrossARestartAreReclaimedInTheGracePeriod() async throws {
        let server = try NFSTestServer.shared()
        try await server.exclusive {
            // A short lease: A's lease keeper finds the restart within seconds, well inside
            // the grace period, without A asking anything.
            try twoClients(server, "locks-reclaim", lease: 10, files: ["f", "g"]) { a, fa, b, fb in
                try a.setlk(fa[0], owner: 1, RecordLock(start: 0, end: 99, type: F_WRLCK, pid: 1), flock: false, root)
                // Split by an unlock in its middle: two pieces to reclaim.
                try a.setlk(fa[0], owner: 3, RecordLock(start: 500, end: 599, type: F_WRLCK, pid: 3), flock: false, root)
                try a.setlk(fa[0], owner: 3, RecordLock(start: 520, end: 539, type: F_UNLCK, pid: 3), flock: false, root)
                try a.setlk(fa[1], owner: 0xF1, RecordLock(start: 0, end: 0, type: F_WRLCK, pid: 1), flock: true, root)
                let sessions = a.nfs4StatesMade
                try server.stop()
                try server.start(lease: 10, grace: 20)
                // B's LOCKs wait out the grace period (GRACE), by then A has its locks back.
                #expect(throws: Errno.again) {
                    try b.setlk(fb[0], owner: 2, RecordLock(start: 50, end: 50, type: F_WRLCK, pid: 2), flock: false, root)
                }
                #expect(a.nfs4StatesMade == sessions + 1, "A made its session again by itself")
                #expect(throws: Errno.again) {
                    try b.setlk(fb[1], owner: 0xB1, RecordLock(start: 0, end: 0, type: F_RDLCK, pid: 2), flock: true, root)
                }
                for piece in [RecordLock(start: 500, end: 519, type: F_RDLCK, pid: 2), RecordLock(start: 599, end: 599, type: F_RDLCK, pid: 2)] {
                    #expect(throws: Errno.again) { try b.setlk(fb[0], owner: 2, piece, flock: false, root) }
                }
                // The hole between the pieces was not reclaimed.
                try b.setlk(fb[0], owner: 2, RecordLock(start: 520, end: 539, type: F_WRLCK, pid: 2), flock: false, root)
                // A's reclaimed locks are ordinary locks: it locks on and unlocks as before.
                try a.setlk(fa[0], owner: 1, RecordLock(start: 100, end: 109, type: F_WRLCK, pid: 1), flock: false, root)
                try a.setlk(fa[0], owner: 1, RecordLock(start: 0, end: Self.whole, type: F_UNLCK, pid: 1), flock: false, root)
                try b.setlk(fb[0], owner: 2, RecordLock(start: 50, end: 50, type: F_WRLCK, pid: 2), flock: false, root)
                try a.setlk(fa[1], owner: 0xF1, RecordLock(start: 0, end: 0, type: F_UNLCK, pid: 1), flock: true, root)
                try b.setlk(fb[1], owner: 0xB1, RecordLock(start: 0, end: 0, type: F_RDLCK, pid: 2), flock: true, root)
                try a.setlk(fa[0], owner: 3, RecordLock(start: 500, end: 599, type: F_UNLCK, pid: 3), flock: false, root)
                try b.setlk(fb[0], owner: 2, RecordLock(start: 500, end: 599, type: F_WRLCK, pid: 2), flock: false, root)
            }
        }
    }

    /// The first call after the restart is a lock request of A, on a file with locks: the
    /// thread that holds that file's lock state makes the session again and reclaims (so
    /// the reclaim must not wait for that state), then its LOCK waits out the grace period.
    @Test(.timeLimit(.minutes(10))) func aLockRequestThatFindsTheServerRestartedReclaimsFirst() async throws {
        let server = try NFSTestServer.shared()
        try await server.exclusive {
            // The usual lease: its keeper renews only every 20 s, so A's request comes first.
            try twoClients(server, "locks-reclaim-request", lease: 60, files: ["f"]) { a, fa, b, fb in
                try a.setlk(fa[0], owner: 1, RecordLock(start: 0, end: 99, type: F_WRLCK, pid: 1), flock: false, root)
                try server.stop()
                try server.start(grace: 20)
                try a.setlk(fa[0], owner: 1, RecordLock(start: 200, end: 299, type: F_WRLCK, pid: 1), flock: false, root)
                for range in [RecordLock(start: 50, end: 50, type: F_RDLCK, pid: 2), RecordLock(start: 250, end: 250, type: F_RDLCK, pid: 2)] {
                    #expect(throws: Errno.again) { try b.setlk(fb[0], owner: 2, range, flock: false, root) }
                }
                try a.setlk(fa[0], owner: 1, RecordLock(start: 0, end: Self.whole, type: F_UNLCK, pid: 1), flock: false, root)
                try b.setlk(fb[0], owner: 2, RecordLock(start: 0, end: Self.whole, type: F_WRLCK, pid: 2), flock: false, root)
            }
        }
    }

    /// The lease keeper's RENEWs (v4.0) or bare SEQUENCEs (v4.1+) keep the client id, and so
    /// its locks, through many leases in which it sends nothing else.
    @Test(.timeLimit(.minutes(10)), arguments: [NFSTestVersion.v4_0, .v4_1, .v4_2])
    func aLockOutlivesManyLeasesOfAnIdleClient(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.exclusive {
            try twoClients(server, "locks-lease-v\(version)", lease: 3, files: ["f"], version: version) { a, fa, b, fb in
                try a.setlk(fa[0], owner: 1, RecordLock(start: 0, end: 9, type: F_WRLCK, pid: 1), flock: false, root)
                let made = a.nfs4StatesMade
                sleep(10)
                #expect(throws: Errno.again) {
                    try b.setlk(fb[0], owner: 2, RecordLock(start: 5, end: 5, type: F_WRLCK, pid: 2), flock: false, root)
                }
                #expect(a.nfs4StatesMade == made, "the client id was kept")
                try a.setlk(fa[0], owner: 1, RecordLock(start: 0, end: 9, type: F_UNLCK, pid: 1), flock: false, root)
                try b.setlk(fb[0], owner: 2, RecordLock(start: 5, end: 5, type: F_WRLCK, pid: 2), flock: false, root)
            }
        }
    }

    /// v4.0 reclaims nothing after a restart: the server's grace period is waited out by
    /// every new lock (GRACE, sent again), then the lost one is reported once.
    @Test(.timeLimit(.minutes(10))) func aV40ClientWaitsOutTheGracePeriodThenHearsItsLocksAreLost() async throws {
        let server = try NFSTestServer.shared()
        try await server.exclusive {
            try twoClients(server, "locks40-grace", lease: 10, files: ["f"], version: .v4_0) { a, fa, b, fb in
                try a.setlk(fa[0], owner: 1, RecordLock(start: 0, end: 9, type: F_WRLCK, pid: 1), flock: false, root)
                try server.stop()
                try server.start(lease: 10, grace: 15)
                try b.setlk(fb[0], owner: 2, RecordLock(start: 5, end: 5, type: F_WRLCK, pid: 2), flock: false, root)
                #expect(throws: Errno(ENOLCK)) {
                    try a.setlk(fa[0], owner: 1, RecordLock(start: 20, end: 29, type: F_WRLCK, pid: 1), flock: false, root)
                }
                try a.setlk(fa[0], owner: 1, RecordLock(start: 20, end: 29, type: F_WRLCK, pid: 1), flock: false, root)
                #expect(try b.getlk(fb[0], owner: 2, RecordLock(start: 10, end: Self.whole, type: F_WRLCK, pid: 2), root).start == 20)
                try a.setlk(fa[0], owner: 1, RecordLock(start: 0, end: Self.whole, type: F_UNLCK, pid: 1), flock: false, root)
            }
        }
    }

    /// A server restarted without a grace period refuses every reclaim (NO_GRACE). v4.0
    /// reclaims nothing: its lost locks are reported the same way.
    @Test(.timeLimit(.minutes(10)), arguments: [NFSTestVersion.v4_0, .v4_1])
    func locksTheServerWillNotGiveBackAreReportedThenTakenAfresh(version: NFSTestVersion) async throws {
        let server = try NFSTestServer.shared()
        try await server.exclusive {
            try twoClients(server, "locks-restart-v\(version)", files: ["f"], version: version) { a, fa, b, fb in
                try a.setlk(fa[0], owner: 1, RecordLock(start: 0, end: 9, type: F_WRLCK, pid: 1), flock: false, root)
                try server.stop()
                try server.start()
                // The server forgot the lock: another client takes the range meanwhile.
                try b.setlk(fb[0], owner: 2, RecordLock(start: 0, end: 0, type: F_WRLCK, pid: 2), flock: false, root)
                #expect(throws: Errno(ENOLCK)) {
                    try a.setlk(fa[0], owner: 1, RecordLock(start: 20, end: 29, type: F_WRLCK, pid: 1), flock: false, root)
                }
                try a.setlk(fa[0], owner: 1, RecordLock(start: 20, end: 29, type: F_WRLCK, pid: 1), flock: false, root)
                #expect(try b.getlk(fb[0], owner: 2, RecordLock(start: 0, end: Self.whole, type: F_WRLCK, pid: 2), root).start == 20)
            }
        }
    }
}
