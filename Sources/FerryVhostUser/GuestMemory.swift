import CFerry
import FerryVirtio
#if canImport(Glibc)
import Glibc
#endif

/// One guest memory region mapped into this process (MAP_SHARED from the front-end's fd).
/// Unmapped when the last `GuestMemory` snapshot that uses it goes away.
/// @unchecked Sendable: every field is immutable after init and the mapping is released only in deinit;
/// guest memory itself is shared with the guest by design and accessed through checked ranges.
final class MappedRegion: @unchecked Sendable {
    let description: MemoryRegionDescription
    /// Host address of the region's first byte (guest-physical `description.guestPhysicalAddress`).
    let host: UnsafeMutableRawPointer
    private let mappingBase: UnsafeMutableRawPointer
    private let mappingLength: Int
    private let owned: Bool

    /// Maps `size` bytes of `fd` at `mmapOffset`. mmap wants a page-aligned offset, so the
    /// mapping starts at the page below it. Does not close `fd`.
    init(fd: Int32, description: MemoryRegionDescription) throws(VhostUserError) {
        let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        let d = description
        guard d.size > 0, d.size <= UInt64(Int.max) / 2 else { throw VhostUserError("memory region of size \(d.size)") }
        // Neither range may wrap around.
        let (_, o1) = d.guestPhysicalAddress.addingReportingOverflow(d.size)
        let (_, o2) = d.userAddress.addingReportingOverflow(d.size)
        let (_, o3) = d.mmapOffset.addingReportingOverflow(d.size)
        guard !o1, !o2, !o3 else { throw VhostUserError("memory region wraps around the address space") }
        let alignedOffset = d.mmapOffset & ~(page - 1)
        let slack = Int(d.mmapOffset - alignedOffset)
        let length = Int(d.size) + slack
        let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off_t(alignedOffset))
        guard let p, p != MAP_FAILED else {
            throw VhostUserError("mmap of a \(d.size)-byte memory region failed: errno \(errno)")
        }
        mappingBase = p
        mappingLength = length
        host = p + slack
        self.description = d
        owned = true
    }

    /// A region over memory this process already has (tests).
    init(unmanaged host: UnsafeMutableRawPointer, description: MemoryRegionDescription) {
        self.host = host; self.mappingBase = host; self.mappingLength = Int(description.size)
        self.description = description; owned = false
    }

    deinit { if owned { munmap(mappingBase, mappingLength) } }
}

/// An immutable snapshot of the guest's memory table. The queue threads hold one (under
/// the device's read lock) while they work; a new table makes a new snapshot.
///
/// All guest addresses go through `translate`, which refuses any range that is not wholly
/// inside one region.
final class GuestMemory: Sendable {
    enum AddressSpace { case guestPhysical, frontEndVirtual }

    let regions: [MappedRegion]

    init(regions: [MappedRegion]) { self.regions = regions }

    static let empty = GuestMemory(regions: [])

    /// The host pointer for `[address, address + length)`, or nil if that range is not
    /// entirely inside one mapped region (or wraps around).
    @inline(__always)
    func translate(_ address: UInt64, length: UInt64, space: AddressSpace = .guestPhysical) -> UnsafeMutableRawPointer? {
        let (end, overflow) = address.addingReportingOverflow(length)
        if overflow { return nil }
        for region in regions {
            let start = space == .guestPhysical ? region.description.guestPhysicalAddress : region.description.userAddress
            // start + size cannot overflow: checked when the region was mapped.
            let regionEnd = start &+ region.description.size
            if address >= start && address < regionEnd && end <= regionEnd {
                return region.host + Int(address - start)
            }
        }
        return nil
    }

    /// A table with `region` added; refuses a guest-physical or user range that overlaps one already there.
    func adding(_ region: MappedRegion) throws(VhostUserError) -> GuestMemory {
        let d = region.description
        for r in regions {
            let e = r.description
            if d.guestPhysicalAddress < e.guestPhysicalAddress &+ e.size && e.guestPhysicalAddress < d.guestPhysicalAddress &+ d.size {
                throw VhostUserError("memory region at guest address 0x\(String(d.guestPhysicalAddress, radix: 16)) overlaps another")
            }
        }
        return GuestMemory(regions: regions + [region])
    }

    /// A table without the region matching `d` (guest address, user address and size).
    func removing(_ d: MemoryRegionDescription) -> GuestMemory? {
        guard let i = regions.firstIndex(where: {
            $0.description.guestPhysicalAddress == d.guestPhysicalAddress && $0.description.userAddress == d.userAddress
                && $0.description.size == d.size
        }) else { return nil }
        var copy = regions
        copy.remove(at: i)
        return GuestMemory(regions: copy)
    }
}
