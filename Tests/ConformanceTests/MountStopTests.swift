import Foundation
import FerryTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Stopping `ferry mount` while a process still holds a file open there: ferry aborts the
/// connection (the FUSE control file system's `abort`) and exits, and the holder gets
/// ENOTCONN, rather than ferry waiting for the holder to close its file. On a machine
/// where nothing mounted /sys/fs/fuse/connections (no systemd, as in CI containers), ferry
/// used to wait for as long as the file stayed open.
@Suite("Stopping ferry mount", .serialized, .requires(.root, .devFUSE))
struct MountStopTests {
    /// With passthrough the held file is the kernel's own reference to the host file, and it
    /// keeps reading that after ferry is gone; without, it answers ENOTCONN.
    @Test("SIGTERM with a file held open unmounts and exits", .timeLimit(.minutes(10)), arguments: ["on", "off"])
    func aFileHeldOpenDoesNotKeepFerryRunning(passthrough: String) throws {
        let mount = try FerryMount(extraArguments: ["--xattr", "--passthrough", passthrough])
        defer { mount.stop() }
        let held = open(mount.mountpoint + "/held", O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
        try #require(held >= 0, "open: \(String(cString: strerror(errno)))")
        defer { close(held) }
        #expect(write(held, "x", 1) == 1)
        let exited = mount.terminate(timeout: 30)
        #expect(exited, "ferry did not exit on SIGTERM while a file was held open:\n\(mount.log.suffix(3000))")
        if exited {
            #expect(mount.process.terminationReason == .exit && mount.process.terminationStatus == 0,
                    "ferry's exit: \(mount.process.terminationStatus)\n\(mount.log.suffix(3000))")
            var buffer = [UInt8](repeating: 0, count: 1)
            if passthrough == "off" {
                #expect(pread(held, &buffer, 1, 0) == -1 && errno == ENOTCONN, "the held file still answers after the stop")
            } else {
                #expect(pread(held, &buffer, 1, 0) == 1 && buffer == [UInt8(ascii: "x")], "the held passthrough file: \(errno)")
            }
        }
        #expect(!isFUSEMount(mount.mountpoint), "the mount is still attached")
    }
}
