import CFerry
import FerryCore
#if canImport(Glibc)
import Glibc
#endif

/// FUSE passthrough's two ioctls on a mount's `/dev/fuse` descriptor: the server core
/// registers the files its driver opened (`FUSEBackingFiles`) and never sees the device.
///
/// The kernel allows FUSE_DEV_IOC_BACKING_OPEN only to a caller with CAP_SYS_ADMIN, on a
/// connection that agreed FUSE_PASSTHROUGH, for a regular file on a file system stacked less
/// deeply than the mount's max_stack_depth (EPERM, EINVAL, ELOOP otherwise).
public final class DeviceBackingFiles: FUSEBackingFiles {
    private let device: DeviceMount

    public init(device: DeviceMount) { self.device = device }

    /// `struct fuse_backing_map` of <linux/fuse.h> 7.40.
    private struct BackingMap {
        var fd: Int32
        var flags: UInt32 = 0
        var padding: UInt64 = 0
    }

    /// _IOW(229, 1, struct fuse_backing_map) and _IOW(229, 2, uint32_t): the host's
    /// <linux/fuse.h> (7.38) predates them.
    static let backingOpen: UInt = 0x4010_E501
    static let backingClose: UInt = 0x4004_E502

    public func open(descriptor: Int32) throws(Errno) -> Int32 {
        var map = BackingMap(fd: descriptor)
        // Sound: `map` is 16 bytes laid out as the kernel's struct, alive for the call.
        let id = withUnsafeMutablePointer(to: &map) { ferry_ioctl_ptr(device.fd, Self.backingOpen, $0) }
        guard id >= 0 else { throw Errno.current }
        // 0 is never a valid id (the kernel allocates from 1), so an answer of 0 is not one.
        guard id > 0 else { throw Errno(EPROTO) }
        return id
    }

    public func close(backingID: Int32) {
        var id = UInt32(bitPattern: backingID)
        // Sound: a 4-byte value alive for the call. Failure (the kernel already dropped the
        // id with the connection) leaves nothing to undo.
        _ = withUnsafeMutablePointer(to: &id) { ferry_ioctl_ptr(device.fd, Self.backingClose, $0) }
    }

    /// Whether the kernel takes a backing file from this process for files beneath
    /// `directory` (after INIT agreed FUSE_PASSTHROUGH): registers an unnamed temporary file
    /// made there and drops it at once, or, where none can be made (a read-only export),
    /// a descriptor of `directory` itself, which the kernel refuses (EISDIR) only after the
    /// privilege check. Nil when it does; otherwise the kernel's error.
    public func probe(beneath directory: String) -> Errno? {
        let scratch = Glibc.open(directory, Int32(FERRY_O_TMPFILE) | O_RDWR | O_CLOEXEC, 0o600)
        if scratch >= 0 {
            defer { Glibc.close(scratch) }
            do throws(Errno) {
                close(backingID: try open(descriptor: scratch))
                return nil
            } catch {
                return error
            }
        }
        let fd = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return Errno.current }
        defer { Glibc.close(fd) }
        do throws(Errno) {
            close(backingID: try open(descriptor: fd))
            return nil
        } catch {
            return error == Errno(EISDIR) ? nil : error
        }
    }
}
