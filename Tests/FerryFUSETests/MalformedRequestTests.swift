import FerryFUSE
import Testing

/// Hostile or broken input must produce the specific error, never a crash or a view
/// that reaches past the request.
@Suite struct MalformedRequestTests {
    @Test(arguments: [0, 1, 16, 39])
    func shortBufferIsTruncatedHeader(count: Int) {
        let bytes = Array(request(.lookup) { $0.cstr("x") }.prefix(count))
        #expect(decodeError(bytes) == .truncatedHeader(available: count))
        _ = bytes.withUnsafeBytes { raw in
            #expect(throws: FUSEDecodeError.truncatedHeader(available: count)) { try FUSEDecoder.decodeHeader(raw) }
        }
    }

    @Test func headerLengthLargerThanBufferIsLengthMismatch() {
        let bytes = request(FUSEOpcode.lookup.rawValue, args: Array("x\0".utf8), length: 100)
        #expect(decodeError(bytes) == .lengthMismatch(claimed: 100, available: 42))
    }

    @Test func headerLengthSmallerThanBufferIsLengthMismatch() {
        let bytes = request(FUSEOpcode.lookup.rawValue, args: Array("x\0".utf8), length: 40)
        #expect(decodeError(bytes) == .lengthMismatch(claimed: 40, available: 42))
    }

    /// (opcode, bytes of its fixed arguments) for every opcode with a fixed part.
    static let fixedSizes: [(FUSEOpcode, Int)] = [
        (.`init`, 16), (.forget, 8), (.batchForget, 8), (.getattr, 16), (.setattr, 88),
        (.mknod, 16), (.mkdir, 8), (.rename, 8), (.rename2, 16), (.link, 8),
        (.open, 8), (.opendir, 8), (.create, 16), (.tmpfile, 16),
        (.read, 40), (.readdir, 40), (.readdirplus, 40), (.write, 40),
        (.flush, 24), (.release, 24), (.releasedir, 24), (.fsync, 16), (.fsyncdir, 16),
        (.setxattr, 8), (.getxattr, 8), (.listxattr, 8), (.access, 8),
        (.getlk, 48), (.setlk, 48), (.setlkw, 48), (.interrupt, 8), (.bmap, 16),
        (.ioctl, 32), (.poll, 24), (.fallocate, 32), (.lseek, 24), (.copyFileRange, 56),
        (.syncfs, 8),
    ]

    @Test func everyFixedArgumentOpcodeShortByOneByteIsTruncatedArguments() {
        for (opcode, size) in Self.fixedSizes {
            let bytes = request(opcode.rawValue, args: [UInt8](repeating: 0, count: size - 1))
            #expect(decodeError(bytes) == .truncatedArguments(opcode: opcode.rawValue, needed: size, available: size - 1),
                    "\(opcode)")
        }
    }

    @Test func extendedSetxattrShortByOneByteIsTruncatedArguments() {
        let bytes = request(FUSEOpcode.setxattr.rawValue, args: [UInt8](repeating: 0, count: 15))
        #expect(decodeError(bytes, options: FUSEDecodeOptions(setxattrExtended: true))
                == .truncatedArguments(opcode: 21, needed: 16, available: 15))
    }

    @Test func unterminatedNamesAreRejected() {
        let cases: [(FUSEOpcode, [UInt8])] = [
            (.lookup, Array("abc".utf8)),
            (.lookup, []),
            (.unlink, Array("abc".utf8)),
            (.rmdir, Array("abc".utf8)),
            (.removexattr, Array("user.x".utf8)),
            (.symlink, Array("name\0target".utf8)),
            (.symlink, Array("name".utf8)),
            (.mknod, [UInt8](repeating: 1, count: 16) + Array("n".utf8)),
            (.mkdir, [UInt8](repeating: 1, count: 8)),
            (.create, [UInt8](repeating: 1, count: 16) + Array("n".utf8)),
            (.rename, [UInt8](repeating: 1, count: 8) + Array("old\0new".utf8)),
            (.rename2, [UInt8](repeating: 1, count: 16) + Array("old".utf8)),
            (.link, [UInt8](repeating: 1, count: 8) + Array("n".utf8)),
            (.getxattr, [UInt8](repeating: 1, count: 8) + Array("user.x".utf8)),
            (.setxattr, [0, 0, 0, 0, 0, 0, 0, 0] + Array("user.x".utf8)),
        ]
        for (opcode, args) in cases {
            #expect(decodeError(request(opcode.rawValue, args: args)) == .unterminatedString(opcode: opcode.rawValue),
                    "\(opcode) \(args)")
        }
    }

    @Test func nameMayNotRunIntoTheExtensionArea() {
        // The NUL sits in the extension area, which is not part of the arguments.
        let ext = Wire.build { w in w.u32(8); w.u32(0) }
        var bytes = request(FUSEOpcode.lookup.rawValue, args: Array("abc".utf8), extensions: ext)
        bytes[bytes.count - 1] = 0
        #expect(decodeError(bytes) == .unterminatedString(opcode: 1))
    }

    @Test func batchForgetWithHugeCountIsInconsistent() {
        let bytes = request(.batchForget) { w in w.u32(UInt32.max); w.u32(0); w.u64(1); w.u64(1) }
        #expect(decodeError(bytes) == .inconsistentCount(opcode: 42))
    }

    @Test func batchForgetCountOneBeyondPayloadIsInconsistent() {
        let bytes = request(.batchForget) { w in w.u32(2); w.u32(0); w.u64(1); w.u64(1); w.zeros(15) }
        #expect(decodeError(bytes) == .inconsistentCount(opcode: 42))
    }

    @Test func setxattrValueBeyondRequestIsInconsistent() {
        let bytes = request(.setxattr) { w in w.u32(100); w.u32(0); w.cstr("user.x"); w.raw([1, 2, 3]) }
        #expect(decodeError(bytes) == .inconsistentCount(opcode: 21))
        let huge = request(.setxattr) { w in w.u32(UInt32.max); w.u32(0); w.cstr("user.x") }
        #expect(decodeError(huge) == .inconsistentCount(opcode: 21))
    }

    @Test func setxattrWithBytesBeyondValueIsInconsistent() {
        let bytes = request(.setxattr) { w in w.u32(1); w.u32(0); w.cstr("user.x"); w.raw([1, 2]) }
        #expect(decodeError(bytes) == .inconsistentCount(opcode: 21))
    }

    @Test(arguments: [0, 3, 5])
    func writeDataCountDifferentFromSizeIsInconsistent(dataCount: Int) {
        let bytes = request(.write) { w in
            w.u64(1); w.u64(0); w.u32(4); w.u32(0); w.u64(0); w.u32(0); w.u32(0)
            w.zeros(dataCount)
        }
        #expect(decodeError(bytes) == .inconsistentCount(opcode: 16))
    }

    @Test func writeWithHugeSizeIsInconsistent() {
        let bytes = request(.write) { w in
            w.u64(1); w.u64(0); w.u32(UInt32.max); w.u32(0); w.u64(0); w.u32(0); w.u32(0); w.zeros(8)
        }
        #expect(decodeError(bytes) == .inconsistentCount(opcode: 16))
    }

    @Test func extensionLengthBeyondRequestIsBadExtension() {
        let bytes = request(FUSEOpcode.getattr.rawValue, args: [UInt8](repeating: 0, count: 16), extensionUnits: 3)
        #expect(decodeError(bytes) == .badExtension(opcode: 3))
        let maxUnits = request(FUSEOpcode.statfs.rawValue, extensionUnits: UInt16.max)
        #expect(decodeError(maxUnits) == .badExtension(opcode: 17))
    }

    @Test func malformedExtensionRecordsAreBadExtension() {
        let records: [[UInt8]] = [
            Wire.build { w in w.u32(0); w.u32(32) },                       // size 0: would never advance
            Wire.build { w in w.u32(4); w.u32(32) },                       // smaller than its header
            Wire.build { w in w.u32(12); w.u32(32); w.u32(0); w.u32(0) },  // not a multiple of 8
            Wire.build { w in w.u32(24); w.u32(32); w.u64(0) },            // runs past the area
            Wire.build { w in w.u32(8); w.u32(32); w.u32(UInt32.max); w.u32(0) }, // second record too big
            Wire.build { w in w.u32(16); w.u32(32); w.u64(1); w.u32(16); w.u32(1) }, // checked separately below
        ]
        for ext in records.dropLast() {
            let bytes = request(FUSEOpcode.getattr.rawValue, args: [UInt8](repeating: 0, count: 16), extensions: ext)
            #expect(decodeError(bytes) == .badExtension(opcode: 3), "\(ext)")
        }
        // 24 bytes: one 16-byte record, then a record claiming 16 with only 8 left.
        let bytes = request(FUSEOpcode.getattr.rawValue, args: [UInt8](repeating: 0, count: 16), extensions: records.last!)
        #expect(decodeError(bytes) == .badExtension(opcode: 3))
    }

    @Test func unknownOpcodeNeverThrowsEvenWithoutArguments() {
        #expect(decodeError(request(9999)) == nil)
    }
}
