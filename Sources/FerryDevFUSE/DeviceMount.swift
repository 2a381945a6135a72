import CFerry
import FerryCore
#if canImport(Glibc)
import Glibc
#endif

/// Why a host mount could not be set up, in words an operator can act on.
public struct MountError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// A FUSE file system mounted on the host through `/dev/fuse`: the open device and the
/// mount point it is attached to.
/// @unchecked Sendable: `mounted` is touched only by `unmount`, which the mount's owner calls
/// from one thread; everything else is immutable.
public final class DeviceMount: @unchecked Sendable {
    public let fd: Int32
    public let mountPoint: String
    private var mounted = true

    /// Opens `/dev/fuse` and mounts it on `mountPoint`. Needs CAP_SYS_ADMIN (root).
    public init(mountPoint: String, fsName: String, maxRead: UInt32, defaultPermissions: Bool = true) throws(MountError) {
        var st = stat()
        guard stat(mountPoint, &st) == 0 else {
            throw MountError("mount point \(mountPoint): \(String(cString: strerror(errno)))")
        }
        guard st.st_mode & S_IFMT == S_IFDIR else { throw MountError("mount point \(mountPoint) is not a directory") }

        let device: OwnedFD
        do { device = try OwnedFD(opening: { open("/dev/fuse", O_RDWR | O_CLOEXEC) }) } catch {
            switch error.rawValue {
            case ENOENT: throw MountError("/dev/fuse does not exist: load the fuse module (modprobe fuse) or give the container the device")
            case EACCES, EPERM: throw MountError("/dev/fuse: permission denied (run as root)")
            default: throw MountError("/dev/fuse: \(String(cString: strerror(error.rawValue)))")
            }
        }
        var options = "fd=\(device.raw),rootmode=40000,user_id=\(getuid()),group_id=\(getgid()),allow_other,max_read=\(maxRead)"
        if defaultPermissions { options += ",default_permissions" }
        let flags = UInt(MS_NOSUID | MS_NODEV)
        let rc = mount(fsName, mountPoint, "fuse.ferry", flags, options)
        guard rc == 0 else {
            switch errno {
            case EPERM: throw MountError("mounting \(mountPoint) needs CAP_SYS_ADMIN: run ferry mount as root")
            case ENODEV: throw MountError("the kernel has no FUSE support (modprobe fuse)")
            default: throw MountError("mount \(mountPoint): \(String(cString: strerror(errno)))")
            }
        }
        self.fd = device.take()
        self.mountPoint = mountPoint
        let connection = DeviceMount.connectionID(of: mountPoint)
        self.connection = connection
        abortControl = connection.map(DeviceMount.openAbortControl) ?? -1
    }

    /// The FUSE connection number (the mount's device minor), for aborting a mount that
    /// is still busy when we stop. Read from mountinfo so no request goes through FUSE.
    public let connection: UInt32?
    /// The connection's `abort` file in the FUSE control file system, opened while mounting
    /// (before the process is confined), or -1.
    private let abortControl: Int32

    /// Opens `N/abort` of the FUSE control file system: at /sys/fs/fuse/connections, or,
    /// where nothing mounted it there (no systemd), on a private mount made and detached at
    /// once (the open file keeps it). Without it, a stop while a process holds a file open
    /// would wait for that process to close it.
    private static func openAbortControl(_ connection: UInt32) -> Int32 {
        let fd = open("/sys/fs/fuse/connections/\(connection)/abort", O_WRONLY | O_CLOEXEC)
        if fd >= 0 { return fd }
        var template = Array("/tmp/ferry-fusectl.XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else { return -1 }
        let directory = String(nulTerminated: template)
        defer { rmdir(directory) }
        guard mount("fusectl", directory, "fusectl", UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC), nil) == 0 else { return -1 }
        let private_ = open(directory + "/\(connection)/abort", O_WRONLY | O_CLOEXEC)
        _ = ferry_umount2(directory, Int32(MNT_DETACH))
        return private_
    }

    private static func connectionID(of mountPoint: String) -> UInt32? {
        guard let file = fopen("/proc/self/mountinfo", "r") else { return nil }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>? = nil
        var capacity = 0
        defer { free(line) }
        var found: UInt32? = nil
        var resolved = mountPoint
        if let real = realpath(mountPoint, nil) {
            resolved = String(cString: real)
            free(real)
        }
        while getline(&line, &capacity, file) > 0 {
            let fields = String(cString: line!).split(separator: " ")
            guard fields.count > 4, unescape(fields[4]) == resolved else { continue }
            let device = fields[2].split(separator: ":")
            if device.count == 2, let minor = UInt32(device[1]) { found = minor }
        }
        return found
    }

    /// mountinfo escapes space, tab, newline and backslash as \ooo.
    private static func unescape(_ field: Substring) -> String {
        var bytes: [UInt8] = []
        var i = field.utf8.startIndex
        let utf8 = field.utf8
        while i < utf8.endIndex {
            let c = utf8[i]
            if c == UInt8(ascii: "\\"), let end = utf8.index(i, offsetBy: 4, limitedBy: utf8.endIndex),
               let value = UInt8(String(decoding: utf8[utf8.index(after: i)..<end], as: UTF8.self), radix: 8) {
                bytes.append(value)
                i = end
            } else {
                bytes.append(c)
                i = utf8.index(after: i)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Detaches the mount. In-flight requests finish; the device then reports ENODEV to
    /// every reader, which ends the session's threads.
    public func unmount() {
        guard mounted else { return }
        mounted = false
        if ferry_umount2(mountPoint, 0) == 0 || errno == EINVAL { return }   // EINVAL: already gone
        // Busy (a process still has files open there): detach it from the namespace and
        // abort the connection, so open files get ENOTCONN and our workers see ENODEV.
        _ = ferry_umount2(mountPoint, Int32(MNT_DETACH))
        if abortControl >= 0 { _ = write(abortControl, "1", 1) }
    }

    deinit {
        unmount()
        if abortControl >= 0 { close(abortControl) }
        close(fd)
    }
}
