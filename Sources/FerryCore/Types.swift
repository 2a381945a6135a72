#if canImport(Glibc)
import Glibc
#endif

/// A point in time with nanoseconds, as file systems keep it.
public struct Timestamp: Sendable, Equatable {
    public var seconds: Int64
    public var nanoseconds: UInt32
    public init(seconds: Int64, nanoseconds: UInt32) { self.seconds = seconds; self.nanoseconds = nanoseconds }
}

/// What a driver reports about a file: `struct stat` in Swift terms.
public struct Attributes: Sendable, Equatable {
    /// The backend's inode number, shown to the guest as `st_ino`.
    public var inode: UInt64
    public var size: UInt64
    /// 512-byte blocks allocated.
    public var blocks: UInt64
    public var accessTime: Timestamp
    public var modificationTime: Timestamp
    public var changeTime: Timestamp
    /// File type and permission bits (`S_IFMT | 07777`).
    public var mode: UInt32
    public var linkCount: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var rdev: UInt32
    public var blockSize: UInt32

    public init(inode: UInt64 = 0, size: UInt64 = 0, blocks: UInt64 = 0,
                accessTime: Timestamp = .init(seconds: 0, nanoseconds: 0),
                modificationTime: Timestamp = .init(seconds: 0, nanoseconds: 0),
                changeTime: Timestamp = .init(seconds: 0, nanoseconds: 0),
                mode: UInt32 = 0, linkCount: UInt32 = 0, uid: UInt32 = 0, gid: UInt32 = 0,
                rdev: UInt32 = 0, blockSize: UInt32 = 4096) {
        self.inode = inode; self.size = size; self.blocks = blocks
        self.accessTime = accessTime; self.modificationTime = modificationTime; self.changeTime = changeTime
        self.mode = mode; self.linkCount = linkCount; self.uid = uid; self.gid = gid
        self.rdev = rdev; self.blockSize = blockSize
    }

    public var fileType: UInt32 { mode & UInt32(S_IFMT) }
    public var isDirectory: Bool { fileType == UInt32(S_IFDIR) }
    public var isRegularFile: Bool { fileType == UInt32(S_IFREG) }
    public var isSymlink: Bool { fileType == UInt32(S_IFLNK) }
}

/// Who is asking: the caller's credentials as the kernel (or guest kernel) sent them,
/// after the export's id mapping. Drivers act with these rights, never the daemon's.
/// (Unchecked Sendable: `groups` points into the request buffer, owned by one request.)
public struct Credentials: @unchecked Sendable {
    public var uid: UInt32
    public var gid: UInt32
    public var pid: UInt32
    /// Supplementary groups when the kernel sent them (FUSE_EXT_GROUPS), else empty.
    /// A view into the request buffer: valid only during the request.
    public var groups: UnsafeBufferPointer<UInt32>
    /// The caller's umask for create-type operations, when the kernel leaves masking to us.
    public var umask: UInt32

    public init(uid: UInt32, gid: UInt32, pid: UInt32, groups: UnsafeBufferPointer<UInt32> = .init(start: nil, count: 0), umask: UInt32 = 0) {
        self.uid = uid; self.gid = gid; self.pid = pid; self.groups = groups; self.umask = umask
    }

    public static let root = Credentials(uid: 0, gid: 0, pid: 0)
    /// Most supplementary groups a request may carry.
    public static let maximumGroups = 32
}

/// A single path component the core has already validated: 1 to 255 bytes, no `/`,
/// no NUL, not `.` or `..`, and followed in memory by a NUL so it can be passed to C.
/// A view into the request buffer: valid only during the request.
/// @unchecked Sendable: a read-only view into the request buffer, which one request owns while it runs.
public struct FileName: @unchecked Sendable {
    /// The name's bytes, without the terminating NUL.
    public let bytes: UnsafeRawBufferPointer

    /// Only the core (and tests) make names: through `validated(_:)`.
    init(unchecked bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    /// The NUL-terminated name, for C calls.
    public var cString: UnsafePointer<CChar> {
        // Sound: `validated` checked that a NUL byte follows `bytes` in the same buffer.
        bytes.baseAddress!.assumingMemoryBound(to: CChar.self)
    }

    public var count: Int { bytes.count }

    /// Checks a guest-supplied name. `bytes` must be followed in memory by a NUL byte
    /// (the FUSE decoder guarantees it).
    public static func validated(_ bytes: UnsafeRawBufferPointer) -> Result<FileName, Errno> {
        let n = bytes.count
        if n == 0 { return .failure(.invalid) }
        if n > 255 { return .failure(.nameTooLong) }
        if n == 1 && bytes[0] == UInt8(ascii: ".") { return .failure(.invalid) }
        if n == 2 && bytes[0] == UInt8(ascii: ".") && bytes[1] == UInt8(ascii: ".") { return .failure(.invalid) }
        for b in bytes where b == UInt8(ascii: "/") || b == 0 { return .failure(.invalid) }
        return .success(FileName(unchecked: bytes))
    }

    /// For tests and diagnostics: the name as a Swift string (allocates).
    public var string: String { String(decoding: bytes, as: UTF8.self) }
}

/// A list of buffers (`struct iovec`) that data is read into or written from: the
/// caller's memory (a guest's buffers, or the transport's), so drivers can use
/// `preadv`/`pwritev` straight on it.
/// @unchecked Sendable: the vectors and the memory they describe belong to one request while it runs.
public struct IOVectors: @unchecked Sendable {
    public let base: UnsafeMutablePointer<iovec>
    public let count: Int

    public init(base: UnsafeMutablePointer<iovec>, count: Int) { self.base = base; self.count = count }

    /// Total bytes covered.
    public var totalLength: Int {
        var total = 0
        for i in 0..<count { total += base[i].iov_len }
        return total
    }

    /// Copies `source` into the buffers, starting at byte `offset` of the list; returns bytes copied.
    /// For drivers whose backend hands back its own buffer (NFS, RADOS).
    @discardableResult
    public func copyIn(_ source: UnsafeRawBufferPointer, at offset: Int = 0) -> Int {
        walk(from: offset, limit: source.count) { vector, done, n in
            vector.copyMemory(from: source.baseAddress! + done, byteCount: n)
        }
    }

    /// Copies out of the buffers into `destination`; returns bytes copied.
    @discardableResult
    public func copyOut(into destination: UnsafeMutableRawBufferPointer, from offset: Int = 0) -> Int {
        walk(from: offset, limit: destination.count) { vector, done, n in
            (destination.baseAddress! + done).copyMemory(from: vector, byteCount: n)
        }
    }

    /// Runs `body` with the iovecs that cover up to `limit` bytes from byte `offset` on (at
    /// most `maxPieces` of them), for `readv`/`preadv` into part of the buffers.
    public func withSlice<R>(from offset: Int, limit: Int, maxPieces: Int = 64,
                             _ body: (UnsafeMutableBufferPointer<iovec>) -> R) -> R {
        withUnsafeTemporaryAllocation(of: iovec.self, capacity: max(1, min(count, maxPieces))) { pieces in
            var used = 0
            _ = walk(from: offset, limit: limit) { vector, _, n in
                guard used < pieces.count else { return }
                pieces[used] = iovec(iov_base: vector, iov_len: n)
                used += 1
            }
            return body(UnsafeMutableBufferPointer(rebasing: pieces[0..<used]))
        }
    }

    /// Visits up to `limit` bytes of the buffers from byte `offset` on, a piece at a time:
    /// (where in the buffers, bytes done so far, bytes in this piece). Returns bytes visited.
    private func walk(from offset: Int, limit: Int, _ piece: (UnsafeMutableRawPointer, Int, Int) -> Void) -> Int {
        var skip = offset, done = 0
        for i in 0..<count where done < limit {
            let length = base[i].iov_len
            if skip >= length { skip -= length; continue }
            let n = min(length - skip, limit - done)
            piece(base[i].iov_base! + skip, done, n)
            done += n; skip = 0
        }
        return done
    }
}

/// A change SETATTR asks for. Fields left nil are not touched.
public struct AttributeChanges: Sendable, Equatable {
    public enum TimeChange: Sendable, Equatable { case now, set(Timestamp) }
    public var mode: UInt32?
    public var uid: UInt32?
    public var gid: UInt32?
    public var size: UInt64?
    public var accessTime: TimeChange?
    public var modificationTime: TimeChange?
    /// FATTR_KILL_SUIDGID: the kernel asks the server to clear setuid/setgid with this change.
    public var killSuidGid: Bool
    public init(mode: UInt32? = nil, uid: UInt32? = nil, gid: UInt32? = nil, size: UInt64? = nil,
                accessTime: TimeChange? = nil, modificationTime: TimeChange? = nil, killSuidGid: Bool = false) {
        self.mode = mode; self.uid = uid; self.gid = gid; self.size = size
        self.accessTime = accessTime; self.modificationTime = modificationTime; self.killSuidGid = killSuidGid
    }
}

/// What STATFS reports.
public struct FileSystemStatistics: Sendable, Equatable {
    public var blocks: UInt64, freeBlocks: UInt64, availableBlocks: UInt64
    public var files: UInt64, freeFiles: UInt64
    public var blockSize: UInt32, fragmentSize: UInt32, maximumNameLength: UInt32
    public init(blocks: UInt64, freeBlocks: UInt64, availableBlocks: UInt64, files: UInt64, freeFiles: UInt64,
                blockSize: UInt32, fragmentSize: UInt32, maximumNameLength: UInt32) {
        self.blocks = blocks; self.freeBlocks = freeBlocks; self.availableBlocks = availableBlocks
        self.files = files; self.freeFiles = freeFiles
        self.blockSize = blockSize; self.fragmentSize = fragmentSize; self.maximumNameLength = maximumNameLength
    }
}

/// One directory entry as a driver reports it during READDIR.
public struct DirectoryEntry {
    /// The name's bytes. A NUL byte must follow them in memory (getdents64 gives that
    /// for free) so READDIRPLUS can look the name up. A view valid only during the callback.
    public var name: UnsafeRawBufferPointer
    public var inode: UInt64
    /// The `DT_*` type, or `DT_UNKNOWN`.
    public var type: UInt32
    /// The offset to resume after this entry.
    public var nextOffset: UInt64
    public init(name: UnsafeRawBufferPointer, inode: UInt64, type: UInt32, nextOffset: UInt64) {
        self.name = name; self.inode = inode; self.type = type; self.nextOffset = nextOffset
    }
    /// True for `.` and `..`, which READDIRPLUS reports without a lookup.
    public var isDotOrDotDot: Bool {
        (name.count == 1 && name[0] == 0x2E) || (name.count == 2 && name[0] == 0x2E && name[1] == 0x2E)
    }
}

/// A POSIX record lock (F_GETLK/F_SETLK) in byte-range terms.
public struct RecordLock: Sendable, Equatable {
    public var start: UInt64
    /// Last byte covered, inclusive; `toEndOfFile` for "to end of file".
    public var end: UInt64
    /// F_RDLCK, F_WRLCK or F_UNLCK.
    public var type: Int32
    public var pid: UInt32
    public init(start: UInt64, end: UInt64, type: Int32, pid: UInt32) {
        self.start = start; self.end = end; self.type = type; self.pid = pid
    }
    /// The `end` of a lock that runs to the end of the file: the kernel sends OFFSET_MAX and
    /// answers EIO to a GETLK reply beyond it (so never UInt64.max).
    public static let toEndOfFile = UInt64(Int64.max)
}
