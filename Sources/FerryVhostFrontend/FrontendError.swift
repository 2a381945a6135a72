import Glibc

/// Why the front-end could not do what it was asked. Messages name the step, so a
/// benchmark or test failing against some back-end says where the conversation broke.
public enum FrontendError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A system call failed with this errno.
    case system(_ call: String, errno: Int32)
    /// The back-end closed the connection or sent something that is not a reply we expect.
    case protocolViolation(String)
    /// The back-end lacks something the caller asked for (queues, features).
    case unsupported(String)
    /// No completion arrived in time.
    case timeout(String)
    /// A FUSE reply was short, mismatched or malformed.
    case badReply(String)
    /// The server answered a FUSE request with this (positive) errno.
    case fuseError(opcode: UInt32, errno: Int32)

    public var description: String {
        switch self {
        case let .system(call, errno): return "\(call) failed: errno \(errno) (\(String(cString: strerror(errno))))"
        case let .protocolViolation(s): return "vhost-user protocol error: \(s)"
        case let .unsupported(s): return "back-end does not support: \(s)"
        case let .timeout(s): return "timed out: \(s)"
        case let .badReply(s): return "bad FUSE reply: \(s)"
        case let .fuseError(op, errno): return "FUSE opcode \(op) failed: errno \(errno) (\(String(cString: strerror(errno))))"
        }
    }
}
