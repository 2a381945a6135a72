import FerryFUSE
import Testing

/// Requests whose arguments carry NUL-terminated names.
@Suite struct DecodeNameRequestTests {
    @Test func headerFieldsDecode() throws {
        try withDecoded(request(.lookup) { $0.cstr("a") }) { d in
            #expect(d.header == FUSEInHeader(length: 42, opcode: 1, unique: Sample.unique, nodeID: Sample.nodeID,
                                             uid: Sample.uid, gid: Sample.gid, pid: Sample.pid, totalExtensionLength: 0))
            #expect(d.extensions.count == 0)
        }
    }

    @Test func lookupDecodesNameWithoutTerminator() throws {
        try withDecoded(request(.lookup) { $0.cstr("hello.txt") }) { d in
            guard case let .lookup(name) = d.request else { return unexpected(d.request) }
            #expect(name.count == 9)
            #expect(text(name) == "hello.txt")
        }
    }

    @Test func lookupAcceptsEmptyName() throws {
        // Rejecting bad names (empty, "/", "..") is the core's job, not the wire's.
        try withDecoded(request(.lookup) { $0.cstr("") }) { d in
            guard case let .lookup(name) = d.request else { return unexpected(d.request) }
            #expect(text(name) == "")
        }
    }

    @Test func unlinkRmdirRemovexattrDecodeName() throws {
        try withDecoded(request(.unlink) { $0.cstr("file") }) { d in
            guard case let .unlink(name) = d.request else { return unexpected(d.request) }
            #expect(text(name) == "file")
        }
        try withDecoded(request(.rmdir) { $0.cstr("dir") }) { d in
            guard case let .rmdir(name) = d.request else { return unexpected(d.request) }
            #expect(text(name) == "dir")
        }
        try withDecoded(request(.removexattr) { $0.cstr("user.x") }) { d in
            guard case let .removexattr(name) = d.request else { return unexpected(d.request) }
            #expect(text(name) == "user.x")
        }
    }

    @Test func symlinkDecodesNameThenTarget() throws {
        try withDecoded(request(.symlink) { $0.cstr("link"); $0.cstr("../target/path") }) { d in
            guard case let .symlink(name, target) = d.request else { return unexpected(d.request) }
            #expect(text(name) == "link")
            #expect(text(target) == "../target/path")
        }
    }

    @Test func mknodDecodesStructAndName() throws {
        let bytes = request(.mknod) { w in
            w.u32(0o020644); w.u32(0x0801); w.u32(0o022); w.u32(0xFFFF_FFFF); w.cstr("dev")
        }
        try withDecoded(bytes) { d in
            guard case let .mknod(fixed, name) = d.request else { return unexpected(d.request) }
            #expect(fixed == FUSEMknodIn(mode: 0o020644, rdev: 0x0801, umask: 0o022))
            #expect(text(name) == "dev")
        }
    }

    @Test func mkdirDecodesStructAndName() throws {
        try withDecoded(request(.mkdir) { w in w.u32(0o40755); w.u32(0o077); w.cstr("sub") }) { d in
            guard case let .mkdir(fixed, name) = d.request else { return unexpected(d.request) }
            #expect(fixed == FUSEMkdirIn(mode: 0o40755, umask: 0o077))
            #expect(text(name) == "sub")
        }
    }

    @Test func createDecodesStructAndName() throws {
        try withDecoded(request(.create) { w in w.u32(0o1101); w.u32(0o100600); w.u32(0o022); w.u32(1); w.cstr("new") }) { d in
            guard case let .create(fixed, name) = d.request else { return unexpected(d.request) }
            #expect(fixed == FUSECreateIn(flags: 0o1101, mode: 0o100600, umask: 0o022, openFlags: 1))
            #expect(text(name) == "new")
        }
    }

    @Test func tmpfileDecodesCreateStructWithoutName() throws {
        try withDecoded(request(.tmpfile) { w in w.u32(0o20000002); w.u32(0o100600); w.u32(0o022); w.u32(0) }) { d in
            guard case let .tmpfile(fixed) = d.request else { return unexpected(d.request) }
            #expect(fixed == FUSECreateIn(flags: 0o20000002, mode: 0o100600, umask: 0o022, openFlags: 0))
        }
    }

    @Test func renameDecodesNewDirAndBothNamesWithZeroFlags() throws {
        try withDecoded(request(.rename) { w in w.u64(77); w.cstr("old"); w.cstr("new-name") }) { d in
            guard case let .rename(newDirectory, flags, oldName, newName) = d.request else { return unexpected(d.request) }
            #expect(newDirectory == 77)
            #expect(flags == 0)
            #expect(text(oldName) == "old")
            #expect(text(newName) == "new-name")
        }
    }

    @Test func rename2DecodesFlags() throws {
        try withDecoded(request(.rename2) { w in w.u64(78); w.u32(2); w.u32(0xDEAD); w.cstr("a"); w.cstr("b") }) { d in
            guard case let .rename(newDirectory, flags, oldName, newName) = d.request else { return unexpected(d.request) }
            #expect(newDirectory == 78)
            #expect(flags == 2)   // RENAME_EXCHANGE
            #expect(text(oldName) == "a")
            #expect(text(newName) == "b")
        }
    }

    @Test func linkDecodesOldNodeAndName() throws {
        try withDecoded(request(.link) { w in w.u64(0xABCD); w.cstr("hard") }) { d in
            guard case let .link(oldNodeID, newName) = d.request else { return unexpected(d.request) }
            #expect(oldNodeID == 0xABCD)
            #expect(text(newName) == "hard")
        }
    }

    @Test func getxattrDecodesSizeAndName() throws {
        try withDecoded(request(.getxattr) { w in w.u32(4096); w.u32(0); w.cstr("user.tag") }) { d in
            guard case let .getxattr(size, name) = d.request else { return unexpected(d.request) }
            #expect(size == 4096)
            #expect(text(name) == "user.tag")
        }
    }

    @Test func setxattrCompatDecodesEightByteStructNameAndValue() throws {
        try withDecoded(request(.setxattr) { w in w.u32(3); w.u32(1); w.cstr("user.k"); w.raw([1, 0, 2]) }) { d in
            guard case let .setxattr(fixed, name, value) = d.request else { return unexpected(d.request) }
            #expect(fixed == FUSESetxattrIn(size: 3, flags: 1, setxattrFlags: 0))
            #expect(text(name) == "user.k")
            #expect(Array(value) == [1, 0, 2])
        }
    }

    @Test func setxattrExtendedDecodesSixteenByteStruct() throws {
        let bytes = request(.setxattr) { w in w.u32(2); w.u32(2); w.u32(1); w.u32(0); w.cstr("system.posix_acl_access"); w.raw([9, 8]) }
        try withDecoded(bytes, options: FUSEDecodeOptions(setxattrExtended: true)) { d in
            guard case let .setxattr(fixed, name, value) = d.request else { return unexpected(d.request) }
            #expect(fixed == FUSESetxattrIn(size: 2, flags: 2, setxattrFlags: 1))
            #expect(text(name) == "system.posix_acl_access")
            #expect(Array(value) == [9, 8])
        }
    }

    @Test func setxattrAcceptsEmptyValue() throws {
        try withDecoded(request(.setxattr) { w in w.u32(0); w.u32(0); w.cstr("user.empty") }) { d in
            guard case let .setxattr(fixed, _, value) = d.request else { return unexpected(d.request) }
            #expect(fixed.size == 0)
            #expect(value.count == 0)
        }
    }
}
