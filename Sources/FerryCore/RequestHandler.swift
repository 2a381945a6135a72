#if canImport(Glibc)
import Glibc
#endif

/// The memory a transport lends the server for one reply. Each transport thread owns
/// one and reuses it for every request, so replying allocates nothing.
public struct ReplyArea {
    /// Where the reply header and every small reply is built. Must hold at least
    /// `FUSEServerLimits.minimumScratch` bytes; READDIR replies are capped to what fits.
    public var scratch: UnsafeMutableRawBufferPointer
    /// Where READ data goes: the caller's own buffers (a guest's descriptors), or a part
    /// of the transport's buffer right after the 16-byte header. The server may shorten
    /// the last vector to the requested size.
    public var readVectors: IOVectors
    /// How the server may answer this request later (`ReplyDisposition.deferred`); nil for a
    /// transport that cannot. INIT agrees FUSE_POSIX_LOCKS and FUSE_FLOCK_LOCKS only when it
    /// arrives with one, since a waiting lock (F_SETLKW) is answered when it is granted.
    public var deferral: (any ReplyDeferral)?

    public init(scratch: UnsafeMutableRawBufferPointer, readVectors: IOVectors, deferral: (any ReplyDeferral)? = nil) {
        self.scratch = scratch; self.readVectors = readVectors; self.deferral = deferral
    }
}

/// A transport's way to let the server answer the request it is handling after `handle`
/// returned. One per transport thread, reused for every request; asked only when a
/// request is actually deferred, so the common path allocates nothing.
public protocol ReplyDeferral: AnyObject {
    /// Where the reply to the request being handled now goes later; nil when this one
    /// cannot wait (the server then answers it at once).
    func deferReply() -> (any DeferredReply)?
}

/// One request's reply, sent later from any thread (the export's lock-wait thread).
public protocol DeferredReply: AnyObject, Sendable {
    /// `reply` is the whole reply, header included. Called at most once. A transport whose
    /// connection (or queue) went away meanwhile drops it.
    func send(_ reply: UnsafeRawBufferPointer)
}

/// What the transport sends back after `handle` returns.
public enum ReplyDisposition: Equatable, Sendable {
    /// No reply (FORGET, BATCH_FORGET, INTERRUPT, or a request too broken to answer).
    case none
    /// `scratch[0..<length]` is the whole reply, header included.
    case inline(length: Int)
    /// `scratch[0..<16]` is the header and `dataLength` bytes of READ data are already in
    /// `readVectors`.
    case data(dataLength: Int)
    /// No reply now: the request went to `ReplyArea.deferral`'s sink, which answers it later.
    /// A virtqueue keeps the chain out of the used ring until then.
    case deferred
}

/// Sizes a transport must honour.
public enum FUSEServerLimits {
    /// Smallest scratch area: header + the largest fixed reply + one page of directory data.
    public static let minimumScratch = 16 + 4096 + 256
}

/// The server as a transport sees it: bytes in, reply out, one request at a time per
/// calling thread, any number of threads at once.
public protocol FUSERequestHandler: AnyObject, Sendable {
    /// `request` is one whole request exactly as received (header included).
    func handle(request: UnsafeRawBufferPointer, reply: inout ReplyArea) -> ReplyDisposition
    /// A WRITE whose data stays in the caller's buffers: `request` is the header and
    /// `fuse_write_in` only, `payload` the data, which the driver writes from directly.
    func handle(request: UnsafeRawBufferPointer, payload: IOVectors, reply: inout ReplyArea) -> ReplyDisposition
    /// The connection went away without DESTROY (guest reset, unmount): forget every node
    /// and handle so the next INIT starts clean.
    func connectionLost()
}

/// One export being served, whatever its backend: the request handler a transport calls,
/// plus what the daemon reads from it and how it is stopped.
public protocol ServedExport: FUSERequestHandler {
    /// Nodes the client currently holds (root included).
    var nodeCount: Int { get }
    /// Open files and directories.
    var openHandleCount: Int { get }
    /// Requests, errors, latencies and bytes, as the server core counted them.
    var statistics: ExportStatistics { get }
    /// The usage under the export's quota; nil without a quota.
    var quota: QuotaLedger? { get }
    /// Counters only the backend knows (reconnects, retries, ...), for reports and metrics.
    var backendCounters: [BackendCounter] { get }
    /// Stops serving for good: drops nodes and handles and releases the backend.
    func shutdown()
    /// FUSE passthrough through `device` (`FUSEServer.enablePassthrough`); call before the
    /// session starts. Answers whether the export allows it.
    func enablePassthrough(_ device: any FUSEBackingFiles) -> PassthroughSupport
    /// Whether the current session agreed FUSE_PASSTHROUGH with the kernel (nil before INIT).
    var passthroughAgreed: Bool? { get }
}

/// One counter a backend keeps, such as NFS reconnects or RADOS retries.
public struct BackendCounter: Sendable, Codable, Equatable {
    /// A metric-style name: lower case and underscores (`retries`).
    public var name: String
    public var help: String
    public var value: UInt64
    public init(name: String, help: String, value: UInt64) { self.name = name; self.help = help; self.value = value }
}

extension ServedExport {
    public var backendCounters: [BackendCounter] { [] }
}

extension FUSEServer: ServedExport {}
