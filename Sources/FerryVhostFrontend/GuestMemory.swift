import CFerry
import FerrySystem
import FerryVirtio
import Glibc

/// The "guest RAM" the front-end shares with a back-end: one memfd mapped MAP_SHARED,
/// carved up by a bump allocator. Guest-physical addresses start at 0, so an offset in
/// the region is its own GPA; ring addresses are sent as this process's virtual
/// addresses, as QEMU does.
/// @unchecked Sendable: the mapping is immutable; `next` (the bump allocator) is used only by the setting-up
/// thread, before queues are handed to their driving threads.
public final class GuestMemory: @unchecked Sendable {
    /// The memfd, sent to the back-end with SET_MEM_TABLE.
    public let fd: Int32
    public let size: Int
    /// Where this process mapped the region.
    public let base: UnsafeMutableRawPointer
    public let guestPhysicalBase: UInt64 = 0
    private var next = 0

    public init(size: Int) throws {
        let memfd: OwnedFD
        do { memfd = try OwnedFD(opening: { ferry_memfd_create("ferry-frontend-guest-ram", UInt32(FERRY_MFD_CLOEXEC)) }) } catch {
            throw FrontendError.system("memfd_create", errno: error.rawValue)
        }
        guard ftruncate(memfd.raw, off_t(size)) == 0 else { throw FrontendError.system("ftruncate", errno: errno) }
        guard let p = ferry_fe_mmap_shared(memfd.raw, size) else { throw FrontendError.system("mmap", errno: errno) }
        self.fd = memfd.take(); self.size = size; self.base = p
    }

    deinit {
        munmap(base, size)
        close(fd)
    }

    /// Reserves `count` bytes aligned to `alignment` (a power of two); returns the offset.
    public func allocate(_ count: Int, alignment: Int = 64) throws -> Int {
        let start = (next + alignment - 1) & ~(alignment - 1)
        guard start + count <= size else {
            throw FrontendError.unsupported("guest memory of \(size) bytes is full (wanted \(count) more)")
        }
        next = start + count
        return start
    }

    /// Bytes still unallocated.
    public var remaining: Int { size - next }

    /// The pointer for an offset (sound while `self` lives: the mapping is never moved).
    @inline(__always)
    public func pointer(_ offset: Int) -> UnsafeMutableRawPointer { base + offset }

    @inline(__always)
    public func guestAddress(_ offset: Int) -> UInt64 { guestPhysicalBase + UInt64(offset) }

    @inline(__always)
    public func userAddress(_ offset: Int) -> UInt64 { UInt64(UInt(bitPattern: base + offset)) }

    /// The region as SET_MEM_TABLE describes it.
    public var regionDescription: MemoryRegionDescription {
        MemoryRegionDescription(guestPhysicalAddress: guestPhysicalBase, size: UInt64(size),
                                     userAddress: userAddress(0), mmapOffset: 0)
    }
}
