import CLinuxFUSE
import FerryFUSE
import Testing

/// Cross-checks against the kernel's own <linux/fuse.h>: sizes, and field offsets by
/// round-tripping distinct field values through the C structs (x86-64 is little-endian,
/// so a C struct's memory is its wire form).
@Suite struct CLayoutTests {
    func bytes<T>(of value: T) -> [UInt8] { withUnsafeBytes(of: value) { Array($0) } }
    func load<T>(_ bytes: [UInt8], as: T.Type) -> T { bytes.withUnsafeBytes { $0.loadUnaligned(as: T.self) } }

    @Test func requestStructSizesMatchC() {
        #expect(MemoryLayout<fuse_in_header>.size == FUSEInHeader.size)
        #expect(MemoryLayout<fuse_init_in>.size == FUSEInitIn.size)
        #expect(MemoryLayout<fuse_getattr_in>.size == FUSEGetattrIn.size)
        #expect(MemoryLayout<fuse_setattr_in>.size == FUSESetattrIn.size)
        #expect(MemoryLayout<fuse_mknod_in>.size == FUSEMknodIn.size)
        #expect(MemoryLayout<fuse_mkdir_in>.size == FUSEMkdirIn.size)
        #expect(MemoryLayout<fuse_open_in>.size == FUSEOpenIn.size)
        #expect(MemoryLayout<fuse_create_in>.size == FUSECreateIn.size)
        #expect(MemoryLayout<fuse_read_in>.size == FUSEReadIn.size)
        #expect(MemoryLayout<fuse_write_in>.size == FUSEWriteIn.size)
        #expect(MemoryLayout<fuse_flush_in>.size == FUSEFlushIn.size)
        #expect(MemoryLayout<fuse_release_in>.size == FUSEReleaseIn.size)
        #expect(MemoryLayout<fuse_fsync_in>.size == FUSEFsyncIn.size)
        #expect(MemoryLayout<fuse_setxattr_in>.size == FUSESetxattrIn.size)
        #expect(MemoryLayout<fuse_file_lock>.size == FUSEFileLock.size)
        #expect(MemoryLayout<fuse_lk_in>.size == FUSELockIn.size)
        #expect(MemoryLayout<fuse_bmap_in>.size == FUSEBmapIn.size)
        #expect(MemoryLayout<fuse_ioctl_in>.size == FUSEIoctlIn.size)
        #expect(MemoryLayout<fuse_poll_in>.size == FUSEPollIn.size)
        #expect(MemoryLayout<fuse_fallocate_in>.size == FUSEFallocateIn.size)
        #expect(MemoryLayout<fuse_lseek_in>.size == FUSELseekIn.size)
        #expect(MemoryLayout<fuse_copy_file_range_in>.size == FUSECopyFileRangeIn.size)
        #expect(MemoryLayout<fuse_rename2_in>.size == 16)
        #expect(MemoryLayout<fuse_batch_forget_in>.size == 8)
        #expect(MemoryLayout<fuse_forget_one>.size == 16)
        #expect(MemoryLayout<fuse_syncfs_in>.size == 8)
        #expect(MemoryLayout<fuse_ext_header>.size == 8)
    }

    @Test func replyStructSizesMatchC() {
        #expect(MemoryLayout<fuse_out_header>.size == FUSEOutHeader.size)
        #expect(MemoryLayout<fuse_attr>.size == FUSEAttr.size)
        #expect(MemoryLayout<fuse_entry_out>.size == FUSEEntryOut.size)
        #expect(MemoryLayout<fuse_attr_out>.size == FUSEAttrOut.size)
        #expect(MemoryLayout<fuse_open_out>.size == FUSEOpenOut.size)
        #expect(MemoryLayout<fuse_write_out>.size == FUSEWriteOut.size)
        #expect(MemoryLayout<fuse_statfs_out>.size == FUSEStatfsOut.size)
        #expect(MemoryLayout<fuse_getxattr_out>.size == FUSEGetxattrOut.size)
        #expect(MemoryLayout<fuse_lk_out>.size == FUSELockOut.size)
        #expect(MemoryLayout<fuse_bmap_out>.size == FUSEBmapOut.size)
        #expect(MemoryLayout<fuse_lseek_out>.size == FUSELseekOut.size)
        #expect(MemoryLayout<fuse_poll_out>.size == FUSEPollOut.size)
        #expect(MemoryLayout<fuse_init_out>.size == FUSEInitOut.size)
        #expect(MemoryLayout<fuse_dirent>.size == 24)   // FUSE_NAME_OFFSET
        #expect(FUSEDirentWriter.direntPlusSize(nameLength: 0) == MemoryLayout<fuse_entry_out>.size + 24)
    }

    @Test func headerDecodesFromCStruct() throws {
        var h = fuse_in_header()
        h.len = 40; h.opcode = 17; h.unique = 0x0102; h.nodeid = 0x0304
        h.uid = 5; h.gid = 6; h.pid = 7; h.total_extlen = 0; h.padding = 0xFFFF
        try withDecoded(bytes(of: h)) { d in
            #expect(d.header == FUSEInHeader(length: 40, opcode: 17, unique: 0x0102, nodeID: 0x0304, uid: 5, gid: 6, pid: 7))
        }
    }

    @Test func setattrDecodesFromCStruct() throws {
        #expect(MemoryLayout<fuse_setattr_in>.offset(of: \.mode) == 68)
        #expect(MemoryLayout<fuse_setattr_in>.offset(of: \.uid) == 76)
        var c = fuse_setattr_in()
        c.valid = 1; c.padding = 0xEE; c.fh = 2; c.size = 3; c.lock_owner = 4
        c.atime = 5; c.mtime = 6; c.ctime = 7; c.atimensec = 8; c.mtimensec = 9; c.ctimensec = 10
        c.mode = 11; c.unused4 = 0xEE; c.uid = 12; c.gid = 13; c.unused5 = 0xEE
        try withDecoded(request(FUSEOpcode.setattr.rawValue, args: bytes(of: c))) { d in
            guard case let .setattr(s) = d.request else { return unexpected(d.request) }
            #expect(s == FUSESetattrIn(valid: 1, fh: 2, size: 3, lockOwner: 4, atime: 5, mtime: 6, ctime: 7,
                                       atimensec: 8, mtimensec: 9, ctimensec: 10, mode: 11, uid: 12, gid: 13))
        }
    }

    @Test func lockAndReadAndWriteDecodeFromCStructs() throws {
        var lk = fuse_lk_in()
        lk.fh = 1; lk.owner = 2; lk.lk.start = 3; lk.lk.end = 4; lk.lk.type = 5; lk.lk.pid = 6; lk.lk_flags = 7
        try withDecoded(request(FUSEOpcode.setlk.rawValue, args: bytes(of: lk))) { d in
            guard case let .setlk(l) = d.request else { return unexpected(d.request) }
            #expect(l == FUSELockIn(fh: 1, owner: 2, lock: FUSEFileLock(start: 3, end: 4, type: 5, pid: 6), lockFlags: 7))
        }
        var rd = fuse_read_in()
        rd.fh = 1; rd.offset = 2; rd.size = 3; rd.read_flags = 4; rd.lock_owner = 5; rd.flags = 6
        try withDecoded(request(FUSEOpcode.read.rawValue, args: bytes(of: rd))) { d in
            guard case let .read(r) = d.request else { return unexpected(d.request) }
            #expect(r == FUSEReadIn(fh: 1, offset: 2, size: 3, readFlags: 4, lockOwner: 5, flags: 6))
        }
        var wr = fuse_write_in()
        wr.fh = 1; wr.offset = 2; wr.size = 2; wr.write_flags = 4; wr.lock_owner = 5; wr.flags = 6
        try withDecoded(request(FUSEOpcode.write.rawValue, args: bytes(of: wr) + [0xAB, 0xCD])) { d in
            guard case let .write(w, data) = d.request else { return unexpected(d.request) }
            #expect(w == FUSEWriteIn(fh: 1, offset: 2, size: 2, writeFlags: 4, lockOwner: 5, flags: 6))
            #expect(Array(data) == [0xAB, 0xCD])
        }
    }

    @Test func otherFixedStructsDecodeFromCStructs() throws {
        var rel = fuse_release_in(); rel.fh = 1; rel.flags = 2; rel.release_flags = 3; rel.lock_owner = 4
        try withDecoded(request(FUSEOpcode.release.rawValue, args: bytes(of: rel))) { d in
            guard case let .release(r) = d.request else { return unexpected(d.request) }
            #expect(r == FUSEReleaseIn(fh: 1, flags: 2, releaseFlags: 3, lockOwner: 4))
        }
        var fl = fuse_flush_in(); fl.fh = 1; fl.unused = 9; fl.padding = 9; fl.lock_owner = 2
        try withDecoded(request(FUSEOpcode.flush.rawValue, args: bytes(of: fl))) { d in
            guard case let .flush(f) = d.request else { return unexpected(d.request) }
            #expect(f == FUSEFlushIn(fh: 1, lockOwner: 2))
        }
        var io = fuse_ioctl_in(); io.fh = 1; io.flags = 2; io.cmd = 3; io.arg = 4; io.in_size = 5; io.out_size = 6
        try withDecoded(request(FUSEOpcode.ioctl.rawValue, args: bytes(of: io))) { d in
            guard case let .ioctl(i) = d.request else { return unexpected(d.request) }
            #expect(i == FUSEIoctlIn(fh: 1, flags: 2, cmd: 3, arg: 4, inSize: 5, outSize: 6))
        }
        var cp = fuse_copy_file_range_in()
        cp.fh_in = 1; cp.off_in = 2; cp.nodeid_out = 3; cp.fh_out = 4; cp.off_out = 5; cp.len = 6; cp.flags = 7
        try withDecoded(request(FUSEOpcode.copyFileRange.rawValue, args: bytes(of: cp))) { d in
            guard case let .copyFileRange(c) = d.request else { return unexpected(d.request) }
            #expect(c == FUSECopyFileRangeIn(fhIn: 1, offsetIn: 2, nodeIDOut: 3, fhOut: 4, offsetOut: 5, length: 6, flags: 7))
        }
        var sx = fuse_setxattr_in(); sx.size = 1; sx.flags = 2; sx.setxattr_flags = 3
        try withDecoded(request(FUSEOpcode.setxattr.rawValue, args: bytes(of: sx) + Array("n\0".utf8) + [7]),
                        options: FUSEDecodeOptions(setxattrExtended: true)) { d in
            guard case let .setxattr(s, _, value) = d.request else { return unexpected(d.request) }
            #expect(s == FUSESetxattrIn(size: 1, flags: 2, setxattrFlags: 3))
            #expect(Array(value) == [7])
        }
        var ini = fuse_init_in(); ini.major = 7; ini.minor = 38; ini.max_readahead = 3; ini.flags = 1 << 30; ini.flags2 = 2
        try withDecoded(request(FUSEOpcode.`init`.rawValue, args: bytes(of: ini))) { d in
            guard case let .initialize(i) = d.request else { return unexpected(d.request) }
            #expect(i == FUSEInitIn(major: 7, minor: 38, maxReadahead: 3, flags: 1 << 30 | 2 << 32))
        }
    }

    @Test func attrAndEntryEncodeToCStructs() {
        let e = EncodeReplyTests.sampleEntry()
        let c = load(body(e), as: fuse_entry_out.self)
        #expect(c.nodeid == e.nodeID && c.generation == e.generation)
        #expect(c.entry_valid == e.entryValid && c.attr_valid == e.attrValid)
        #expect(c.entry_valid_nsec == e.entryValidNsec && c.attr_valid_nsec == e.attrValidNsec)
        let a = e.attr
        #expect(c.attr.ino == a.ino && c.attr.size == a.size && c.attr.blocks == a.blocks)
        #expect(c.attr.atime == a.atime && c.attr.mtime == a.mtime && c.attr.ctime == a.ctime)
        #expect(c.attr.atimensec == a.atimensec && c.attr.mtimensec == a.mtimensec && c.attr.ctimensec == a.ctimensec)
        #expect(c.attr.mode == a.mode && c.attr.nlink == a.nlink && c.attr.uid == a.uid && c.attr.gid == a.gid)
        #expect(c.attr.rdev == a.rdev && c.attr.blksize == a.blksize && c.attr.flags == a.flags)

        var o = FUSEAttrOut(); o.attrValid = 9; o.attrValidNsec = 8; o.attr = a
        let co = load(body(o), as: fuse_attr_out.self)
        #expect(co.attr_valid == 9 && co.attr_valid_nsec == 8 && co.dummy == 0 && co.attr.flags == a.flags && co.attr.ino == a.ino)
    }

    @Test func otherRepliesEncodeToCStructs() {
        let open = load(body(FUSEOpenOut(fh: 5, openFlags: 6)), as: fuse_open_out.self)
        #expect(open.fh == 5 && open.open_flags == 6 && open.padding == 0)

        var s = FUSEStatfsOut()
        s.blocks = 1; s.bfree = 2; s.bavail = 3; s.files = 4; s.ffree = 5; s.bsize = 6; s.namelen = 7; s.frsize = 8
        let st = load(body(s), as: fuse_statfs_out.self).st
        #expect(st.blocks == 1 && st.bfree == 2 && st.bavail == 3 && st.files == 4 && st.ffree == 5)
        #expect(st.bsize == 6 && st.namelen == 7 && st.frsize == 8 && st.padding == 0)

        let lk = load(body(FUSELockOut(lock: FUSEFileLock(start: 1, end: 2, type: 3, pid: 4))), as: fuse_lk_out.self).lk
        #expect(lk.start == 1 && lk.end == 2 && lk.type == 3 && lk.pid == 4)

        var i = FUSEInitOut()
        i.major = 7; i.minor = 36; i.maxReadahead = 1; i.flags = 0x5_0000_0002; i.maxBackground = 3
        i.congestionThreshold = 4; i.maxWrite = 5; i.timeGranularity = 6; i.maxPages = 7; i.mapAlignment = 8
        let ci = load(body(i), as: fuse_init_out.self)
        #expect(ci.major == 7 && ci.minor == 36 && ci.max_readahead == 1 && ci.flags == 2 && ci.flags2 == 5)
        #expect(ci.max_background == 3 && ci.congestion_threshold == 4 && ci.max_write == 5)
        #expect(ci.time_gran == 6 && ci.max_pages == 7 && ci.map_alignment == 8)

        let header = encoded { FUSEReply.error(13, unique: 77, into: $0) }
        let ch = load(header, as: fuse_out_header.self)
        #expect(ch.len == 16 && ch.error == -13 && ch.unique == 77)
    }

    @Test func direntMatchesCLayout() {
        #expect(MemoryLayout<fuse_dirent>.offset(of: \.namelen) == 16)
        #expect(MemoryLayout<fuse_direntplus>.offset(of: \.dirent) == 128)
        let bytes = encoded { buffer in
            var w = FUSEDirentWriter(buffer: buffer, limit: 512)
            _ = Array("xy".utf8).withUnsafeBytes { w.append(ino: 3, offset: 4, type: 10, name: $0) }
            return w.length
        }
        let d = load(bytes, as: fuse_dirent.self)
        #expect(d.ino == 3 && d.off == 4 && d.namelen == 2 && d.type == 10)
    }
}
