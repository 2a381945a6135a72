import CFerry
import Glibc

/// An eventfd used as a kick (front-end → back-end) or call (back-end → front-end)
/// notifier. Owns its descriptor.
public final class EventFD: Sendable {
    public let fd: Int32

    public init() throws {
        let fd = ferry_eventfd(0, Int32(FERRY_EFD_CLOEXEC))
        guard fd >= 0 else { throw FrontendError.system("eventfd", errno: errno) }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Adds one to the counter: wakes whoever waits on the other side.
    public func signal() {
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { write(fd, $0.baseAddress, 8) }
    }

    /// Waits until the counter is non-zero, then resets it. Returns false on timeout.
    /// `timeoutMilliseconds` -1 waits forever.
    @discardableResult
    public func wait(timeoutMilliseconds: Int32) -> Bool {
        guard ferry_fe_wait_readable(fd, timeoutMilliseconds) > 0 else { return false }
        // Readable: the counter is non-zero, so this read returns at once and resets it.
        var value: UInt64 = 0
        _ = withUnsafeMutableBytes(of: &value) { read(fd, $0.baseAddress, 8) }
        return true
    }

    /// Resets the counter if it is set; never blocks (the fd was polled readable, or
    /// the read would only consume a pending signal).
    public func drain() {
        guard ferry_fe_wait_readable(fd, 0) > 0 else { return }
        var value: UInt64 = 0
        _ = withUnsafeMutableBytes(of: &value) { read(fd, $0.baseAddress, 8) }
    }
}
