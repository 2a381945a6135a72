import Foundation
import Testing

import FerryCore
@testable import FerryPOSIX

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

/// An export on an ext4 file system of its own (a loop-mounted image under /tmp, needs
/// root): for tests that churn through inode numbers, which on the shared /tmp would take
/// the numbers other tests wait to see reused.
func withPrivateExt4Export<R>(_ options: POSIXOptions = .init(), _ body: (String, POSIXDriver) throws -> R) throws -> R {
    var template = Array("/tmp/ferry-ext4-XXXXXX".utf8CString)
    let base: String = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    defer { try? FileManager.default.removeItem(atPath: base) }
    let image = base + "/image", mountPoint = base + "/mnt"
    try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: false)
    guard FileManager.default.createFile(atPath: image, contents: nil), truncate(image, 64 << 20) == 0 else {
        throw PrivateFileSystemFailure(description: "cannot make \(image)")
    }
    func run(_ tool: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let said = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        if process.terminationStatus != 0 {
            throw PrivateFileSystemFailure(description: "\(tool) \(arguments.joined(separator: " ")): \(said)")
        }
    }
    try run("/usr/sbin/mkfs.ext4", ["-q", "-F", image])
    try run("/bin/mount", ["-o", "loop", image, mountPoint])
    defer { try? run("/bin/umount", [mountPoint]) }
    let path = mountPoint + "/export"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
    defer { POSIXDriver.resetThreadCredentials() }
    let driver = try POSIXDriver(root: path, options: options)
    return try body(path, driver)
}

struct PrivateFileSystemFailure: Error, CustomStringConvertible { let description: String }

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

func openDescriptorCount() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
}
