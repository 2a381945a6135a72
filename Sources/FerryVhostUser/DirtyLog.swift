import CFerry
import FerryVirtio
#if canImport(Glibc)
import Glibc
#endif

/// The front-end's dirty-page bitmap during live migration (SET_LOG_BASE with
/// LOG_SHMFD): one bit per 4 KiB page of guest-physical memory, bit `page % 8` of byte
/// `page / 8`. QEMU copies a page to the destination again when its bit is set, so every
/// guest-memory write the device makes while logging is on must set the bits of the pages
/// it touched, after the write (`ferry_atomic_or_u8` is a release).
///
/// Unmapped when the last holder lets go: a queue thread holds it for a batch, so a new
/// SET_LOG_BASE (QEMU grows the log when guest memory grows) never pulls it from under one.
/// @unchecked Sendable: the mapping is immutable after init and unmapped only in deinit; bits are set with
/// atomic ORs (`ferry_atomic_or_u8`), so queue threads may mark pages concurrently.
final class DirtyLog: @unchecked Sendable {
    let description: LogDescription
    private let bitmap: UnsafeMutablePointer<UInt8>
    private let mappingBase: UnsafeMutableRawPointer
    private let mappingLength: Int

    /// Maps the log from `fd` (not closed here). Refuses a log that does not lie inside
    /// the file: touching a page past a memfd's end would kill the daemon with SIGBUS.
    init(fd: Int32, description d: LogDescription) throws(VhostUserError) {
        guard d.size > 0, d.size <= 1 << 40 else { throw VhostUserError("dirty log of \(d.size) bytes") }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw VhostUserError("fstat of the dirty log fd failed: errno \(errno)") }
        let (end, overflow) = d.offset.addingReportingOverflow(d.size)
        guard !overflow, st.st_size >= 0, end <= UInt64(st.st_size) else {
            throw VhostUserError("dirty log [\(d.offset), +\(d.size)) is not inside its \(st.st_size)-byte file")
        }
        let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        let aligned = d.offset & ~(page - 1)
        let slack = Int(d.offset - aligned)
        let length = Int(d.size) + slack
        let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off_t(aligned))
        guard let p, p != MAP_FAILED else { throw VhostUserError("mmap of the dirty log failed: errno \(errno)") }
        mappingBase = p
        mappingLength = length
        bitmap = (p + slack).assumingMemoryBound(to: UInt8.self)
        description = d
    }

    deinit { munmap(mappingBase, mappingLength) }

    /// Marks the pages of `[address, address + length)` dirty. Pages the log does not
    /// cover are skipped: the front-end sized it for all of guest memory, so only a
    /// front-end lying about its own log could get there.
    @inline(__always)
    func mark(_ address: UInt64, length: Int) {
        guard length > 0 else { return }
        let (last, overflow) = address.addingReportingOverflow(UInt64(length) - 1)
        guard !overflow else { return }
        let pages = description.size &* 8
        var page = address / LogDescription.pageSize
        let lastPage = last / LogDescription.pageSize
        while page <= lastPage && page < pages {
            ferry_atomic_or_u8(bitmap + Int(page / 8), UInt8(1) << UInt8(page % 8))
            page += 1
        }
    }

    /// Marks the guest pages behind the first `count` bytes of `vectors` (host pointers
    /// into `memory`'s regions), which the device has just written.
    func mark(written vectors: IOVectorsView, count: Int, memory: GuestMemory) {
        var left = count
        for i in 0..<vectors.count where left > 0 {
            let v = vectors.base[i]
            let n = min(left, v.iov_len)
            if let gpa = memory.guestPhysicalAddress(of: UnsafeRawPointer(v.iov_base!)) { mark(gpa, length: n) }
            left -= n
        }
    }
}

extension GuestMemory {
    /// The guest-physical address of a host pointer into one of the regions (the reverse
    /// of `translate`; only dirty logging needs it, so the request path keeps host
    /// pointers alone).
    func guestPhysicalAddress(of p: UnsafeRawPointer) -> UInt64? {
        for region in regions {
            let start = UnsafeRawPointer(region.host)
            if p >= start && p < start + Int(region.description.size) {
                return region.description.guestPhysicalAddress + UInt64(p - start)
            }
        }
        return nil
    }
}
