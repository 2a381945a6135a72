import Foundation
import Testing

import FerryCore
@testable import FerryPOSIX
import FerryTestSupport

/// A fresh export directory under /tmp, removed afterwards.
func withExport<R>(_ options: POSIXOptions = .init(), _ body: (String, POSIXDriver) throws -> R) throws -> R {
    var template = Array("/tmp/ferry-posix-XXXXXX".utf8CString)
    let path: String = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    defer {
        POSIXDriver.resetThreadCredentials()
        try? FileManager.default.removeItem(atPath: path)
    }
    let driver = try POSIXDriver(root: path, options: options)
    return try body(path, driver)
}

/// An export on an ext4 file system of its own (PrivateExt4, needs root): for tests that
/// churn through inode numbers, which on the shared /tmp would take the numbers other
/// tests wait to see reused, or that wait for a number to be reused themselves.
func withPrivateExt4Export<R>(_ options: POSIXOptions = .init(), _ body: (String, POSIXDriver) throws -> R) throws -> R {
    let ext4 = try PrivateExt4()
    defer {
        POSIXDriver.resetThreadCredentials()
        ext4.remove()
    }
    return try body(ext4.path, try POSIXDriver(root: ext4.path, options: options))
}

/// A validated FileName for `string`, NUL-terminated in memory, alive during `body`.
func withName<R>(_ string: String, _ body: (FileName) throws -> R) throws -> R {
    var bytes = Array(string.utf8)
    let count = bytes.count
    bytes.append(0)
    return try bytes.withUnsafeBytes { buffer in
        let name = try FileName.validated(UnsafeRawBufferPointer(rebasing: buffer[0..<count])).get()
        return try body(name)
    }
}

func withAttributeName<R>(_ string: String, _ body: (AttributeName) throws -> R) throws -> R {
    var bytes = Array(string.utf8)
    let count = bytes.count
    bytes.append(0)
    return try bytes.withUnsafeBytes { buffer in
        let name = try AttributeName.validated(UnsafeRawBufferPointer(rebasing: buffer[0..<count])).get()
        return try body(name)
    }
}

/// The errno `body` failed with, or nil if it succeeded.
func errnoOf(_ body: () throws -> Void) -> Int32? {
    do { try body(); return nil } catch let e as Errno { return e.rawValue } catch { return -1 }
}

extension POSIXDriver {
    func lookup(_ parent: Inode, _ name: String, _ caller: Credentials = .root) throws -> Entry {
        try withName(name) { try lookup(parent, $0, caller) }
    }
    func create(_ parent: Inode, _ name: String, mode: UInt32 = 0o644, flags: Int32 = O_RDWR,
                _ caller: Credentials = .root) throws -> (Entry, OpenedFile<File>) {
        try withName(name) { try create(parent, $0, mode: mode, flags: flags, caller) }
    }
    func rootInode() throws -> Inode { try root().inode }

    /// Writes `bytes` at `offset`, split over two iovecs.
    @discardableResult
    func write(_ file: File, _ bytes: [UInt8], at offset: UInt64 = 0) throws -> Int {
        var data = bytes
        return try data.withUnsafeMutableBytes { buffer in
            let half = buffer.count / 2
            var iov = [iovec(iov_base: buffer.baseAddress, iov_len: half),
                       iovec(iov_base: buffer.baseAddress.map { $0 + half }, iov_len: buffer.count - half)]
            return try iov.withUnsafeMutableBufferPointer {
                try write(file, offset: offset, from: IOVectors(base: $0.baseAddress!, count: 2), killSuidGid: false, .root)
            }
        }
    }

    /// Reads up to `count` bytes at `offset` into two iovecs.
    func read(_ file: File, count: Int, at offset: UInt64 = 0) throws -> [UInt8] {
        var data = [UInt8](repeating: 0, count: count)
        let n = try data.withUnsafeMutableBytes { buffer in
            let half = buffer.count / 2
            var iov = [iovec(iov_base: buffer.baseAddress, iov_len: half),
                       iovec(iov_base: buffer.baseAddress.map { $0 + half }, iov_len: buffer.count - half)]
            return try iov.withUnsafeMutableBufferPointer {
                try read(file, offset: offset, into: IOVectors(base: $0.baseAddress!, count: 2), .root)
            }
        }
        return Array(data[0..<n])
    }
}

func hostStat(_ path: String) -> stat? {
    var st = stat()
    return lstat(path, &st) == 0 ? st : nil
}

func hostWrite(_ path: String, _ text: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    precondition(fd >= 0)
    _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }
    close(fd)
}

/// Open descriptors of this process that refer to `directory` or something beneath it.
/// Only those: the suites running beside a test in this process open and close their own.
func openDescriptorCount(under directory: String) -> Int {
    openDescriptorLinks().values.filter { $0 == directory || $0.hasPrefix(directory + "/") }.count
}
