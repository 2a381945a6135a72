#if canImport(Glibc)
import Glibc
#endif

/// A file descriptor with one owner: closed exactly once, when the value goes away, unless
/// the owner hands it on with `take()`. Not copyable, so no second owner can close it
/// again, and an early `throw` between opening and handing on closes it without a
/// hand-written ladder of `close` calls.
public struct OwnedFD: ~Copyable {
    /// The descriptor, for calls that only use it.
    public let raw: Int32

    /// Takes ownership of `raw`, an open descriptor.
    public init(_ raw: Int32) { self.raw = raw }

    /// Opens with `open` (a call returning a new descriptor, or -1 with `errno`), through
    /// `systemCall`: EINTR is retried, a failure thrown.
    @inlinable
    public init(opening open: () -> Int32) throws(Errno) {
        self.init(try systemCall(open))
    }

    /// Gives up ownership: the caller now owns (and must close) the descriptor.
    public consuming func take() -> Int32 {
        let raw = raw
        discard self
        return raw
    }

    /// Closes the descriptor now rather than at the end of the scope (a pipe's write end,
    /// say, whose reader waits for EOF).
    public consuming func close() {
        Glibc.close(take())
    }

    deinit { Glibc.close(raw) }
}
