import FerryCore
@testable import FerryRADOS
import FerryTestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// CREATE comes after the kernel's negative LOOKUP, so the name may exist by then (another
/// client made it). Without O_EXCL the RADOS backend opens that file, as the POSIX and NFS
/// backends and open(2) do; with O_EXCL it refuses (EEXIST) and leaves it alone.
@Suite("RADOS CREATE of a name that exists", .serialized, .requires(.ceph))
struct RADOSCreateExistingTests {
    static func write(_ driver: RADOSDriver, _ file: RADOSFile, _ bytes: [UInt8]) throws {
        var data = bytes
        try data.withUnsafeMutableBytes { raw in
            var v = iovec(iov_base: raw.baseAddress, iov_len: raw.count)
            let n = try driver.write(file, offset: 0, from: IOVectors(base: &v, count: 1), killSuidGid: false, root)
            #expect(n == bytes.count)
        }
    }

    @Test func createWithoutExclusiveOpensTheExistingFileAndTruncatesItWithOTrunc() throws {
        let driver = try RADOSDriver(target: try freshTarget("create-existing"))
        defer { driver.close() }
        let top = try driver.root().inode
        let (first, opened) = try withName("f") { try driver.create(top, $0, mode: 0o644, flags: O_RDWR, root) }
        try Self.write(driver, opened.file, Array("someone else's".utf8))
        driver.release(opened.file, flags: O_RDWR, root)

        let (again, reopened) = try withName("f") { try driver.create(top, $0, mode: 0o600, flags: O_RDWR, root) }
        #expect(again.key == first.key, "the same file, not a new one")
        #expect(again.attributes.size == 14)
        #expect(again.attributes.mode & 0o7777 == 0o644, "an open does not change the mode")
        driver.release(reopened.file, flags: O_RDWR, root)

        let (truncated, emptied) = try withName("f") { try driver.create(top, $0, mode: 0o644, flags: O_RDWR | O_TRUNC, root) }
        #expect(truncated.key == first.key)
        #expect(truncated.attributes.size == 0)
        #expect(try driver.getattr(first.inode, nil, root).size == 0)
        driver.release(emptied.file, flags: O_RDWR, root)
    }

    @Test func exclusiveCreateOfAnExistingNameFailsAndLeavesTheFileAlone() throws {
        let driver = try RADOSDriver(target: try freshTarget("create-exclusive"))
        defer { driver.close() }
        let top = try driver.root().inode
        let (first, opened) = try withName("f") { try driver.create(top, $0, mode: 0o644, flags: O_RDWR, root) }
        try Self.write(driver, opened.file, Array("kept".utf8))
        driver.release(opened.file, flags: O_RDWR, root)
        #expect(throws: Errno.exists) {
            try withName("f") { try driver.create(top, $0, mode: 0o644, flags: O_RDWR | O_EXCL | O_TRUNC, root) }
        }
        #expect(try driver.getattr(first.inode, nil, root).size == 4)
    }

    @Test func createOfAnExistingDirectoryIsRefused() throws {
        let driver = try RADOSDriver(target: try freshTarget("create-directory"))
        defer { driver.close() }
        let top = try driver.root().inode
        _ = try withName("d") { try driver.mkdir(top, $0, mode: 0o755, root) }
        #expect(throws: Errno.isDirectory) {
            try withName("d") { try driver.create(top, $0, mode: 0o644, flags: O_RDWR, root) }
        }
    }
}
