#if canImport(Glibc)
import Glibc
#endif

/// Makes one system call (or libc wrapper) that returns -1 and sets `errno` on failure:
/// an interrupted call (EINTR) is made again, any other failure is thrown as its `Errno`,
/// anything else is returned. The one place EINTR is retried, so no caller loops on it.
///
/// Inlined and allocation-free: it sits on the request path (preadv, pwritev, poll).
@inlinable @inline(__always)
public func systemCall<Result: BinaryInteger>(_ call: () -> Result) throws(Errno) -> Result {
    while true {
        let result = call()
        if result != -1 { return result }
        let error = errno
        if error != EINTR { throw Errno(error) }
    }
}
