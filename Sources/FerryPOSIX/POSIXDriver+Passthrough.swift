import FerryCore
#if canImport(Glibc)
import Glibc
#endif

/// FUSE passthrough (`ferry mount`): every open file of a directory export is a host file
/// this driver opened itself, beneath the export's root (through `openat2` with
/// RESOLVE_BENEATH or a descriptor of a node it holds), so the kernel may read and write it
/// directly. Nothing else is ever offered: the server core asks only for a `File` this
/// driver returned from `open`, `create` or `tmpfile`.
extension POSIXDriver {
    public var supportsPassthrough: Bool { true }

    /// The kernel keeps the registering thread's credentials with the backing file and opens
    /// the file with them for every later client open of the node, whoever that client is:
    /// so the daemon's own (fsuid 0 with its capabilities), never the first opener's, which
    /// might lack write access a later opener has (the client kernel checked each opener's
    /// permission already, `default_permissions`).
    ///
    /// The kernel registers a description of its own, reopened here, not the handle's: it
    /// keeps the registered description for as long as the backing id lives (while any open
    /// of the node uses it), and a flock taken on the handle's description must end with that
    /// handle, not with the node's last open (else a waiter would wait for a lock its own
    /// open keeps alive).
    public func withBackingDescriptor<R>(of file: File, _ register: (Int32) throws(Errno) -> R) throws(Errno) -> R? {
        try ThreadCredentialState.current.asDaemon { () throws(Errno) -> R in
            let own = try reopen(file.fd, flags: O_RDONLY | O_CLOEXEC | O_NONBLOCK)
            defer { close(own) }
            return try register(own)
        }
    }
}
