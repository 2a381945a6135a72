import FerryFUSE
import Testing

/// READDIR / READDIRPLUS record packing.
@Suite struct DirentWriterTests {
    @Test func direntSizesAreAlignedToEightBytes() {
        #expect(FUSEDirentWriter.direntSize(nameLength: 1) == 32)
        #expect(FUSEDirentWriter.direntSize(nameLength: 8) == 32)
        #expect(FUSEDirentWriter.direntSize(nameLength: 9) == 40)
        #expect(FUSEDirentWriter.direntPlusSize(nameLength: 1) == 160)
        #expect(FUSEDirentWriter.direntPlusSize(nameLength: 9) == 168)
    }

    @Test func appendWritesDirentWithZeroPadding() {
        let bytes = encoded { buffer in
            var writer = FUSEDirentWriter(buffer: buffer, limit: 4096)
            #expect(writer.isEmpty)
            let ok = Array("abc".utf8).withUnsafeBytes { writer.append(ino: 0x55, offset: 1, type: 8, name: $0) }
            #expect(ok)
            #expect(!writer.isEmpty)
            return writer.length
        }
        #expect(bytes == Wire.build { w in w.u64(0x55); w.u64(1); w.u32(3); w.u32(8); w.raw(Array("abc".utf8)); w.zeros(5) })
    }

    @Test func appendPlusWritesEntryThenDirent() {
        let entry = EncodeReplyTests.sampleEntry()
        let bytes = encoded { buffer in
            var writer = FUSEDirentWriter(buffer: buffer, limit: 4096)
            let ok = Array("file1".utf8).withUnsafeBytes { writer.appendPlus(entry: entry, offset: 2, type: 4, name: $0) }
            #expect(ok)
            return writer.length
        }
        #expect(bytes == Wire.build { w in
            EncodeReplyTests.sampleEntryBytes(w)
            w.u64(entry.attr.ino); w.u64(2); w.u32(5); w.u32(4); w.raw(Array("file1".utf8)); w.zeros(3)
        })
    }

    @Test func appendBeyondLimitWritesNothingAndReturnsFalse() {
        var storage = [UInt8](repeating: 0xAA, count: 128)
        storage.withUnsafeMutableBytes { buffer in
            var writer = FUSEDirentWriter(buffer: buffer, limit: 63)
            let name = Array("x".utf8)
            name.withUnsafeBytes { n in
                let r1 = writer.append(ino: 1, offset: 1, type: 8, name: n)
                #expect(r1)
                let r2 = writer.append(ino: 2, offset: 2, type: 8, name: n)
                #expect(!r2)   // 32 + 32 > 63
                #expect(writer.length == 32)
                let r3 = writer.appendPlus(entry: FUSEEntryOut(), offset: 3, type: 8, name: n)
                #expect(!r3)
                #expect(writer.length == 32)
            }
        }
        #expect(storage[32...].allSatisfy { $0 == 0xAA })
    }

    @Test func recordExactlyFillingLimitFits() {
        var storage = [UInt8](repeating: 0, count: 64)
        storage.withUnsafeMutableBytes { buffer in
            var writer = FUSEDirentWriter(buffer: buffer, limit: 64)
            Array("12345678".utf8).withUnsafeBytes { n in
                let r4 = writer.append(ino: 1, offset: 1, type: 8, name: n)
                #expect(r4)
                let r5 = writer.append(ino: 2, offset: 2, type: 8, name: n)
                #expect(r5)
                let r6 = writer.append(ino: 3, offset: 3, type: 8, name: n)
                #expect(!r6)
            }
            #expect(writer.length == 64)
        }
    }

    @Test func limitIsClampedToBuffer() {
        var storage = [UInt8](repeating: 0, count: 32)
        storage.withUnsafeMutableBytes { buffer in
            var writer = FUSEDirentWriter(buffer: buffer, limit: 1 << 20)
            Array("a".utf8).withUnsafeBytes { n in
                let r7 = writer.append(ino: 1, offset: 1, type: 8, name: n)
                #expect(r7)
                let r8 = writer.append(ino: 2, offset: 2, type: 8, name: n)
                #expect(!r8)
            }
        }
    }
}
