#if canImport(Glibc)
import Glibc
#endif
import CFerry
import FerryCore
import Synchronization

/// The identity of a host file: device, inode number, mount id and which incarnation of
/// that inode number it is. Two lookups of the same file give equal keys; a file created
/// on a number a deleted file used gives a different key.
///
/// The inode number alone is not an identity: ext4 (like most file systems) gives a freed
/// number to the next file it creates, while the client may still hold a node for the
/// deleted one. `incarnation` is a digest of the file's kernel file handle, which carries
/// the file system's generation number, the same thing that tells an NFS server a handle
/// is stale. It is 0 only for a node that pins its host inode with a descriptor (no file
/// handle to be had): a number held open cannot be given to another file meanwhile.
public struct InodeKey: Hashable, Sendable {
    public var device: UInt64
    public var inode: UInt64
    public var mountID: Int32
    public var incarnation: UInt64
    public init(device: UInt64, inode: UInt64, mountID: Int32, incarnation: UInt64 = 0) {
        self.device = device; self.inode = inode; self.mountID = mountID; self.incarnation = incarnation
    }
}

/// A kernel file handle (`name_to_handle_at`), stored inline: no heap allocation.
struct KernelFileHandle {
    typealias Storage = (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
                         UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)
    var storage: Storage = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)  // 128 bytes = MAX_HANDLE_SZ
    var length: UInt32 = 0
    var type: Int32 = 0
    /// The mount `name_to_handle_at` found the file on.
    var mountID: Int32 = 0

    /// The handle of `name` in `directory` (the last component is not followed), or of
    /// `directory` itself with `emptyPath` and `AT_EMPTY_PATH`; nil with errno set when the
    /// file system gives none.
    init?(_ directory: Int32, _ name: UnsafePointer<CChar>, flags: Int32) {
        var length = UInt32(FERRY_MAX_HANDLE_SZ), type: Int32 = 0, mount: Int32 = 0
        let rc = withUnsafeMutableBytes(of: &storage) {
            ferry_name_to_handle(directory, name, flags, $0.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                 &length, &type, &mount)
        }
        if rc != 0 { return nil }
        self.length = length; self.type = type; self.mountID = mount
    }

    init() {}

    /// A digest of the handle (its type and bytes; the mount is in the key already), never
    /// 0, for `InodeKey.incarnation`. Seeded per process (Swift's Hasher): a guest cannot
    /// choose files whose digests collide.
    var digest: UInt64 {
        var hasher = Hasher()
        hasher.combine(type)
        withUnsafeBytes(of: storage) { hasher.combine(bytes: UnsafeRawBufferPointer(rebasing: $0[0..<Int(min(length, 128))])) }
        return UInt64(bitPattern: Int64(hasher.finalize())) | 1
    }
}

/// How many O_PATH descriptors the driver caches on inodes that have a file handle.
/// Inodes without a cached fd open one from their handle per operation.
final class DescriptorBudget: Sendable {
    let limit: Int
    let used = Atomic<Int>(0)
    init(limit: Int) { self.limit = max(0, limit) }

    @inline(__always)
    func tryAcquire() -> Bool {
        var current = used.load(ordering: .relaxed)
        while current < limit {
            let (exchanged, original) = used.compareExchange(expected: current, desired: current + 1, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
        return false
    }

    @inline(__always)
    func release() { used.wrappingSubtract(1, ordering: .relaxed) }
}

/// A node of the export. Holds its identity and file type, and either a kernel file handle
/// (plus, within the driver's budget, a cached O_PATH fd) or a permanent O_PATH fd.
///
/// The cached fd is installed once (compare-and-swap) and closed only in `deinit`: the core
/// holds a strong reference to the inode for the duration of every request, so no request
/// can ever use a closed descriptor.
public final class Inode: Sendable {
    public let key: InodeKey
    /// `S_IFMT` bits; a file's type never changes.
    public let fileType: UInt32
    /// An O_PATH fd held for the inode's whole life (root, files on another mount,
    /// file systems without handles, `.never` mode); -1 when the inode uses a handle.
    let pinnedFD: Int32
    let handle: KernelFileHandle
    /// A cached O_PATH fd counted against `budget`; -1 when none.
    let cachedFD: Atomic<Int32>
    let budget: DescriptorBudget?

    init(key: InodeKey, fileType: UInt32, pinnedFD: Int32) {
        self.key = key; self.fileType = fileType; self.pinnedFD = pinnedFD
        self.handle = KernelFileHandle(); self.cachedFD = Atomic(-1); self.budget = nil
    }

    init(key: InodeKey, fileType: UInt32, handle: KernelFileHandle, cachedFD: Int32, budget: DescriptorBudget) {
        self.key = key; self.fileType = fileType; self.pinnedFD = -1
        self.handle = handle; self.cachedFD = Atomic(cachedFD); self.budget = budget
    }

    var usesHandle: Bool { pinnedFD < 0 }
    var isDirectory: Bool { fileType == FileMode.directory }
    var isRegularFile: Bool { fileType == FileMode.regular }
    var isSymlink: Bool { fileType == FileMode.symlink }

    deinit {
        if pinnedFD >= 0 { close(pinnedFD) }
        let cached = cachedFD.load(ordering: .acquiring)
        if cached >= 0 {
            close(cached)
            budget?.release()
        }
    }
}

/// A file opened for I/O (OPEN / CREATE / TMPFILE). Closed when the core drops it.
public final class File: Sendable {
    public let fd: Int32
    init(fd: Int32) { self.fd = fd }
    deinit { close(fd) }
}

/// A directory opened for reading (OPENDIR). The lock keeps two READDIRs on the same
/// handle from interleaving the descriptor's position.
/// @unchecked Sendable: `buffer` (the getdents64 scratch) is only touched while `lock` is held; `fd` is immutable.
public final class Directory: @unchecked Sendable {
    public let fd: Int32
    /// Serialises READDIR on this handle: the fd's position and `buffer` are shared.
    let lock = Mutex<Void>(())
    /// getdents64 lands here. Owned by the handle (and used only under `lock`) so listing a
    /// directory allocates once per OPENDIR, not once per READDIR.
    let buffer: UnsafeMutableRawBufferPointer
    init(fd: Int32, bufferSize: Int) {
        self.fd = fd
        self.buffer = .allocate(byteCount: bufferSize, alignment: 8)
    }
    deinit {
        close(fd)
        buffer.deallocate()
    }
}
