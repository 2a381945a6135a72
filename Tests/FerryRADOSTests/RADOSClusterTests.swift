import FerryCore
@testable import FerryRADOS
import FerryTestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Calls `body` with `text` as a validated name (followed by a NUL, as in a request).
func withName<R>(_ text: String, _ body: (FileName) throws -> R) throws -> R {
    let bytes = Array(text.utf8) + [0]
    return try bytes.withUnsafeBytes { raw in
        try body(FileName.validated(UnsafeRawBufferPointer(rebasing: raw.dropLast())).get())
    }
}

/// A fresh namespace of the shared test cluster, formatted.
func freshTarget(_ namespace: String) throws -> RADOSTarget {
    let cluster = try CephCluster.shared()
    let target = RADOSTarget(pool: cluster.pool, namespace: namespace + "-\(getpid())", cephConf: cluster.conf)
    try RADOSFormat.format(try RADOSPool(target))
    return target
}

let root = Credentials.root

@Suite("RADOS backend against a real cluster", .serialized,
       .requires(.ceph))
struct RADOSClusterTests {
    @Test func fsckReportsAndRepairsEveryKindOfDamage() throws {
        let target = try freshTarget("fsck-kinds")
        var fileIno: UInt64 = 0
        do {
            let driver = try RADOSDriver(target: target)
            defer { driver.close() }
            let top = try driver.root().inode
            let (entry, opened) = try withName("a") { try driver.create(top, $0, mode: 0o644, flags: O_RDWR, root) }
            fileIno = entry.key
            var data = [UInt8](repeating: 7, count: 10_000)
            try data.withUnsafeMutableBytes { raw in
                var v = iovec(iov_base: raw.baseAddress, iov_len: raw.count)
                _ = try driver.write(opened.file, offset: 0, from: IOVectors(base: &v, count: 1), killSuidGid: false, root)
            }
            driver.release(opened.file, flags: 0, root)
            _ = try withName("d") { try driver.mkdir(top, $0, mode: 0o755, root) }
        }
        let pool = try RADOSPool(target)
        // An orphan inode, a wrong nlink, data past the size, a dangling dentry, a stray shard.
        let orphan = InodeRecord(mode: 0o100600, uid: 0, gid: 0, nlink: 1, time: .init(seconds: 0, nanoseconds: 0))
        #expect(pool.write(Layout.inodeObject(999_000)) { $0.create(exclusive: true); $0.setxattr(Layout.inodeXattr, orphan.encoded()) } == 0)
        var record = InodeRecord(decoding: try pool.xattr(Layout.inodeObject(fileIno), Layout.inodeXattr).get()!)!
        record.nlink = 5
        #expect(pool.write(Layout.inodeObject(fileIno)) { $0.setxattr(Layout.inodeXattr, record.encoded()) } == 0)
        let block = [UInt8](repeating: 1, count: 100)
        #expect(block.withUnsafeBytes { b in pool.write(Layout.dataObject(fileIno, 3)) { $0.write(b, at: 0) } } == 0)
        let ghost = Array("ghost".utf8)
        #expect(pool.write(Layout.shardObject(Layout.rootIno, Layout.shard(of: ghost, shards: 16))) {
            $0.omapSet([(ghost, Dentry(ino: 888_000, type: 8).encoded())])
        } == 0)
        #expect(pool.write(Layout.shardObject(777_000, 0)) { $0.omapSet([(Array("x".utf8), Dentry(ino: 1, type: 8).encoded())]) } == 0)

        let found = try RADOSFsck.run(pool, repair: false)
        let kinds = Set(found.map(\.kind))
        #expect(kinds == [.orphanInode, .wrongLinkCount, .dataPastSize, .danglingDentry, .strayObject], "\(found)")
        #expect(found.allSatisfy { !$0.repaired })
        let repaired = try RADOSFsck.run(pool, repair: true)
        #expect(Set(repaired.map(\.kind)) == kinds)
        #expect(try RADOSFsck.run(pool, repair: false).isEmpty)
        let fixed = InodeRecord(decoding: try pool.xattr(Layout.inodeObject(fileIno), Layout.inodeXattr).get()!)!
        #expect(fixed.nlink == 1 && fixed.size == 10_000)
        #expect(try pool.size(Layout.dataObject(fileIno, 3)).get() == nil)
        #expect(try pool.size(Layout.inodeObject(999_000)).get() == nil)
    }

    @Test func anInterruptedRenameIsFinishedByTheNextServer() throws {
        let target = try freshTarget("intent")
        let moved: Dentry
        var directoryIno: UInt64 = 0
        do {
            let driver = try RADOSDriver(target: target)
            defer { driver.close() }
            let top = try driver.root().inode
            let (entry, opened) = try withName("a") { try driver.create(top, $0, mode: 0o644, flags: O_RDWR, root) }
            driver.release(opened.file, flags: 0, root)
            directoryIno = try withName("d") { try driver.mkdir(top, $0, mode: 0o755, root) }.key
            moved = Dentry(ino: entry.key, type: 8)
        }
        // The server wrote its intent and crashed before any other step.
        let pool = try RADOSPool(target)
        var sequence: UInt64 = 1
        _ = try RADOSIntents.record(pool, RenameIntent(sourceDirectory: Layout.rootIno, sourceName: Array("a".utf8),
                                                       targetDirectory: directoryIno, targetName: Array("b".utf8),
                                                       moved: moved, replaced: nil, exchange: false), sequence: &sequence)
        let driver = try RADOSDriver(target: target)
        defer { driver.close() }
        let top = try driver.root().inode
        let directory = try withName("d") { try driver.lookup(top, $0, root) }.inode
        #expect(try withName("b") { try driver.lookup(directory, $0, root) }.key == moved.ino)
        #expect(throws: Errno.noEntry) { try withName("a") { try driver.lookup(top, $0, root) } }
        #expect(try pool.omapAll(Layout.intentsObject).get().isEmpty)
    }

    @Test func aSecondWriterIsRefusedButAReaderIsNot() throws {
        let target = try freshTarget("lease")
        let first = try RADOSDriver(target: target)
        defer { first.close() }
        do {
            _ = try RADOSDriver(target: target)
            Issue.record("a second writer was let in")
        } catch {
            #expect(error.description.contains("being served by another ferry"), "\(error)")
        }
        let reader = try RADOSDriver(target: target, options: RADOSOptions(readOnly: true))
        defer { reader.close() }
        #expect(throws: Errno.readOnly) {
            try withName("x") { try reader.mkdir(try reader.root().inode, $0, mode: 0o755, root) }
        }
    }

    @Test func anUnformattedNamespaceIsRefusedSayingSo() throws {
        let cluster = try CephCluster.shared()
        do {
            _ = try RADOSDriver(target: RADOSTarget(pool: cluster.pool, namespace: "nothing-\(getpid())", cephConf: cluster.conf))
            Issue.record("an unformatted namespace was served")
        } catch {
            #expect(error.description.contains("is not formatted"), "\(error)")
        }
    }
}
