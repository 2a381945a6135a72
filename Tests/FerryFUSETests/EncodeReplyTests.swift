import FerryFUSE
import Testing

/// Golden bytes for every reply struct. Buffers start as 0xAA, so any padding the encoder
/// forgets to zero shows up as a mismatch.
@Suite struct EncodeReplyTests {
    static func sampleAttr() -> FUSEAttr {
        var a = FUSEAttr()
        a.ino = 0x0101; a.size = 0x0202; a.blocks = 0x0303
        a.atime = 0x0404; a.mtime = 0x0505; a.ctime = 0x0606
        a.atimensec = 0x07; a.mtimensec = 0x08; a.ctimensec = 0x09
        a.mode = 0o100644; a.nlink = 0x0B; a.uid = 0x0C; a.gid = 0x0D
        a.rdev = 0x0E; a.blksize = 0x0F; a.flags = 0x10
        return a
    }

    static func sampleAttrBytes(_ w: Wire) {
        w.u64(0x0101); w.u64(0x0202); w.u64(0x0303)
        w.u64(0x0404); w.u64(0x0505); w.u64(0x0606)
        w.u32(0x07); w.u32(0x08); w.u32(0x09)
        w.u32(0o100644); w.u32(0x0B); w.u32(0x0C); w.u32(0x0D)
        w.u32(0x0E); w.u32(0x0F); w.u32(0x10)
    }

    static func sampleEntry() -> FUSEEntryOut {
        var e = FUSEEntryOut()
        e.nodeID = 0xA1; e.generation = 0xA2; e.entryValid = 0xA3; e.attrValid = 0xA4
        e.entryValidNsec = 0xA5; e.attrValidNsec = 0xA6; e.attr = sampleAttr()
        return e
    }

    static func sampleEntryBytes(_ w: Wire) {
        w.u64(0xA1); w.u64(0xA2); w.u64(0xA3); w.u64(0xA4); w.u32(0xA5); w.u32(0xA6)
        sampleAttrBytes(w)
    }

    @Test func attrEncodesAllFields() {
        #expect(FUSEAttr.size == 88)
        #expect(body(Self.sampleAttr()) == Wire.build(Self.sampleAttrBytes))
    }

    @Test func entryOutEncodesAllFields() {
        #expect(FUSEEntryOut.size == 128)
        #expect(body(Self.sampleEntry()) == Wire.build(Self.sampleEntryBytes))
    }

    @Test func attrOutZeroesDummy() {
        var o = FUSEAttrOut()
        o.attrValid = 0x1234; o.attrValidNsec = 999; o.attr = Self.sampleAttr()
        #expect(FUSEAttrOut.size == 104)
        #expect(body(o) == Wire.build { w in w.u64(0x1234); w.u32(999); w.u32(0); Self.sampleAttrBytes(w) })
    }

    @Test func openOutZeroesPadding() {
        #expect(FUSEOpenOut.size == 16)
        #expect(body(FUSEOpenOut(fh: 0xCAFE, openFlags: FUSEOpenReplyFlag.keepCache))
                == Wire.build { w in w.u64(0xCAFE); w.u32(2); w.u32(0) })
    }

    @Test func openOutCarriesTheBackingID() {
        let out = FUSEOpenOut(fh: 7, openFlags: FUSEOpenReplyFlag.passthrough, backingID: 0x0102_0304)
        #expect(body(out) == Wire.build { w in w.u64(7); w.u32(0x80); w.u32(0x0102_0304) })
        #expect(body(FUSEOpenOut(fh: 1, backingID: -1)) == Wire.build { w in w.u64(1); w.u32(0); w.u32(0xFFFF_FFFF) })
    }

    @Test func smallRepliesEncode() {
        #expect(body(FUSEWriteOut(size: 4096)) == Wire.build { w in w.u32(4096); w.u32(0) })
        #expect(body(FUSEGetxattrOut(size: 17)) == Wire.build { w in w.u32(17); w.u32(0) })
        #expect(body(FUSEBmapOut(block: 0x1_0000_0001)) == Wire.build { $0.u64(0x1_0000_0001) })
        #expect(body(FUSELseekOut(offset: 0xFFFF_FFFF_FFFF)) == Wire.build { $0.u64(0xFFFF_FFFF_FFFF) })
        #expect(body(FUSEPollOut(revents: 0x41)) == Wire.build { w in w.u32(0x41); w.u32(0) })
        for size in [FUSEWriteOut.size, FUSEGetxattrOut.size, FUSEBmapOut.size, FUSELseekOut.size, FUSEPollOut.size] {
            #expect(size == 8)
        }
    }

    @Test func statfsOutZeroesPaddingAndSpare() {
        var s = FUSEStatfsOut()
        s.blocks = 1; s.bfree = 2; s.bavail = 3; s.files = 4; s.ffree = 5
        s.bsize = 4096; s.namelen = 255; s.frsize = 512
        #expect(FUSEStatfsOut.size == 80)
        #expect(body(s) == Wire.build { w in
            w.u64(1); w.u64(2); w.u64(3); w.u64(4); w.u64(5)
            w.u32(4096); w.u32(255); w.u32(512); w.u32(0); w.zeros(24)
        })
    }

    @Test func lockOutEncodesFileLock() {
        let lock = FUSEFileLock(start: 10, end: 0x7FFF_FFFF_FFFF_FFFF, type: 1, pid: 77)
        #expect(FUSELockOut.size == 24)
        #expect(body(FUSELockOut(lock: lock)) == Wire.build { w in w.u64(10); w.u64(0x7FFF_FFFF_FFFF_FFFF); w.u32(1); w.u32(77) })
    }

    @Test func initOutSplitsFlagsIntoFlagsAndFlags2() {
        var o = FUSEInitOut()
        o.major = 7; o.minor = 38; o.maxReadahead = 0x20000
        o.flags = 0x0000_0009_4000_0001
        o.maxBackground = 64; o.congestionThreshold = 48; o.maxWrite = 1 << 20
        o.timeGranularity = 1; o.maxPages = 256; o.mapAlignment = 12
        #expect(FUSEInitOut.size == 64)
        #expect(body(o) == Wire.build { w in
            w.u32(7); w.u32(38); w.u32(0x20000); w.u32(0x4000_0001)
            w.u16(64); w.u16(48); w.u32(1 << 20); w.u32(1)
            w.u16(256); w.u16(12); w.u32(9); w.zeros(28)
        })
        o.maxStackDepth = 2
        #expect(body(o) == Wire.build { w in
            w.u32(7); w.u32(38); w.u32(0x20000); w.u32(0x4000_0001)
            w.u16(64); w.u16(48); w.u32(1 << 20); w.u32(1)
            w.u16(256); w.u16(12); w.u32(9); w.u32(2); w.zeros(24)
        })
    }

    @Test func replyHeaderPrecedesBody() {
        let bytes = encoded { FUSEReply.encode(FUSEWriteOut(size: 3), unique: Sample.unique, into: $0) }
        #expect(bytes == Wire.build { w in w.u32(24); w.u32(0); w.u64(Sample.unique); w.u32(3); w.u32(0) })
    }

    @Test func errorReplyIsHeaderWithNegatedErrno() {
        let bytes = encoded { FUSEReply.error(2, unique: 0xAB, into: $0) }
        #expect(bytes == Wire.build { w in w.u32(16); w.u32(UInt32(bitPattern: -2)); w.u64(0xAB) })
    }

    @Test func writeHeaderWritesRawFields() {
        let bytes = encoded { buffer in
            FUSEReply.writeHeader(to: buffer.baseAddress!, length: 4096 + 16, error: 0, unique: 5)
            return 16
        }
        #expect(bytes == Wire.build { w in w.u32(4112); w.u32(0); w.u64(5) })
    }
}
