import FerryCore
@testable import FerryRADOS
import Testing

@Suite("RADOS layout: names and records")
struct LayoutTests {
    @Test func inodeRecordRoundTripsThroughItsNinetySixBytes() {
        var r = InodeRecord(mode: 0o100644, uid: 1000, gid: 100, nlink: 3,
                            time: Timestamp(seconds: 1_700_000_000, nanoseconds: 123_456_789))
        r.size = 1 << 40; r.rdev = 7; r.parent = 42; r.generation = 0xdead_beef; r.allocated = 4096
        r.mtime = Timestamp(seconds: -5, nanoseconds: 1)
        let bytes = r.encoded()
        #expect(bytes.count == 96)
        #expect(InodeRecord(decoding: bytes) == r)
        #expect(InodeRecord(decoding: Array(bytes.prefix(95))) == nil)
        var otherVersion = bytes
        otherVersion[0] = 2
        #expect(InodeRecord(decoding: otherVersion) == nil)
    }

    @Test func dentryValueIsInodeNumberAndType() {
        let d = Dentry(ino: 0x0102_0304_0506_0708, type: 4)
        #expect(d.encoded() == [8, 7, 6, 5, 4, 3, 2, 1, 4])
        #expect(Dentry(decoding: d.encoded()) == d)
        #expect(Dentry(decoding: [1, 2, 3]) == nil)
        #expect(Dentry.type(ofMode: 0o040755) == 4)
        #expect(Dentry.type(ofMode: 0o120777) == 10)
    }

    @Test func objectNamesSortAndClassify() {
        #expect(Layout.inodeObject(1) == "i.0000000000000001")
        #expect(Layout.shardObject(0xabc, 15) == "d.0000000000000abc.0f")
        #expect(Layout.dataObject(2, 3) == "f.0000000000000002.0000000000000003")
        #expect(Layout.classify("i.0000000000000001") == .inode(1))
        #expect(Layout.classify("d.0000000000000abc.0f") == .shard(0xabc, 15))
        #expect(Layout.classify("f.0000000000000002.0000000000000003") == .data(2, 3))
        #expect(Layout.classify("ferry.super") == .superblock)
        #expect(Layout.classify("i.1") == .foreign)
        #expect(Layout.classify("benchmark_data") == .foreign)
    }

    @Test func namesSpreadOverEveryShard() {
        var counts = [Int](repeating: 0, count: 16)
        for i in 0..<16_000 { counts[Layout.shard(of: Array("file-\(i)".utf8), shards: 16)] += 1 }
        // FNV-1a spreads sequential names evenly: no shard far from 1000.
        #expect(counts.allSatisfy { (800...1200).contains($0) }, "\(counts)")
    }

    @Test func renameIntentRoundTrips() {
        let i = RenameIntent(sourceDirectory: 1, sourceName: Array("a".utf8), targetDirectory: 9,
                             targetName: Array("long name ü".utf8), moved: Dentry(ino: 5, type: 8),
                             replaced: Dentry(ino: 6, type: 8), exchange: false)
        #expect(RenameIntent(decoding: i.encoded()) == i)
        var j = i
        j.replaced = nil; j.exchange = true
        #expect(RenameIntent(decoding: j.encoded()) == j)
        #expect(RenameIntent(decoding: Array(i.encoded().dropLast())) == nil)
    }
}
