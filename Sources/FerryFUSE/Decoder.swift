/// Turns one request's bytes into a `FUSEDecodedRequest` without copying or allocating.
///
/// The transport hands over exactly one request; everything the kernel (or a guest, over
/// virtio-fs) claims about lengths is checked against those bytes before any view into
/// them is returned. Unknown opcodes decode to `.unknown` rather than failing, so the
/// server can answer ENOSYS.
public enum FUSEDecoder {
    /// `FUSE_INIT_EXT`: the kernel's `flags2` word is meaningful.
    static let initExtFlag: UInt32 = 1 << 30

    /// Reads the 40-byte `fuse_in_header`. Does not compare its length with `bytes.count`.
    public static func decodeHeader(_ bytes: UnsafeRawBufferPointer) throws(FUSEDecodeError) -> FUSEInHeader {
        guard bytes.count >= FUSEInHeader.size else { throw .truncatedHeader(available: bytes.count) }
        let r = FUSEByteReader(bytes, opcode: 0)
        return FUSEInHeader(length: r.u32(0), opcode: r.u32(4), unique: r.u64(8), nodeID: r.u64(16),
                            uid: r.u32(24), gid: r.u32(28), pid: r.u32(32), totalExtensionLength: r.u16(36))
    }

    /// Decodes a complete request: header, arguments and the validated extension area.
    public static func decode(_ bytes: UnsafeRawBufferPointer, options: FUSEDecodeOptions) throws(FUSEDecodeError) -> FUSEDecodedRequest {
        try decode(bytes, externalPayloadLength: 0, options: options)
    }

    /// Decodes a request whose WRITE data is not in `bytes` but stays where the transport
    /// found it (a guest's buffers): `bytes` is the header and `fuse_write_in` only, and
    /// `externalPayloadLength` is how many data bytes follow elsewhere. Then `.write`'s
    /// `data` is empty and the header's length must cover both parts. Only WRITE may have
    /// an external payload.
    public static func decode(_ bytes: UnsafeRawBufferPointer, externalPayloadLength: Int,
                              options: FUSEDecodeOptions) throws(FUSEDecodeError) -> FUSEDecodedRequest {
        let header = try decodeHeader(bytes)
        guard externalPayloadLength >= 0, Int(header.length) == bytes.count + externalPayloadLength else {
            throw .lengthMismatch(claimed: header.length, available: bytes.count + max(0, externalPayloadLength))
        }
        if externalPayloadLength > 0 {
            guard header.opcode == FUSEOpcode.write.rawValue, header.totalExtensionLength == 0 else {
                throw .inconsistentCount(opcode: header.opcode)
            }
            let arguments = FUSEByteReader(UnsafeRawBufferPointer(rebasing: bytes[FUSEInHeader.size...]), opcode: header.opcode)
            let fixed = try writeIn(arguments)
            guard arguments.count == FUSEWriteIn.size, Int(fixed.size) == externalPayloadLength else {
                throw .inconsistentCount(opcode: header.opcode)
            }
            let none = UnsafeRawBufferPointer(rebasing: bytes[bytes.count...])
            return FUSEDecodedRequest(header: header, request: .write(fixed, data: none), extensions: none)
        }
        let opcode = header.opcode
        let bodyCount = bytes.count - FUSEInHeader.size
        let extensionCount = Int(header.totalExtensionLength) * 8
        guard extensionCount <= bodyCount else { throw .badExtension(opcode: opcode) }
        let argumentsEnd = bytes.count - extensionCount
        let extensions = UnsafeRawBufferPointer(rebasing: bytes[argumentsEnd...])
        guard FUSEExtensions.isWellFormed(extensions) else { throw .badExtension(opcode: opcode) }
        let arguments = FUSEByteReader(UnsafeRawBufferPointer(rebasing: bytes[FUSEInHeader.size..<argumentsEnd]),
                                       opcode: opcode)
        let request = try decodeArguments(arguments, options: options)
        return FUSEDecodedRequest(header: header, request: request, extensions: extensions)
    }

    // One switch keeps the opcode -> layout table readable in one place; the struct
    // readers live in ArgumentDecoding.swift.
    private static func decodeArguments(_ a: FUSEByteReader, options: FUSEDecodeOptions) throws(FUSEDecodeError) -> FUSERequest {
        guard let opcode = FUSEOpcode(rawValue: a.opcode) else { return .unknown(opcode: a.opcode) }
        switch opcode {
        case .`init`:
            return .initialize(try initIn(a))
        case .destroy:
            return .destroy
        case .lookup:
            return .lookup(name: try a.lastString(at: 0))
        case .forget:
            try a.require(8)
            return .forget(nlookup: a.u64(0))
        case .batchForget:
            return .batchForget(try forgetList(a))
        case .getattr:
            return .getattr(try getattrIn(a))
        case .setattr:
            return .setattr(try setattrIn(a))
        case .readlink:
            return .readlink
        case .symlink:
            let (name, next) = try a.string(at: 0)
            let target = try a.lastString(at: next)
            return .symlink(name: name, target: target)
        case .mknod:
            let fixed = try mknodIn(a)
            return .mknod(fixed, name: try a.lastString(at: FUSEMknodIn.size))
        case .mkdir:
            let fixed = try mkdirIn(a)
            return .mkdir(fixed, name: try a.lastString(at: FUSEMkdirIn.size))
        case .unlink:
            return .unlink(name: try a.lastString(at: 0))
        case .rmdir:
            return .rmdir(name: try a.lastString(at: 0))
        case .rename:
            // fuse_rename_in { newdir }
            try a.require(8)
            let (old, next) = try a.string(at: 8)
            let new = try a.lastString(at: next)
            return .rename(newDirectory: a.u64(0), flags: 0, oldName: old, newName: new)
        case .rename2:
            // fuse_rename2_in { newdir, flags, padding }
            try a.require(16)
            let (old, next) = try a.string(at: 16)
            let new = try a.lastString(at: next)
            return .rename(newDirectory: a.u64(0), flags: a.u32(8), oldName: old, newName: new)
        case .link:
            // fuse_link_in { oldnodeid }
            try a.require(8)
            return .link(oldNodeID: a.u64(0), newName: try a.lastString(at: 8))
        case .open:
            return .open(try openIn(a))
        case .opendir:
            return .opendir(try openIn(a))
        case .create:
            let fixed = try createIn(a)
            return .create(fixed, name: try a.lastString(at: FUSECreateIn.size))
        case .tmpfile:
            return .tmpfile(try createIn(a))
        case .read:
            return .read(try readIn(a))
        case .readdir:
            return .readdir(try readIn(a))
        case .readdirplus:
            return .readdirplus(try readIn(a))
        case .write:
            let fixed = try writeIn(a)
            // The data is the rest of the arguments and must be exactly what `size` claims.
            guard a.count - FUSEWriteIn.size == Int(fixed.size) else { throw .inconsistentCount(opcode: a.opcode) }
            return .write(fixed, data: a.slice(FUSEWriteIn.size, a.count))
        case .flush:
            return .flush(try flushIn(a))
        case .release:
            return .release(try releaseIn(a))
        case .releasedir:
            return .releasedir(try releaseIn(a))
        case .fsync:
            return .fsync(try fsyncIn(a))
        case .fsyncdir:
            return .fsyncdir(try fsyncIn(a))
        case .statfs:
            return .statfs
        case .setxattr:
            return try setxattr(a, extended: options.setxattrExtended)
        case .getxattr:
            // fuse_getxattr_in { size, padding }
            try a.require(8)
            return .getxattr(size: a.u32(0), name: try a.lastString(at: 8))
        case .listxattr:
            try a.require(8)
            return .listxattr(size: a.u32(0))
        case .removexattr:
            return .removexattr(name: try a.lastString(at: 0))
        case .access:
            // fuse_access_in { mask, padding }
            try a.require(8)
            return .access(mask: a.u32(0))
        case .getlk:
            return .getlk(try lockIn(a))
        case .setlk:
            return .setlk(try lockIn(a))
        case .setlkw:
            return .setlkw(try lockIn(a))
        case .interrupt:
            try a.require(8)
            return .interrupt(unique: a.u64(0))
        case .bmap:
            return .bmap(try bmapIn(a))
        case .ioctl:
            // Any in-data after the struct is ignored: the server does not serve ioctls.
            return .ioctl(try ioctlIn(a))
        case .poll:
            return .poll(try pollIn(a))
        case .fallocate:
            return .fallocate(try fallocateIn(a))
        case .lseek:
            return .lseek(try lseekIn(a))
        case .copyFileRange:
            return .copyFileRange(try copyFileRangeIn(a))
        case .syncfs:
            // fuse_syncfs_in is only padding, but the kernel always sends it.
            try a.require(8)
            return .syncfs
        case .setupMapping:
            return .setupMapping
        case .removeMapping:
            return .removeMapping
        case .notifyReply:
            return .notifyReply
        }
    }
}
