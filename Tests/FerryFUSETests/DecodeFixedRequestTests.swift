import FerryFUSE
import Testing

/// Requests whose arguments are fixed structs (plus WRITE's data and BATCH_FORGET's list).
@Suite struct DecodeFixedRequestTests {
    @Test func initFullDecodesAndMergesFlags2WhenInitExtSet() throws {
        let bytes = request(.`init`) { w in
            w.u32(7); w.u32(38); w.u32(0x20000); w.u32(1 << 30 | 1); w.u32(0b1011); w.zeros(44)
        }
        try withDecoded(bytes) { d in
            guard case let .initialize(i) = d.request else { return unexpected(d.request) }
            #expect(i == FUSEInitIn(major: 7, minor: 38, maxReadahead: 0x20000, flags: (1 << 30 | 1) | (0b1011 << 32)))
        }
    }

    @Test func initIgnoresFlags2WithoutInitExt() throws {
        let bytes = request(.`init`) { w in
            w.u32(7); w.u32(38); w.u32(4096); w.u32(0x10); w.u32(0xFFFF_FFFF); w.zeros(44)
        }
        try withDecoded(bytes) { d in
            guard case let .initialize(i) = d.request else { return unexpected(d.request) }
            #expect(i.flags == 0x10)
        }
    }

    @Test func initCompatSixteenBytesDecodes() throws {
        try withDecoded(request(.`init`) { w in w.u32(7); w.u32(31); w.u32(131072); w.u32(1 << 30 | 1 << 22) }) { d in
            guard case let .initialize(i) = d.request else { return unexpected(d.request) }
            // INIT_EXT set but no flags2 word: nothing to merge.
            #expect(i == FUSEInitIn(major: 7, minor: 31, maxReadahead: 131072, flags: 1 << 30 | 1 << 22))
        }
    }

    @Test func noArgumentRequestsDecode() throws {
        try withDecoded(request(.destroy)) { d in
            guard case .destroy = d.request else { return unexpected(d.request) }
        }
        try withDecoded(request(.statfs)) { d in
            guard case .statfs = d.request else { return unexpected(d.request) }
        }
        try withDecoded(request(.readlink)) { d in
            guard case .readlink = d.request else { return unexpected(d.request) }
        }
    }

    @Test func forgetDecodesNlookup() throws {
        try withDecoded(request(.forget) { $0.u64(0x1_0000_0003) }) { d in
            guard case let .forget(n) = d.request else { return unexpected(d.request) }
            #expect(n == 0x1_0000_0003)
            #expect(d.header.nodeID == Sample.nodeID)
        }
    }

    @Test func batchForgetDecodesEntries() throws {
        let bytes = request(.batchForget) { w in
            w.u32(2); w.u32(0)
            w.u64(10); w.u64(1)
            w.u64(0xFFFF_FFFF_FFFF_FFF0); w.u64(99)
        }
        try withDecoded(bytes) { d in
            guard case let .batchForget(list) = d.request else { return unexpected(d.request) }
            #expect(list.count == 2)
            #expect(list.bytes.count == 32)
            #expect(list[0] == (10, 1))
            #expect(list[1] == (0xFFFF_FFFF_FFFF_FFF0, 99))
        }
    }

    @Test func batchForgetAcceptsZeroCount() throws {
        try withDecoded(request(.batchForget) { w in w.u32(0); w.u32(0) }) { d in
            guard case let .batchForget(list) = d.request else { return unexpected(d.request) }
            #expect(list.count == 0)
        }
    }

    @Test func getattrDecodes() throws {
        try withDecoded(request(.getattr) { w in w.u32(1); w.u32(0xEEEE); w.u64(0x55) }) { d in
            guard case let .getattr(g) = d.request else { return unexpected(d.request) }
            #expect(g == FUSEGetattrIn(getattrFlags: 1, fh: 0x55))
        }
    }

    @Test func setattrDecodesEveryField() throws {
        let bytes = request(.setattr) { w in
            w.u32(0x0FFF); w.u32(0xEEEE_EEEE)                 // valid, padding
            w.u64(0x11); w.u64(0x22); w.u64(0x33)              // fh, size, lock_owner
            w.u64(0x44); w.u64(0x55); w.u64(0x66)              // atime, mtime, ctime
            w.u32(0x77); w.u32(0x88); w.u32(0x99)              // *nsec
            w.u32(0o100644); w.u32(0xEEEE_EEEE)                // mode, unused4
            w.u32(1001); w.u32(1002); w.u32(0xEEEE_EEEE)       // uid, gid, unused5
        }
        try withDecoded(bytes) { d in
            guard case let .setattr(s) = d.request else { return unexpected(d.request) }
            #expect(s == FUSESetattrIn(valid: 0x0FFF, fh: 0x11, size: 0x22, lockOwner: 0x33,
                                       atime: 0x44, mtime: 0x55, ctime: 0x66,
                                       atimensec: 0x77, mtimensec: 0x88, ctimensec: 0x99,
                                       mode: 0o100644, uid: 1001, gid: 1002))
        }
    }

    @Test func openAndOpendirDecode() throws {
        try withDecoded(request(.open) { w in w.u32(0o102); w.u32(1) }) { d in
            guard case let .open(o) = d.request else { return unexpected(d.request) }
            #expect(o == FUSEOpenIn(flags: 0o102, openFlags: 1))
        }
        try withDecoded(request(.opendir) { w in w.u32(0o200000); w.u32(0) }) { d in
            guard case let .opendir(o) = d.request else { return unexpected(d.request) }
            #expect(o == FUSEOpenIn(flags: 0o200000, openFlags: 0))
        }
    }

    private func readArgs(_ w: Wire) {
        w.u64(0xF1); w.u64(0x1000); w.u32(4096); w.u32(2); w.u64(0xAB); w.u32(0o2); w.u32(0)
    }
    private let expectedRead = FUSEReadIn(fh: 0xF1, offset: 0x1000, size: 4096, readFlags: 2, lockOwner: 0xAB, flags: 0o2)

    @Test func readReaddirReaddirplusDecodeReadIn() throws {
        try withDecoded(request(.read, readArgs)) { d in
            guard case let .read(r) = d.request else { return unexpected(d.request) }
            #expect(r == expectedRead)
        }
        try withDecoded(request(.readdir, readArgs)) { d in
            guard case let .readdir(r) = d.request else { return unexpected(d.request) }
            #expect(r == expectedRead)
        }
        try withDecoded(request(.readdirplus, readArgs)) { d in
            guard case let .readdirplus(r) = d.request else { return unexpected(d.request) }
            #expect(r == expectedRead)
        }
    }

    @Test func writeDecodesStructAndExactData() throws {
        let bytes = request(.write) { w in
            w.u64(7); w.u64(0x2000); w.u32(5); w.u32(4); w.u64(0xCC); w.u32(0o1); w.u32(0)
            w.raw([1, 2, 3, 4, 5])
        }
        try withDecoded(bytes) { d in
            guard case let .write(wr, data) = d.request else { return unexpected(d.request) }
            #expect(wr == FUSEWriteIn(fh: 7, offset: 0x2000, size: 5, writeFlags: 4, lockOwner: 0xCC, flags: 0o1))
            #expect(Array(data) == [1, 2, 3, 4, 5])
        }
    }

    @Test func flushDecodesSkippingUnusedAndPadding() throws {
        try withDecoded(request(.flush) { w in w.u64(3); w.u32(0xEE); w.u32(0xEE); w.u64(0x0BAD) }) { d in
            guard case let .flush(f) = d.request else { return unexpected(d.request) }
            #expect(f == FUSEFlushIn(fh: 3, lockOwner: 0x0BAD))
        }
    }

    @Test func releaseAndReleasedirDecode() throws {
        let fill: (Wire) -> Void = { w in w.u64(9); w.u32(0o2); w.u32(3); w.u64(0x77) }
        let expected = FUSEReleaseIn(fh: 9, flags: 0o2, releaseFlags: 3, lockOwner: 0x77)
        try withDecoded(request(.release, fill)) { d in
            guard case let .release(r) = d.request else { return unexpected(d.request) }
            #expect(r == expected)
        }
        try withDecoded(request(.releasedir, fill)) { d in
            guard case let .releasedir(r) = d.request else { return unexpected(d.request) }
            #expect(r == expected)
        }
    }

    @Test func fsyncAndFsyncdirDecode() throws {
        let fill: (Wire) -> Void = { w in w.u64(12); w.u32(1); w.u32(0) }
        try withDecoded(request(.fsync, fill)) { d in
            guard case let .fsync(f) = d.request else { return unexpected(d.request) }
            #expect(f == FUSEFsyncIn(fh: 12, fsyncFlags: 1))
        }
        try withDecoded(request(.fsyncdir, fill)) { d in
            guard case let .fsyncdir(f) = d.request else { return unexpected(d.request) }
            #expect(f == FUSEFsyncIn(fh: 12, fsyncFlags: 1))
        }
    }

    @Test func listxattrAndAccessDecode() throws {
        try withDecoded(request(.listxattr) { w in w.u32(0); w.u32(0) }) { d in
            guard case let .listxattr(size) = d.request else { return unexpected(d.request) }
            #expect(size == 0)
        }
        try withDecoded(request(.access) { w in w.u32(0o7); w.u32(0) }) { d in
            guard case let .access(mask) = d.request else { return unexpected(d.request) }
            #expect(mask == 0o7)
        }
    }

    @Test func lockRequestsDecode() throws {
        let fill: (Wire) -> Void = { w in
            w.u64(5); w.u64(0x0123); w.u64(100); w.u64(200); w.u32(1); w.u32(4321); w.u32(1); w.u32(0)
        }
        let expected = FUSELockIn(fh: 5, owner: 0x0123, lock: FUSEFileLock(start: 100, end: 200, type: 1, pid: 4321), lockFlags: 1)
        try withDecoded(request(.getlk, fill)) { d in
            guard case let .getlk(l) = d.request else { return unexpected(d.request) }
            #expect(l == expected)
        }
        try withDecoded(request(.setlk, fill)) { d in
            guard case let .setlk(l) = d.request else { return unexpected(d.request) }
            #expect(l == expected)
        }
        try withDecoded(request(.setlkw, fill)) { d in
            guard case let .setlkw(l) = d.request else { return unexpected(d.request) }
            #expect(l == expected)
        }
    }

    @Test func interruptDecodesUnique() throws {
        try withDecoded(request(.interrupt) { $0.u64(0xFEED) }) { d in
            guard case let .interrupt(u) = d.request else { return unexpected(d.request) }
            #expect(u == 0xFEED)
        }
    }

    @Test func bmapDecodes() throws {
        try withDecoded(request(.bmap) { w in w.u64(1234); w.u32(512); w.u32(0) }) { d in
            guard case let .bmap(b) = d.request else { return unexpected(d.request) }
            #expect(b == FUSEBmapIn(block: 1234, blockSize: 512))
        }
    }

    @Test func ioctlDecodesAndIgnoresTrailingInData() throws {
        let bytes = request(.ioctl) { w in
            w.u64(4); w.u32(0x10); w.u32(0x8004_6601); w.u64(0xDEAD_BEEF); w.u32(8); w.u32(16)
            w.raw([1, 2, 3, 4, 5, 6, 7, 8])
        }
        try withDecoded(bytes) { d in
            guard case let .ioctl(i) = d.request else { return unexpected(d.request) }
            #expect(i == FUSEIoctlIn(fh: 4, flags: 0x10, cmd: 0x8004_6601, arg: 0xDEAD_BEEF, inSize: 8, outSize: 16))
        }
    }

    @Test func pollDecodes() throws {
        try withDecoded(request(.poll) { w in w.u64(1); w.u64(2); w.u32(1); w.u32(0x19) }) { d in
            guard case let .poll(p) = d.request else { return unexpected(d.request) }
            #expect(p == FUSEPollIn(fh: 1, kh: 2, flags: 1, events: 0x19))
        }
    }

    @Test func fallocateDecodes() throws {
        try withDecoded(request(.fallocate) { w in w.u64(6); w.u64(4096); w.u64(8192); w.u32(3); w.u32(0) }) { d in
            guard case let .fallocate(f) = d.request else { return unexpected(d.request) }
            #expect(f == FUSEFallocateIn(fh: 6, offset: 4096, length: 8192, mode: 3))
        }
    }

    @Test func lseekDecodes() throws {
        try withDecoded(request(.lseek) { w in w.u64(6); w.u64(100); w.u32(3); w.u32(0) }) { d in
            guard case let .lseek(l) = d.request else { return unexpected(d.request) }
            #expect(l == FUSELseekIn(fh: 6, offset: 100, whence: 3))
        }
    }

    @Test func copyFileRangeDecodes() throws {
        let bytes = request(.copyFileRange) { w in
            w.u64(1); w.u64(2); w.u64(3); w.u64(4); w.u64(5); w.u64(6); w.u64(7)
        }
        try withDecoded(bytes) { d in
            guard case let .copyFileRange(c) = d.request else { return unexpected(d.request) }
            #expect(c == FUSECopyFileRangeIn(fhIn: 1, offsetIn: 2, nodeIDOut: 3, fhOut: 4, offsetOut: 5, length: 6, flags: 7))
        }
    }

    @Test func syncfsDecodes() throws {
        try withDecoded(request(.syncfs) { $0.u64(0) }) { d in
            guard case .syncfs = d.request else { return unexpected(d.request) }
        }
    }

    @Test func daxAndNotifyReplyDecodeWithoutParsing() throws {
        // Arbitrary (even short) bodies: these are refused, never parsed.
        try withDecoded(request(.setupMapping) { $0.raw([1, 2, 3]) }) { d in
            guard case .setupMapping = d.request else { return unexpected(d.request) }
        }
        try withDecoded(request(.removeMapping)) { d in
            guard case .removeMapping = d.request else { return unexpected(d.request) }
        }
        try withDecoded(request(.notifyReply) { $0.raw([0xFF]) }) { d in
            guard case .notifyReply = d.request else { return unexpected(d.request) }
        }
    }

    @Test(arguments: [UInt32(0), 7, 19, 52, 4096, 0x1A00_0000, UInt32.max])
    func unknownOpcodeDecodesAsUnknown(opcode: UInt32) throws {
        try withDecoded(request(opcode, args: [1, 2, 3])) { d in
            guard case let .unknown(op) = d.request else { return unexpected(d.request) }
            #expect(op == opcode)
        }
    }
}
