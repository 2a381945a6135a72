#if canImport(Glibc)
import Glibc
#endif

/// An errno value a driver answers with. Drivers throw it with typed throws
/// (`throws(Errno)`), so an error reply costs no allocation.
public struct Errno: Error, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(_ rawValue: Int32) { self.rawValue = rawValue }

    /// The calling thread's `errno`, right after a failed C call.
    @inline(__always) public static var current: Errno { Errno(errno) }

    public static let notPermitted = Errno(EPERM)
    public static let noEntry = Errno(ENOENT)
    public static let io = Errno(EIO)
    public static let badHandle = Errno(EBADF)
    public static let noMemory = Errno(ENOMEM)
    public static let accessDenied = Errno(EACCES)
    public static let exists = Errno(EEXIST)
    public static let notDirectory = Errno(ENOTDIR)
    public static let isDirectory = Errno(EISDIR)
    public static let invalid = Errno(EINVAL)
    public static let tooManyOpenFiles = Errno(ENFILE)
    public static let noSpace = Errno(ENOSPC)
    public static let readOnly = Errno(EROFS)
    public static let range = Errno(ERANGE)
    public static let nameTooLong = Errno(ENAMETOOLONG)
    public static let notImplemented = Errno(ENOSYS)
    public static let notEmpty = Errno(ENOTEMPTY)
    public static let loop = Errno(ELOOP)
    public static let noData = Errno(ENODATA)
    public static let notSupported = Errno(EOPNOTSUPP)
    public static let noDevice = Errno(ENXIO)
    public static let stale = Errno(ESTALE)
    public static let again = Errno(EAGAIN)
    public static let protocolError = Errno(EPROTO)
    public static let quotaExceeded = Errno(EDQUOT)
    public static let fileTooBig = Errno(EFBIG)

    public var description: String { String(cString: strerror(rawValue)) + " (\(rawValue))" }
}
