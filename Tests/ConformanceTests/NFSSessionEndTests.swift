import Foundation
import FerryTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `ferry mount nfs://` stopped (SIGTERM) while a process still has files open there: the
/// kernel's connection is aborted, so those files are never released. What they wrote
/// reaches the server, and a file unlinked while open (renamed to a hidden name) is
/// removed, before ferry exits: the next mount finds neither lost data nor hidden files.
/// ferry aborts the connection through fusectl (without it, unmounting waits for the last
/// close, and the kernel releases the files itself), so the test mounts fusectl if needed.
@Suite("ferry mount nfs:// ending with files open", .serialized, .requires(.root, .devFUSE, .ganesha))
struct NFSSessionEndThroughFerryMount {
    @Test("Files still open when ferry stops are flushed, and unlinked ones removed", .timeLimit(.minutes(10)), arguments: [3, 4])
    func openFilesAreSettledWhenTheMountStops(version: Int) async throws {
        let server = try NFSTestServer.shared()
        let connections = "/sys/fs/fuse/connections"
        let mountedFusectl = !isMountPoint(connections) && mount("fusectl", connections, "fusectl", 0, nil) == 0
        defer { if mountedFusectl { umount2(connections, 0) } }
        try #require(isMountPoint(connections), "fusectl is not mounted on \(connections) and could not be: \(errno)")
        try await server.shared {
            let export = try server.makeExport("session-end-v\(version)")
            let mount = try FerryMount(source: server.url(export, version: version), extraArguments: [])
            defer { mount.stop() }
            let data = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) }
            let written = open(mount.mountpoint + "/written", O_WRONLY | O_CREAT, 0o644)
            let unlinked = open(mount.mountpoint + "/unlinked", O_RDWR | O_CREAT, 0o644)
            try #require(written >= 0 && unlinked >= 0, "open: \(errno)")
            #expect(data.withUnsafeBytes { write(written, $0.baseAddress, $0.count) } == data.count)
            #expect(write(unlinked, "kept while open", 15) == 15)
            #expect(unlink(mount.mountpoint + "/unlinked") == 0)
            let hidden = try FileManager.default.contentsOfDirectory(atPath: export).filter { $0.hasPrefix(".ferry-unlinked-") }
            #expect(hidden.count == 1, "unlinking an open file leaves it under a hidden name on the server: \(hidden)")

            // The files stay open (and unreleased) until ferry has exited.
            let exited = mount.terminate(timeout: 60)
            close(written)
            close(unlinked)
            #expect(exited && mount.process.terminationStatus == 0, "ferry did not exit 0 on SIGTERM:\n\(mount.log.suffix(3000))")
            #expect(FileManager.default.contents(atPath: export + "/written") == Data(data),
                    "what a file still open wrote did not all reach the server")
            let left = try FileManager.default.contentsOfDirectory(atPath: export).sorted()
            #expect(left == ["written"], "after ferry stopped, the export holds \(left)\nferry's log:\n\(mount.log.suffix(3000))")
        }
    }
}
