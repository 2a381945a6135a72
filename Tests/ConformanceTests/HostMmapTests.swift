import FerryTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Shared mmap through `ferry mount --cache never` on the host kernel (6.6+ offers
/// FUSE_DIRECT_IO_ALLOW_MMAP): files are opened in direct I/O mode, and mapping them
/// MAP_SHARED works unless `--no-allow-mmap`. Without passthrough: a passthrough open is not
/// in direct I/O mode (PassthroughMountTests maps those).
@Suite(.serialized, .requires(.root, .devFUSE))
struct HostMmapTests {
    static let page = 4096

    /// Maps `path` (two pages of 'a', made here) MAP_SHARED read-write, checks it reads 'a',
    /// writes 'B' over the second page, msyncs and unmaps. Returns the mmap errno, or 0.
    func writeThroughSharedMapping(_ path: String) throws -> Int32 {
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        #expect(fd >= 0, "open: \(errno)")
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        let initial = [UInt8](repeating: UInt8(ascii: "a"), count: 2 * Self.page)
        #expect(initial.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == 2 * Self.page)
        guard let map = mmap(nil, 2 * Self.page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), map != MAP_FAILED else {
            return errno
        }
        // Sound: the mapping is 2 pages long and stays mapped until munmap below.
        let bytes = map.bindMemory(to: UInt8.self, capacity: 2 * Self.page)
        #expect((0..<(2 * Self.page)).allSatisfy { bytes[$0] == UInt8(ascii: "a") }, "the mapping does not show the file")
        (bytes + Self.page).update(repeating: UInt8(ascii: "B"), count: Self.page)
        #expect(msync(map, 2 * Self.page, MS_SYNC) == 0, "msync: \(errno)")
        #expect(munmap(map, 2 * Self.page) == 0)
        return 0
    }

    @Test(.timeLimit(.minutes(10)))
    func sharedMmapReadsAndWritesThroughAMountWithCacheNever() throws {
        let mount = try FerryMount(extraArguments: ["--cache", "never", "--passthrough", "off"])
        defer { mount.stop() }
        #expect(try writeThroughSharedMapping(mount.mountpoint + "/mapped") == 0, "mmap MAP_SHARED failed; ferry's log:\n\(mount.log)")
        let expected = [UInt8](repeating: UInt8(ascii: "a"), count: Self.page) + [UInt8](repeating: UInt8(ascii: "B"), count: Self.page)
        // What went through the mapping is in the backing directory itself.
        #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: mount.source + "/mapped"))) == expected)
    }

    /// virtiofsd's default, behind --no-allow-mmap.
    @Test(.timeLimit(.minutes(10)))
    func withoutAllowMmapASharedMappingFailsWithENODEV() throws {
        let mount = try FerryMount(extraArguments: ["--cache", "never", "--no-allow-mmap", "--passthrough", "off"])
        defer { mount.stop() }
        #expect(try writeThroughSharedMapping(mount.mountpoint + "/mapped") == ENODEV)
    }
}
