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
    @Test("SIGTERM with a file held open unmounts and exits", .timeLimit(.minutes(10)))
    func aFileHeldOpenDoesNotKeepFerryRunning() throws {
        let mount = try FerryMount()
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
            #expect(pread(held, &buffer, 1, 0) == -1 && errno == ENOTCONN, "the held file still answers after the stop")
        }
        #expect(!isFUSEMount(mount.mountpoint), "the mount is still attached")
    }
}
