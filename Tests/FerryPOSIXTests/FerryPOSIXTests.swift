import Foundation
import Testing

import FerryCore
@testable import FerryPOSIX

// Serialized: some tests count the process's descriptors or switch thread credentials.
@Suite(.serialized) struct POSIXDriverTests {

    @Test func createWriteReadRoundTripAndLookupFindsSameNode() throws {
        try withExport { path, driver in
            let root = try driver.rootInode()
            let (entry, opened) = try driver.create(root, "hello.txt")
            #expect(entry.attributes.isRegularFile)
            let text = Array("hello, ferry world".utf8)
            #expect(try driver.write(opened.file, text) == text.count)
            #expect(try driver.read(opened.file, count: 100) == text)
            #expect(try driver.read(opened.file, count: 4, at: 7) == Array("ferr".utf8))
            let again = try driver.lookup(root, "hello.txt")
            #expect(again.key == entry.key)
            #expect(try driver.getattr(again.inode, nil, .root).size == UInt64(text.count))
            let reopened = try driver.open(again.inode, flags: O_RDONLY, killSuidGid: false, .root)
            #expect(try driver.read(reopened.file, count: 5) == Array("hello".utf8))
            #expect(errnoOf { _ = try driver.lookup(root, "missing") } == ENOENT)
            try driver.flush(opened.file, lockOwner: 1, .root)
            try driver.fsync(opened.file, dataOnly: true, .root)
        }
    }

    @Test func readdirListsThreeThousandEntriesExactlyOnceAcrossCalls() throws {
        try withExport { path, driver in
            for i in 0..<3000 { close(open("\(path)/f\(i)", O_CREAT | O_WRONLY, 0o644)) }
            let root = try driver.rootInode()
            let dir = try driver.opendir(root, flags: O_RDONLY, .root)
            var seen: [String: Int] = [:]
            var offset: UInt64 = 0
            var calls = 0
            while true {
                var emitted = 0
                try driver.readdir(dir, at: offset, .root) { entry in
                    if emitted == 37 { return false }  // small reply budget
                    emitted += 1
                    seen[String(decoding: entry.name, as: UTF8.self), default: 0] += 1
                    offset = entry.nextOffset
                    return true
                }
                calls += 1
                if emitted == 0 { break }
            }
            #expect(calls > 50)
            #expect(seen.count == 3002)  // with . and ..
            #expect(seen.values.allSatisfy { $0 == 1 })
            #expect(seen["f2999"] == 1 && seen["."] == 1)
            try driver.fsyncdir(dir, dataOnly: false, .root)
        }
    }

    @Test func renameHonoursNoReplaceAndExchange() throws {
        try withExport { path, driver in
            hostWrite("\(path)/a", "A"); hostWrite("\(path)/b", "B")
            let root = try driver.rootInode()
            let noReplace = errnoOf {
                try withName("a") { a in try withName("b") { b in
                    try driver.rename(root, a, to: root, b, flags: UInt32(1), .root) } }
            }
            #expect(noReplace == EEXIST)
            try withName("a") { a in try withName("b") { b in
                try driver.rename(root, a, to: root, b, flags: UInt32(2), .root) } }
            #expect(try String(contentsOfFile: "\(path)/a", encoding: .utf8) == "B")
            #expect(try String(contentsOfFile: "\(path)/b", encoding: .utf8) == "A")
            try withName("a") { a in try withName("c") { c in
                try driver.rename(root, a, to: root, c, flags: 0, .root) } }
            #expect(hostStat("\(path)/a") == nil && hostStat("\(path)/c") != nil)
        }
    }

    @Test func hardLinkRaisesLinkCount() throws {
        try withExport { path, driver in
            let root = try driver.rootInode()
            let (entry, _) = try driver.create(root, "orig")
            let linked = try withName("second") { try driver.link(entry.inode, to: root, $0, .root) }
            #expect(linked.key == entry.key)
            #expect(linked.attributes.linkCount == 2)
            // Also as an unprivileged owner (no CAP_DAC_READ_SEARCH: the /proc path is used).
            let user = Credentials(uid: 65534, gid: 65534, pid: 1)
            let sub = try withName("pub") { try driver.mkdir(root, $0, mode: 0o777, .root) }
            let (mine, _) = try driver.create(sub.inode, "mine", flags: O_RDWR, user)
            let third = try withName("third") { try driver.link(mine.inode, to: sub.inode, $0, user) }
            #expect(third.attributes.linkCount == 2)
            POSIXDriver.resetThreadCredentials()
            try withName("second") { try driver.unlink(root, $0, .root) }
            #expect(try driver.getattr(entry.inode, nil, .root).linkCount == 1)
        }
    }

    @Test func symlinkStoresTargetAndReadlinkReturnsIt() throws {
        try withExport { path, driver in
            let root = try driver.rootInode()
            var target = Array("../some/where".utf8); target.append(0)
            let entry = try target.withUnsafeBytes { t in
                try withName("ln") { try driver.symlink(root, $0, target: UnsafeRawBufferPointer(rebasing: t[0..<(t.count - 1)]), .root) }
            }
            #expect(entry.attributes.isSymlink)
            var buffer = [UInt8](repeating: 0, count: 64)
            let n = try buffer.withUnsafeMutableBytes { try driver.readlink(entry.inode, into: $0, .root) }
            #expect(Array(buffer[0..<n]) == Array("../some/where".utf8))
            #expect(errnoOf { _ = try driver.open(entry.inode, flags: O_RDONLY, killSuidGid: false, .root) } == ELOOP)
        }
    }

    @Test func setattrTimesWithNanosecondsOmitAndNow() throws {
        try withExport { path, driver in
            let root = try driver.rootInode()
            let (entry, _) = try driver.create(root, "t")
            let atime = Timestamp(seconds: 1_000_000_000, nanoseconds: 123_456_789)
            let mtime = Timestamp(seconds: 1_200_000_000, nanoseconds: 987_654_321)
            var attrs = try driver.setattr(entry.inode, nil, AttributeChanges(accessTime: .set(atime), modificationTime: .set(mtime)), .root)
            #expect(attrs.accessTime == atime && attrs.modificationTime == mtime)
            // Omit atime, set mtime to now.
            attrs = try driver.setattr(entry.inode, nil, AttributeChanges(modificationTime: .now), .root)
            #expect(attrs.accessTime == atime)
            #expect(attrs.modificationTime.seconds > 1_600_000_000)
        }
    }

    @Test func setattrChmodChownAndTruncate() throws {
        try withExport { path, driver in
            let root = try driver.rootInode()
            let (entry, opened) = try driver.create(root, "m")
            try driver.write(opened.file, Array(repeating: 7, count: 100))
            var attrs = try driver.setattr(entry.inode, nil, AttributeChanges(mode: 0o4750), .root)
            #expect(attrs.mode & 0o7777 == 0o4750)
            attrs = try driver.setattr(entry.inode, nil, AttributeChanges(uid: 1234, gid: 4321), .root)
            #expect(attrs.uid == 1234 && attrs.gid == 4321)
            attrs = try driver.setattr(entry.inode, nil, AttributeChanges(size: 10), .root)
            #expect(attrs.size == 10)
            attrs = try driver.setattr(entry.inode, opened.file, AttributeChanges(size: 3), .root)
            #expect(attrs.size == 3)
            attrs = try driver.setattr(entry.inode, nil, AttributeChanges(mode: 0o6755), .root)
            attrs = try driver.setattr(entry.inode, nil, AttributeChanges(killSuidGid: true), .root)
            #expect(attrs.mode & 0o7777 == 0o0755)
            #expect(hostStat("\(path)/m")!.st_uid == 1234)
        }
    }

    @Test func extendedAttributesRoundTripWithCreateReplaceSemantics() throws {
        try withExport { path, driver in
            let root = try driver.rootInode()
            let (entry, _) = try driver.create(root, "x")
            let value = Array("value-1".utf8)
            try withAttributeName("user.ferry") { name in
                try value.withUnsafeBytes { try driver.setxattr(entry.inode, name: name, value: $0, flags: 0, .root) }
                #expect(errnoOf { try value.withUnsafeBytes { try driver.setxattr(entry.inode, name: name, value: $0, flags: 1 /* XATTR_CREATE */, .root) } } == EEXIST)
                #expect(try driver.getxattr(entry.inode, name: name, into: UnsafeMutableRawBufferPointer(start: nil, count: 0), .root) == value.count)
                var buffer = [UInt8](repeating: 0, count: 32)
                let n = try buffer.withUnsafeMutableBytes { try driver.getxattr(entry.inode, name: name, into: $0, .root) }
                #expect(Array(buffer[0..<n]) == value)
                var small = [UInt8](repeating: 0, count: 2)
                #expect(errnoOf { _ = try small.withUnsafeMutableBytes { try driver.getxattr(entry.inode, name: name, into: $0, .root) } } == ERANGE)
                var list = [UInt8](repeating: 0, count: 256)
                let ln = try list.withUnsafeMutableBytes { try driver.listxattr(entry.inode, into: $0, .root) }
                #expect(String(decoding: list[0..<ln], as: UTF8.self).contains("user.ferry"))
                try driver.removexattr(entry.inode, name: name, .root)
                #expect(errnoOf { _ = try buffer.withUnsafeMutableBytes { try driver.getxattr(entry.inode, name: name, into: $0, .root) } } == ENODATA)
            }
            try withAttributeName("user.none") { name in
                #expect(errnoOf { try value.withUnsafeBytes { try driver.setxattr(entry.inode, name: name, value: $0, flags: 2 /* XATTR_REPLACE */, .root) } } == ENODATA)
            }
            // Unprivileged callers may not touch trusted.* (the daemon has CAP_SYS_ADMIN).
            try withAttributeName("trusted.evil") { name in
                #expect(errnoOf { try value.withUnsafeBytes { try driver.setxattr(entry.inode, name: name, value: $0, flags: 0, Credentials(uid: 0x1000, gid: 0x1000, pid: 1)) } } == EPERM)
            }
        }
    }

    @Test func fallocatePunchHoleAndSeekDataHole() throws {
        try withExport { path, driver in
            let root = try driver.rootInode()
            let (_, opened) = try driver.create(root, "sparse")
            let file = opened.file
            try driver.fallocate(file, mode: 0, offset: 0, length: 1 << 20, .root)
            #expect(try driver.getattr(try driver.lookup(root, "sparse").inode, file, .root).size == 1 << 20)
            try driver.write(file, Array(repeating: 1, count: 1 << 20))
            try driver.fallocate(file, mode: 0x03,
                                 offset: 0, length: 512 * 1024, .root)
            #expect(try driver.read(file, count: 16, at: 4096) == Array(repeating: 0, count: 16))
            #expect(try driver.getattr(try driver.lookup(root, "sparse").inode, file, .root).size == 1 << 20)
            let data = try driver.lseek(file, offset: 0, whence: 3, .root)
            #expect(data == 512 * 1024)
            let hole = try driver.lseek(file, offset: 0, whence: 4, .root)
            #expect(hole == 0)
            #expect(errnoOf { _ = try driver.lseek(file, offset: 2 << 20, whence: 3, .root) } == ENXIO)
        }
    }

    @Test func copyFileRangeCopiesBetweenFiles() throws {
        try withExport { path, driver in
            let root = try driver.rootInode()
            let (_, source) = try driver.create(root, "src")
            let (_, destination) = try driver.create(root, "dst")
            try driver.write(source.file, Array("0123456789".utf8))
            let n = try driver.copyFileRange(from: source.file, at: 2, to: destination.file, at: 0, length: 5, flags: 0, .root)
            #expect(n == 5)
            #expect(try driver.read(destination.file, count: 10) == Array("23456".utf8))
        }
    }

    @Test func statfsAndSyncfsAndAccess() throws {
        try withExport(POSIXOptions(trustClientPermissions: false)) { path, driver in
            let root = try driver.rootInode()
            let stats = try driver.statfs(root, .root)
            #expect(stats.blocks > 0 && stats.blockSize > 0 && stats.maximumNameLength == 255)
            try driver.syncfs(root, .root)
            try driver.access(root, mask: R_OK | W_OK | X_OK, .root)
            let (entry, _) = try driver.create(root, "noexec", mode: 0o644)
            #expect(errnoOf { try driver.access(entry.inode, mask: X_OK, .root) } == EACCES)
            #expect(errnoOf { try driver.access(root, mask: W_OK, Credentials(uid: 65534, gid: 65534, pid: 1)) } == EACCES)
        }
    }

    @Test func tmpfileIsUnnamedAndWritable() throws {
        try withExport { path, driver in
            let root = try driver.rootInode()
            let (entry, opened) = try driver.tmpfile(root, mode: 0o600, flags: O_RDWR, .root)
            #expect(entry.attributes.isRegularFile && entry.attributes.linkCount == 0)
            try driver.write(opened.file, Array("tmp".utf8))
            #expect(try driver.read(opened.file, count: 3) == Array("tmp".utf8))
            #expect(try FileManager.default.contentsOfDirectory(atPath: path).isEmpty)
        }
    }

    @Test func ofdLocksConflictAcrossHandles() throws {
        try withExport { path, driver in
            let root = try driver.rootInode()
            let (entry, first) = try driver.create(root, "lock")
            let second = try driver.open(entry.inode, flags: O_RDWR, killSuidGid: false, .root)
            try driver.setlk(first.file, owner: 1, RecordLock(start: 0, end: 99, type: F_WRLCK, pid: 0), flock: false, .root)
            let probe = try driver.getlk(second.file, owner: 2, RecordLock(start: 50, end: .max, type: F_WRLCK, pid: 0), .root)
            #expect(probe.type == F_WRLCK && probe.start == 0 && probe.end == 99)
            #expect(errnoOf { try driver.setlk(second.file, owner: 2, RecordLock(start: 10, end: 10, type: F_RDLCK, pid: 0), flock: false, .root) } == EAGAIN)
            try driver.setlk(first.file, owner: 1, RecordLock(start: 0, end: 99, type: F_UNLCK, pid: 0), flock: false, .root)
            #expect(try driver.getlk(second.file, owner: 2, RecordLock(start: 0, end: .max, type: F_WRLCK, pid: 0), .root).type == F_UNLCK)
        }
    }

    // MARK: - Escapes

    @Test func hostSymlinksCannotBeTraversedOrOpened() throws {
        let outside = "/tmp/outside-xyz-\(getpid())"
        try? FileManager.default.removeItem(atPath: outside)
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: outside) }
        hostWrite("\(outside)/file", "secret")
        let before = hostStat("\(outside)/file")!
        try withExport { path, driver in
            symlink(outside, "\(path)/esc")
            symlink("..", "\(path)/up")
            symlink("\(outside)/file", "\(path)/direct")
            let root = try driver.rootInode()
            for link in ["esc", "up"] {
                let entry = try driver.lookup(root, link)
                #expect(entry.attributes.isSymlink)
                let err = errnoOf { _ = try driver.lookup(entry.inode, "file") }
                #expect(err == ENOTDIR || err == ELOOP)
                #expect(errnoOf { _ = try driver.create(entry.inode, "new") } != nil)
                #expect(errnoOf { _ = try driver.opendir(entry.inode, flags: O_RDONLY, .root) } == ENOTDIR)
                #expect(errnoOf { _ = try driver.open(entry.inode, flags: O_RDWR | O_TRUNC, killSuidGid: false, .root) } == ELOOP)
            }
            let direct = try driver.lookup(root, "direct")
            #expect(errnoOf { _ = try driver.open(direct.inode, flags: O_RDWR | O_TRUNC, killSuidGid: false, .root) } == ELOOP)
            #expect(errnoOf { try driver.setattr(direct.inode, nil, AttributeChanges(size: 0), .root) } != nil)
            // Creating over the symlink's name must not follow it.
            #expect(errnoOf { _ = try driver.create(root, "direct", flags: O_RDWR | O_TRUNC) } != nil)
        }
        let after = hostStat("\(outside)/file")!
        #expect(try String(contentsOfFile: "\(outside)/file", encoding: .utf8) == "secret")
        #expect(after.st_mtim.tv_sec == before.st_mtim.tv_sec && after.st_mtim.tv_nsec == before.st_mtim.tv_nsec)
        #expect(!FileManager.default.fileExists(atPath: "\(outside)/new"))
    }

    @Test func hostFifoIsRefusedWithoutBlocking() throws {
        try withExport { path, driver in
            #expect(mkfifo("\(path)/fifo", 0o666) == 0)
            let root = try driver.rootInode()
            let entry = try driver.lookup(root, "fifo")
            let done = DispatchSemaphore(value: 0)
            nonisolated(unsafe) var result: Int32? = 0
            let thread = Thread {
                result = errnoOf { _ = try driver.open(entry.inode, flags: O_RDONLY, killSuidGid: false, .root) }
                done.signal()
            }
            thread.start()
            if done.wait(timeout: .now() + 5) == .timedOut {
                // Unblock the hung open so the process can go on, then fail.
                close(open("\(path)/fifo", O_WRONLY | O_NONBLOCK))
                Issue.record("open of a host fifo blocked")
                _ = done.wait(timeout: .now() + 5)
                return
            }
            #expect(result == ENXIO)
            // CREATE on the existing name must not open the fifo either.
            let created = errnoOf { _ = try driver.create(root, "fifo", flags: O_RDONLY) }
            #expect(created == ENXIO)
            #expect(errnoOf { _ = try withAttributeName("user.x") { try driver.getxattr(entry.inode, name: $0, into: UnsafeMutableRawBufferPointer(start: nil, count: 0), .root) } } == EOPNOTSUPP)
        }
    }

    @Test func socketsAndDevicesAreRefusedOnOpen() throws {
        try withExport { path, driver in
            #expect(mknod("\(path)/sock", 0o140666, 0) == 0)
            #expect(mknod("\(path)/null", 0o020666, 0x103) == 0)
            let root = try driver.rootInode()
            for name in ["sock", "null"] {
                let entry = try driver.lookup(root, name)
                #expect(errnoOf { _ = try driver.open(entry.inode, flags: O_RDWR, killSuidGid: false, .root) } == ENXIO)
                #expect(errnoOf { try driver.setattr(entry.inode, nil, AttributeChanges(size: 0), .root) } == EINVAL)
            }
            // A guest-made fifo via mknod is a node, never opened.
            let fifo = try withName("gfifo") { try driver.mknod(root, $0, mode: UInt32(0o010000) | 0o644, rdev: 0, .root) }
            #expect(fifo.attributes.fileType == UInt32(0o010000))
            #expect(errnoOf { _ = try driver.open(fifo.inode, flags: O_WRONLY, killSuidGid: false, .root) } == ENXIO)
        }
    }

    // MARK: - File handles and descriptor budget

    @Test func thousandsOfInodesKeepDescriptorCountBounded() throws {
        try withExport(POSIXOptions(fileHandles: .prefer, maxCachedDescriptors: 4)) { path, driver in
            #expect(driver.effectiveHandleMode == .prefer)
            for i in 0..<2000 { close(open("\(path)/n\(i)", O_CREAT | O_WRONLY, 0o644)) }
            let root = try driver.rootInode()
            let before = openDescriptorCount(under: path)
            #expect(before >= 1)  // the count sees the driver's own: its root's descriptor
            var entries: [POSIXDriver.Entry] = []
            entries.reserveCapacity(2000)
            for i in 0..<2000 { entries.append(try driver.lookup(root, "n\(i)")) }
            let after = openDescriptorCount(under: path)
            #expect(after - before <= 10)
            #expect(driver.cachedDescriptorCount <= 4)
            // Everything still works through the handles, also for an unprivileged caller.
            let user = Credentials(uid: 65534, gid: 65534, pid: 1)
            for (i, entry) in entries.enumerated() {
                let attrs = try driver.getattr(entry.inode, nil, i % 2 == 0 ? .root : user)
                #expect(attrs.inode == entry.attributes.inode)
            }
            POSIXDriver.resetThreadCredentials()
            let opened = try driver.open(entries[1999].inode, flags: O_RDWR, killSuidGid: false, .root)
            try driver.write(opened.file, Array("x".utf8))
            #expect(openDescriptorCount(under: path) - before <= 11)
        }
    }

    @Test func neverModeHoldsOneDescriptorPerInode() throws {
        try withExport(POSIXOptions(fileHandles: .never)) { path, driver in
            hostWrite("\(path)/a", "a")
            let root = try driver.rootInode()
            let entry = try driver.lookup(root, "a")
            #expect(entry.inode.pinnedFD >= 0)
            #expect(try driver.getattr(entry.inode, nil, .root).size == 1)
        }
    }

    // MARK: - Credentials

    /// By default the client kernel has checked permissions with groups we never see: a
    /// caller whose access comes from a supplementary group is not refused by the host,
    /// and still acts as itself for ownership.
    @Test func trustingTheClientLetsSupplementaryGroupMembersIn() throws {
        try withExport { path, driver in
            let root = try driver.rootInode()
            let team = try withName("team") { try driver.mkdir(root, $0, mode: 0o770, .root) }
            _ = try driver.setattr(team.inode, nil, AttributeChanges(gid: 4444), .root)
            let member = Credentials(uid: 65534, gid: 65534, pid: 1)
            let (made, _) = try driver.create(team.inode, "made", mode: 0o640, flags: O_RDWR, member)
            #expect(made.attributes.uid == 65534)
            #expect(try driver.lookup(team.inode, "made", member).attributes.uid == 65534)
            POSIXDriver.resetThreadCredentials()
            #expect(hostStat("\(path)/team/made")!.st_uid == 65534)
        }
    }

    @Test func createRunsWithCallerCredentials() throws {
        try withExport(POSIXOptions(trustClientPermissions: false)) { path, driver in
            let root = try driver.rootInode()
            let open = try withName("open") { try driver.mkdir(root, $0, mode: 0o777, .root) }
            let user = Credentials(uid: 65534, gid: 65534, pid: 1)
            let (entry, _) = try driver.create(open.inode, "owned", mode: 0o644, flags: O_RDWR, user)
            #expect(entry.attributes.uid == 65534 && entry.attributes.gid == 65534)
            let closed = try withName("closed") { try driver.mkdir(root, $0, mode: 0o755, .root) }
            #expect(errnoOf { _ = try driver.create(closed.inode, "nope", mode: 0o644, flags: O_RDWR, user) } == EACCES)
            #expect(errnoOf { _ = try withName("d") { try driver.mkdir(closed.inode, $0, mode: 0o755, user) } } == EACCES)
            // Reading a root-only file as the user is refused by the host.
            let (secret, _) = try driver.create(root, "secret", mode: 0o600, flags: O_RDWR, .root)
            #expect(errnoOf { _ = try driver.open(secret.inode, flags: O_RDONLY, killSuidGid: false, user) } == EACCES)
            POSIXDriver.resetThreadCredentials()
            #expect(hostStat("\(path)/open/owned")!.st_uid == 65534)
        }
    }

    @Test func readOnlyExportRefusesChanges() throws {
        try withExport(POSIXOptions(readOnly: true)) { path, driver in
            hostWrite("\(path)/a", "a")
            let root = try driver.rootInode()
            let entry = try driver.lookup(root, "a")
            #expect(errnoOf { _ = try driver.create(root, "b") } == EROFS)
            #expect(errnoOf { _ = try driver.open(entry.inode, flags: O_WRONLY, killSuidGid: false, .root) } == EROFS)
            _ = try driver.open(entry.inode, flags: O_RDONLY, killSuidGid: false, .root)
        }
    }

    @Test func initRejectsNonDirectoryRoot() throws {
        hostWrite("/tmp/ferry-not-a-dir-\(getpid())", "x")
        defer { unlink("/tmp/ferry-not-a-dir-\(getpid())") }
        #expect(errnoOf { _ = try POSIXDriver(root: "/tmp/ferry-not-a-dir-\(getpid())") } == ENOTDIR)
    }
}
