/// A decoded FUSE request. Payloads that carry names or data are views into the request
/// buffer (valid only while the transport holds that buffer), so decoding never allocates.
///
/// Names (`UnsafeRawBufferPointer`) exclude their terminating NUL, which the decoder has
/// checked is present right after them in the buffer. Names are *not* validated for
/// `/`, `.` or `..` here: the server core does that in one place.
public enum FUSERequest {
    case initialize(FUSEInitIn)
    case destroy
    case lookup(name: UnsafeRawBufferPointer)
    case forget(nlookup: UInt64)
    case batchForget(FUSEForgetList)
    case getattr(FUSEGetattrIn)
    case setattr(FUSESetattrIn)
    case readlink
    case symlink(name: UnsafeRawBufferPointer, target: UnsafeRawBufferPointer)
    case mknod(FUSEMknodIn, name: UnsafeRawBufferPointer)
    case mkdir(FUSEMkdirIn, name: UnsafeRawBufferPointer)
    case unlink(name: UnsafeRawBufferPointer)
    case rmdir(name: UnsafeRawBufferPointer)
    case rename(newDirectory: UInt64, flags: UInt32, oldName: UnsafeRawBufferPointer, newName: UnsafeRawBufferPointer)
    case link(oldNodeID: UInt64, newName: UnsafeRawBufferPointer)
    case open(FUSEOpenIn)
    case create(FUSECreateIn, name: UnsafeRawBufferPointer)
    case read(FUSEReadIn)
    /// `data` is exactly `FUSEWriteIn.size` bytes long.
    case write(FUSEWriteIn, data: UnsafeRawBufferPointer)
    case flush(FUSEFlushIn)
    case release(FUSEReleaseIn)
    case fsync(FUSEFsyncIn)
    case opendir(FUSEOpenIn)
    case readdir(FUSEReadIn)
    case readdirplus(FUSEReadIn)
    case releasedir(FUSEReleaseIn)
    case fsyncdir(FUSEFsyncIn)
    case statfs
    case setxattr(FUSESetxattrIn, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer)
    case getxattr(size: UInt32, name: UnsafeRawBufferPointer)
    case listxattr(size: UInt32)
    case removexattr(name: UnsafeRawBufferPointer)
    case access(mask: UInt32)
    case getlk(FUSELockIn)
    case setlk(FUSELockIn)
    case setlkw(FUSELockIn)
    case interrupt(unique: UInt64)
    case bmap(FUSEBmapIn)
    case ioctl(FUSEIoctlIn)
    case poll(FUSEPollIn)
    case fallocate(FUSEFallocateIn)
    case lseek(FUSELseekIn)
    case copyFileRange(FUSECopyFileRangeIn)
    case syncfs
    case tmpfile(FUSECreateIn)
    /// DAX mapping requests and NOTIFY_REPLY: decoded so they can be refused cleanly.
    case setupMapping
    case removeMapping
    case notifyReply
    /// An opcode this protocol version does not define.
    case unknown(opcode: UInt32)
}

/// Why a request could not be decoded. The server answers EINVAL (or drops the request
/// when not even the header could be read) and logs the reason.
public enum FUSEDecodeError: Error, Sendable, Equatable {
    /// Fewer than 40 bytes: there is no header, hence no `unique` to answer to.
    case truncatedHeader(available: Int)
    /// The header's length disagrees with the bytes the transport delivered.
    case lengthMismatch(claimed: UInt32, available: Int)
    /// The arguments of `opcode` are shorter than that opcode's fixed part.
    case truncatedArguments(opcode: UInt32, needed: Int, available: Int)
    /// A name or string is not NUL-terminated inside the request.
    case unterminatedString(opcode: UInt32)
    /// Bytes follow the NUL of a request's last name: a kernel never sends them, and a
    /// name is never silently cut short ("file\0../x" is not "file").
    case bytesAfterName(opcode: UInt32)
    /// The extension area is malformed (length beyond the request, bad entry sizes).
    case badExtension(opcode: UInt32)
    /// A count or size field inside the arguments contradicts the request length.
    case inconsistentCount(opcode: UInt32)
}

/// Negotiated facts the decoder needs: some argument layouts depend on INIT's outcome.
public struct FUSEDecodeOptions: Sendable, Equatable {
    /// FUSE_SETXATTR_EXT was negotiated: `fuse_setxattr_in` is 16 bytes, not 8.
    public var setxattrExtended: Bool
    public init(setxattrExtended: Bool = false) { self.setxattrExtended = setxattrExtended }
}

/// A decoded request with its header and the (validated) extension area.
public struct FUSEDecodedRequest {
    public var header: FUSEInHeader
    public var request: FUSERequest
    /// The raw extension area (`total_extlen * 8` bytes, possibly empty), already checked to
    /// be a well-formed sequence of `fuse_ext_header` records.
    public var extensions: UnsafeRawBufferPointer

    public init(header: FUSEInHeader, request: FUSERequest, extensions: UnsafeRawBufferPointer) {
        self.header = header; self.request = request; self.extensions = extensions
    }
}
