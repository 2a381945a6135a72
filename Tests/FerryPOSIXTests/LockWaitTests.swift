import Foundation
import Testing

import FerryCore
@testable import FerryPOSIX

/// The POSIX driver's record locks: one open file description per (file, lock owner)
/// holding OFD locks, flock on the handle's own description, and never a wait (a conflict
/// is EAGAIN; the core's lock-wait thread retries).
@Suite struct POSIXRecordLockTests {
    static let whole = RecordLock(start: 0, end: RecordLock.toEndOfFile, type: F_WRLCK, pid: 1)

    @Test func aLockHeldByAnotherHostDescriptionIsAConflictAnsweredAtOnce() throws {
        try withExport { root, driver in
            try Data("x".utf8).write(to: URL(fileURLWithPath: root + "/f"))
            let held = Glibc.open(root + "/f", O_RDWR)
            try #require(held >= 0)
            defer { close(held) }
            var fl = flock()
            fl.l_type = Int16(F_WRLCK); fl.l_whence = Int16(SEEK_SET)
            try #require(fcntl(held, 37 /* F_OFD_SETLK */, &fl) == 0)

            let entry = try driver.lookup(try driver.root().inode, "f")
            let file = try driver.open(entry.inode, flags: O_RDWR, killSuidGid: false, .root).file
            #expect(errnoOf { try driver.setlk(file, owner: 1, Self.whole, flock: false, .root) } == EAGAIN)
            // A failed first lock keeps no description open for its owner.
            #expect(driver.lockOwnerCount == 0)
            let found = try driver.getlk(file, owner: 1, Self.whole, .root)
            #expect(found.type == F_WRLCK && found.start == 0 && found.end == RecordLock.toEndOfFile)
        }
    }

    @Test func ownersConflictWithEachOtherNotWithThemselvesAndFlushDropsAnOwnersLocks() throws {
        try withExport { root, driver in
            let (entry, a) = try driver.create(try driver.rootInode(), "f")
            let b = try driver.open(entry.inode, flags: O_RDWR, killSuidGid: false, .root)
            try driver.setlk(a.file, owner: 1, RecordLock(start: 0, end: 9, type: F_WRLCK, pid: 10), flock: false, .root)
            // The same owner through another handle: its own lock, merged (a process's semantics).
            try driver.setlk(b.file, owner: 1, RecordLock(start: 5, end: 19, type: F_WRLCK, pid: 10), flock: false, .root)
            #expect(try driver.getlk(a.file, owner: 1, Self.whole, .root).type == F_UNLCK)
            #expect(errnoOf { try driver.setlk(b.file, owner: 2, RecordLock(start: 19, end: 19, type: F_RDLCK, pid: 20), flock: false, .root) } == EAGAIN)
            let seen = try driver.getlk(b.file, owner: 2, Self.whole, .root)
            #expect(seen.type == F_WRLCK && seen.start == 0 && seen.end == 19)
            #expect(driver.lockOwnerCount == 1)
            // The host sees it too: another description's F_OFD_GETLK.
            let probe = Glibc.open(root + "/f", O_RDWR)
            defer { close(probe) }
            var fl = flock()
            fl.l_type = Int16(F_WRLCK); fl.l_whence = Int16(SEEK_SET)
            #expect(fcntl(probe, 36 /* F_OFD_GETLK */, &fl) == 0 && Int32(fl.l_type) == F_WRLCK)

            try driver.flush(a.file, lockOwner: 1, .root)
            #expect(driver.lockOwnerCount == 0)
            try driver.setlk(b.file, owner: 2, RecordLock(start: 19, end: 19, type: F_RDLCK, pid: 20), flock: false, .root)
        }
    }

    @Test func aWriteLockThroughAReadOnlyHandleIsBadHandle() throws {
        try withExport { root, driver in
            let (entry, _) = try driver.create(try driver.rootInode(), "f")
            let readOnly = try driver.open(entry.inode, flags: O_RDONLY, killSuidGid: false, .root)
            #expect(errnoOf { try driver.setlk(readOnly.file, owner: 1, Self.whole, flock: false, .root) } == EBADF)
            var read = Self.whole; read.type = F_RDLCK
            try driver.setlk(readOnly.file, owner: 1, read, flock: false, .root)
        }
    }

    @Test func ownersBeyondTheLimitAreRefusedWithENOLCK() throws {
        var options = POSIXOptions()
        options.maxLockOwners = 2
        try withExport(options) { _, driver in
            let (_, a) = try driver.create(try driver.rootInode(), "f")
            for owner in [UInt64(1), 2] {
                let range = RecordLock(start: owner, end: owner, type: F_WRLCK, pid: 1)
                try driver.setlk(a.file, owner: owner, range, flock: false, .root)
            }
            let third = RecordLock(start: 3, end: 3, type: F_WRLCK, pid: 1)
            #expect(errnoOf { try driver.setlk(a.file, owner: 3, third, flock: false, .root) } == ENOLCK)
            driver.sessionEnded()
            #expect(driver.lockOwnerCount == 0)
            try driver.setlk(a.file, owner: 3, third, flock: false, .root)
        }
    }

    @Test func flockConflictsBetweenOpenFilesAndEndsWithTheirUnlock() throws {
        try withExport { _, driver in
            let (entry, a) = try driver.create(try driver.rootInode(), "f")
            let b = try driver.open(entry.inode, flags: O_RDONLY, killSuidGid: false, .root)
            try driver.setlk(a.file, owner: 7, Self.whole, flock: true, .root)
            var shared = Self.whole; shared.type = F_RDLCK
            #expect(errnoOf { try driver.setlk(b.file, owner: 8, shared, flock: true, .root) } == EAGAIN)
            var unlock = Self.whole; unlock.type = F_UNLCK
            try driver.setlk(a.file, owner: 7, unlock, flock: true, .root)
            try driver.setlk(b.file, owner: 8, shared, flock: true, .root)
            // flock locks are not POSIX ones: no description was opened for them.
            #expect(driver.lockOwnerCount == 0)
        }
    }
}
