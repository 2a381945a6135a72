import CFerry
import FerryCore
import FerryFUSE
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Serves one `/dev/fuse` connection with a fixed pool of worker threads. Each thread
/// owns its request and reply buffers and runs every request it reads to completion
/// inline: read(2) a request, dispatch, write(2) the reply. No request changes threads
/// and none allocates.
/// @unchecked Sendable: `threads` is touched only by the owner's `start` and `wait`; the worker threads use
/// only the immutable fields (their buffers are their own).
public final class DeviceSession: @unchecked Sendable {
    private let device: DeviceMount
    private let handler: any FUSERequestHandler
    private let logger: Logger
    private let maxWrite: Int
    private var threads: [pthread_t] = []
    /// Called once, from a worker, when the device goes away (unmounted from outside).
    private let onDeviceGone: @Sendable () -> Void
    /// Another transport of the same connection (io_uring) that takes part in INIT.
    private let initParticipant: (any DeviceInitParticipant)?

    public init(device: DeviceMount, handler: any FUSERequestHandler, maxWrite: UInt32, logger: Logger,
                initParticipant: (any DeviceInitParticipant)? = nil,
                onDeviceGone: @escaping @Sendable () -> Void) {
        self.device = device
        self.handler = handler
        self.logger = logger
        self.maxWrite = Int(maxWrite)
        self.initParticipant = initParticipant
        self.onDeviceGone = onDeviceGone
    }

    /// Starts `count` worker threads.
    public func start(threads count: Int) {
        for index in 0..<max(1, count) {
            let box = Unmanaged.passRetained(WorkerContext(session: self, index: index))
            var thread = pthread_t()
            let rc = pthread_create(&thread, nil, { raw in
                let context = Unmanaged<WorkerContext>.fromOpaque(raw!).takeRetainedValue()
                context.session.serve(worker: context.index)
                return nil
            }, box.toOpaque())
            precondition(rc == 0, "pthread_create failed: \(rc)")
            threads.append(thread)
        }
    }

    /// Waits for every worker to finish (after the mount is gone).
    public func join() {
        for thread in threads { pthread_join(thread, nil) }
        threads.removeAll()
    }

    private final class WorkerContext {
        let session: DeviceSession
        let index: Int
        init(session: DeviceSession, index: Int) { self.session = session; self.index = index }
    }

    private func serve(worker: Int) {
        // The kernel needs room for the largest WRITE plus its headers in every read.
        let requestSize = maxWrite + 64 * 1024
        let replySize = max(maxWrite + 4096, FUSEServerLimits.minimumScratch)
        let request = UnsafeMutableRawBufferPointer.allocate(byteCount: requestSize, alignment: 4096)
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: replySize, alignment: 4096)
        let vector = UnsafeMutablePointer<iovec>.allocate(capacity: 1)
        defer { request.deallocate(); scratch.deallocate(); vector.deallocate() }
        let fd = device.fd
        let deferral = DeviceReplyWriter(fd: fd)

        while true {
            let n: Int
            do { n = try systemCall { Glibc.read(fd, request.baseAddress, requestSize) } } catch {
                switch error.rawValue {
                case EAGAIN, ENOENT:            // ENOENT: the request was interrupted before we read it
                    continue
                case ENODEV:                    // unmounted
                    logger.debug("device closed", metadata: ["worker": "\(worker)"])
                    onDeviceGone()
                    return
                default:
                    logger.error("reading /dev/fuse failed", metadata: ["errno": "\(error.rawValue)"])
                    onDeviceGone()
                    return
                }
            }
            // READ data lands right after the reply header, so header + data go out in one write.
            vector.pointee = iovec(iov_base: scratch.baseAddress! + FUSEOutHeader.size,
                                   iov_len: replySize - FUSEOutHeader.size)
            var area = ReplyArea(scratch: scratch, readVectors: IOVectors(base: vector, count: 1), deferral: deferral)
            let disposition = handler.handle(request: UnsafeRawBufferPointer(rebasing: request[0..<n]), reply: &area)
            let length: Int
            switch disposition {
            case .none, .deferred: continue
            case .inline(let l): length = l
            case .data(let dataLength): length = FUSEOutHeader.size + dataLength
            }
            let isInit = initParticipant != nil && n >= 8 && request.load(fromByteOffset: 4, as: UInt32.self) == Self.initOpcode
            if isInit {
                initParticipant?.amend(initRequest: UnsafeRawBufferPointer(rebasing: request[0..<n]), reply: scratch, length: length)
            }
            if Glibc.write(fd, scratch.baseAddress, length) < 0 {
                let e = errno
                // ENOENT: the kernel gave up on the request (interrupted); not our problem.
                if e != ENOENT && e != ENODEV {
                    logger.error("writing a reply to /dev/fuse failed", metadata: ["errno": "\(e)"])
                }
            } else if isInit {
                initParticipant?.initAnswered()
            }
        }
    }

    private static let initOpcode = UInt32(26).littleEndian
}

/// A transport serving the same connection beside the device loop (FUSE over io_uring) that
/// takes part in INIT, which always comes through the device: it may add capabilities to the
/// reply before it is written, and learns when the kernel has it (the connection is then
/// initialised, and rings can be registered).
public protocol DeviceInitParticipant: AnyObject, Sendable {
    func amend(initRequest: UnsafeRawBufferPointer, reply: UnsafeMutableRawBufferPointer, length: Int)
    func initAnswered()
}

/// Later replies on `/dev/fuse` (a waiting lock, once granted): each is one write(2) of the
/// whole reply, which the kernel matches to its request by `unique`, from any thread.
final class DeviceReplyWriter: ReplyDeferral, DeferredReply {
    let fd: Int32
    init(fd: Int32) { self.fd = fd }
    func deferReply() -> (any DeferredReply)? { self }
    func send(_ reply: UnsafeRawBufferPointer) {
        // ENOENT: the kernel gave up on the request; ENODEV: unmounted. Nothing to answer.
        _ = Glibc.write(fd, reply.baseAddress, reply.count)
    }
}
