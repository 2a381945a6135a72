import Foundation

/// An ext4 file system of its own: a sparse image under /tmp, loop-mounted (needs root).
/// For tests that wait for the host to reuse an inode number: on the shared /tmp, other
/// tests running at the same time take freed numbers first.
public final class PrivateExt4: Sendable {
    /// An empty directory on it.
    public let path: String
    private let base: String
    private let mountPoint: String

    public init(megabytes: Int = 64) throws {
        base = try makeTemporaryDirectory("ferry-ext4")
        mountPoint = base + "/mnt"
        let image = base + "/image"
        do {
            try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: false)
            guard FileManager.default.createFile(atPath: image, contents: nil), truncate(image, off_t(megabytes) << 20) == 0 else {
                throw HarnessError("cannot make the image \(image)")
            }
            try Self.run("/usr/sbin/mkfs.ext4", ["-q", "-F", image])
            try Self.run("/bin/mount", ["-o", "loop", image, mountPoint])
        } catch {
            try? FileManager.default.removeItem(atPath: base)
            throw error
        }
        path = mountPoint + "/export"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
    }

    /// Unmounts it and removes the image.
    public func remove() {
        _ = try? Self.run("/bin/umount", [mountPoint])
        try? FileManager.default.removeItem(atPath: base)
    }

    private static func run(_ tool: String, _ arguments: [String]) throws {
        let result = try runToCompletion(tool, arguments)
        if !result.succeeded { throw HarnessError("\(tool) \(arguments.joined(separator: " ")): \(result.output)") }
    }
}
