import CFerryURing
import FerryCore
import FerryFUSE
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// FUSE over io_uring for one `/dev/fuse` connection: after INIT (which always comes through
/// the device) the kernel hands requests to ring entries this session registered, one queue
/// per possible CPU, and takes each reply together with the wait for the next request
/// (COMMIT_AND_FETCH). Each ring has one thread that runs its requests inline with the same
/// `FUSERequestHandler` the device loop uses. FORGET, INTERRUPT and notifications still come
/// through the device, so a `DeviceSession` keeps reading it beside the rings.
///
/// The rings are created when the session is (before the process is confined), restricted to
/// IORING_OP_URING_CMD, and enabled by their own threads; once serving, the process needs only
/// io_uring_enter and io_uring_register (`syscalls`).
/// @unchecked Sendable: `workers`, `threads` and `outcome` are guarded by `lock`; each worker's
/// ring and buffers are touched only by its own thread once started.
public final class URingSession: DeviceInitParticipant, @unchecked Sendable {
    /// The system calls serving through the rings needs beyond the device loop's.
    /// io_uring_register only enables a ring from its own thread: the rings are restricted
    /// before the filter is in force, which refuses every other registration.
    public static let syscalls = ["io_uring_enter", "io_uring_register"]

    /// How the rings ended up, once INIT has been answered.
    public enum Outcome: Sendable, Equatable {
        /// INIT not answered yet.
        case pending
        /// The kernel agreed: requests go through the rings.
        case rings
        /// The kernel did not offer FUSE_OVER_IO_URING: the device loop serves everything.
        case declined
    }

    private let device: DeviceMount
    private let handler: any FUSERequestHandler
    private let logger: Logger
    private let lock = Mutex<State>(State())
    private let served = Atomic<Int>(0)
    private let agreed = Atomic<Bool>(false)
    private let onFailure: @Sendable () -> Void
    /// `--uring on`: a kernel that does not agree at INIT is a failure, not a fallback.
    private let required: Bool
    /// The queues the kernel expects (possible CPUs) and how many rings serve them.
    public let queues: Int
    public let ringCount: Int
    public let depth: Int

    private struct State {
        var workers: [RingWorker] = []
        var threads: [pthread_t] = []
        var outcome: Outcome = .pending
        var failure: String?
    }

    /// Creates `rings` rings (at most one per queue; queue q is served by ring q % rings),
    /// each with `depth` entries per queue and buffers for requests of `maxWrite` bytes.
    /// `onFailure` is called, from a ring thread, when the rings cannot serve after the
    /// kernel agreed to them (the mount cannot go on: its requests would wait for ever).
    public init(device: DeviceMount, handler: any FUSERequestHandler, maxWrite: UInt32, rings: Int, depth: Int,
                required: Bool, logger: Logger, onFailure: @escaping @Sendable () -> Void) throws(MountError) {
        self.device = device
        self.required = required
        self.handler = handler
        self.logger = logger
        self.onFailure = onFailure
        queues = URingSupport.possibleCPUs()
        guard queues <= Int(UInt16.max) else { throw MountError("\(queues) possible CPUs: too many ring queues") }
        ringCount = max(1, min(rings, queues))
        self.depth = max(1, depth)
        let capacity = max(Int(maxWrite) + 4096, FUSEServerLimits.minimumScratch)
        var workers: [RingWorker] = []
        for index in 0..<ringCount {
            let qids = Array(stride(from: index, to: queues, by: ringCount)).map(UInt16.init)
            do {
                workers.append(try RingWorker(index: index, qids: qids, depth: self.depth, capacity: capacity))
            } catch {
                throw MountError("cannot set up an io_uring: \(String(cString: strerror(error.rawValue)))")
            }
        }
        lock.withLock { $0.workers = workers }
    }

    /// Requests answered through the rings so far.
    public var requestsServed: Int { served.load(ordering: .relaxed) }

    public var outcome: Outcome { lock.withLock { $0.outcome } }

    /// Why the rings stopped serving while the mount needed them, if they did.
    public var failure: String? { lock.withLock { $0.failure } }

    public func amend(initRequest: UnsafeRawBufferPointer, reply: UnsafeMutableRawBufferPointer, length: Int) {
        guard let offered = FUSEInitTransport.offered(request: initRequest), offered.contains(.overIOUring) else {
            agreed.store(false, ordering: .relaxed)
            return
        }
        let added = FUSEInitTransport.add(.overIOUring, toReply: reply, length: length)
        // A waiting lock (F_SETLKW, flock) is answered later by the export's lock-wait thread;
        // a ring entry cannot yet be held back for it, so over the rings locks stay in the
        // client's kernel (as without FUSE_POSIX_LOCKS) instead of failing with ENOLCK.
        if added { _ = FUSEInitTransport.remove([.posixLocks, .flockLocks], fromReply: reply, length: length) }
        agreed.store(added, ordering: .relaxed)
    }

    public func initAnswered() {
        let start = agreed.load(ordering: .relaxed)
        let started: Bool = lock.withLock { state in
            guard state.outcome == .pending else { return false }
            state.outcome = start ? .rings : .declined
            guard start else {
                for worker in state.workers { worker.release() }
                state.workers = []
                return false
            }
            for worker in state.workers {
                let box = Unmanaged.passRetained(WorkerContext(session: self, worker: worker))
                var thread = pthread_t()
                let rc = pthread_create(&thread, nil, { raw in
                    let context = Unmanaged<WorkerContext>.fromOpaque(raw!).takeRetainedValue()
                    context.session.serve(context.worker)
                    return nil
                }, box.toOpaque())
                precondition(rc == 0, "pthread_create failed: \(rc)")
                state.threads.append(thread)
            }
            return true
        }
        if started {
            logger.info("transport", metadata: ["transport": "io_uring", "queues": "\(queues)",
                                                "rings": "\(ringCount)", "depth": "\(depth)"])
        } else if !start {
            let reason = "the kernel did not offer FUSE_OVER_IO_URING at INIT"
            if required { fail(reason) } else { logger.info("transport", metadata: ["transport": "classic", "reason": "\(reason)"]) }
        }
    }

    /// Waits for the ring threads (after the mount is gone) and frees the rings.
    public func join() {
        let (threads, workers) = lock.withLock { state in
            defer { state.threads = []; state.workers = [] }
            return (state.threads, state.workers)
        }
        for thread in threads { pthread_join(thread, nil) }
        for worker in workers { worker.release() }
    }

    private final class WorkerContext {
        let session: URingSession
        let worker: RingWorker
        init(session: URingSession, worker: RingWorker) { self.session = session; self.worker = worker }
    }

    private func fail(_ reason: String) {
        logger.error("io_uring transport stopped", metadata: ["reason": "\(reason)"])
        lock.withLock { if $0.failure == nil { $0.failure = reason } }
        onFailure()
    }

    /// One ring's thread: registers every entry, then answers and refetches until the
    /// connection goes away and the kernel ends every entry's command.
    private func serve(_ worker: RingWorker) {
        let fd = device.fd
        let enabled = ferry_uring_enable(worker.ring)
        guard enabled == 0 else {
            fail("enabling an io_uring: \(String(cString: strerror(-enabled)))")
            return
        }
        for index in worker.entries.indices {
            worker.queue(fd: fd, command: UInt32(FERRY_FUSE_IO_URING_CMD_REGISTER), entry: index)
        }
        var live = worker.entries.count
        var registering = [Bool](repeating: true, count: worker.entries.count)
        while live > 0 {
            let rc = ferry_uring_submit_and_wait(worker.ring, 1)
            if rc == -EINTR { continue }
            if rc < 0 {
                fail("io_uring_enter: \(String(cString: strerror(-rc)))")
                return
            }
            var result: Int32 = 0
            var data: UInt64 = 0
            while ferry_uring_next_completion(worker.ring, &result, &data) == 1 {
                let index = Int(data)
                guard index < worker.entries.count else { continue }
                if result < 0 {
                    let error = -result
                    // The connection is being torn down (unmount, abort): the entry is done.
                    if error == ENOTCONN || error == ECONNABORTED || error == ENODEV {
                        live -= 1
                    } else if registering[index] {
                        // The kernel gives up the rings for the whole connection (requests go
                        // through the device); nothing more to do with this entry.
                        logger.error("registering an io_uring entry failed; the device loop serves instead",
                                     metadata: ["errno": "\(error)", "qid": "\(worker.entries[index].qid)"])
                        live -= 1
                    } else if error == EOPNOTSUPP {
                        // The kernel turned the rings off for this connection (its switch went
                        // off before INIT was processed, and then a REGISTER failed): the
                        // request in this entry can never be answered, and its caller would
                        // wait for ever. Stop, so the mount is unmounted (and aborted).
                        fail("the kernel refused a reply through the ring (EOPNOTSUPP): FUSE over io_uring "
                             + "was turned off for this connection")
                        return
                    } else {
                        // A commit the kernel could not match (the request is gone): the entry
                        // is still its, unusable; hand it back fresh so the queue keeps its depth.
                        logger.warning("io_uring commit refused", metadata: ["errno": "\(error)"])
                        registering[index] = true
                        worker.queue(fd: fd, command: UInt32(FERRY_FUSE_IO_URING_CMD_REGISTER), entry: index)
                    }
                    continue
                }
                registering[index] = false
                worker.answer(entry: index, handler: handler)
                served.add(1, ordering: .relaxed)
                worker.queue(fd: fd, command: UInt32(FERRY_FUSE_IO_URING_CMD_COMMIT_AND_FETCH), entry: index)
            }
        }
        logger.debug("io_uring ring closed", metadata: ["ring": "\(worker.index)"])
    }
}

/// One io_uring and the entries it carries for its queues, with the thread-owned buffers
/// requests are assembled and WRITE replies built in.
/// @unchecked Sendable: handed to one thread, which alone uses it until `release`.
final class RingWorker: @unchecked Sendable {
    /// One registered entry: the kernel's header area at the start of `block`, the payload
    /// `prefix` bytes further (the reply header is built just before it, so a reply with READ
    /// data is contiguous in place), and the two iovecs REGISTER names.
    struct Entry {
        let qid: UInt16
        let block: UnsafeMutableRawPointer
        let iov: UnsafeMutablePointer<iovec>
    }

    static let prefix = 4096
    static let headerSize = MemoryLayout<ferry_fuse_uring_req_header>.size
    static let opInOffset = Int(FERRY_FUSE_URING_IN_OUT_HEADER_SZ)
    static let opInCapacity = Int(FERRY_FUSE_URING_OP_IN_OUT_SZ)
    static let entryOffset = opInOffset + opInCapacity
    static let writeOpcode = FUSEOpcode.write.rawValue

    let index: Int
    let ring: UnsafeMutablePointer<ferry_uring>
    private(set) var entries: [Entry] = []
    private let capacity: Int
    private let request: UnsafeMutableRawBufferPointer
    private let writeScratch: UnsafeMutableRawBufferPointer
    private let vectors: UnsafeMutablePointer<iovec>
    private var released = false

    init(index: Int, qids: [UInt16], depth: Int, capacity: Int) throws(Errno) {
        self.index = index
        self.capacity = capacity
        ring = .allocate(capacity: 1)
        let rc = ferry_uring_open(ring, UInt32(qids.count * depth))
        guard rc == 0 else {
            ring.deallocate()
            throw Errno(-rc)
        }
        // Sized for the largest request: header, per-op header, payload.
        request = .allocate(byteCount: capacity + Self.prefix, alignment: 4096)
        writeScratch = .allocate(byteCount: FUSEServerLimits.minimumScratch, alignment: 16)
        vectors = .allocate(capacity: 2)
        for qid in qids {
            for _ in 0..<depth {
                // Pages are touched only as far as requests reach, so depth costs little memory.
                let block = UnsafeMutableRawPointer.allocate(byteCount: Self.prefix + capacity, alignment: 4096)
                let iov = UnsafeMutablePointer<iovec>.allocate(capacity: 2)
                iov[0] = iovec(iov_base: block, iov_len: Self.headerSize)
                iov[1] = iovec(iov_base: block + Self.prefix, iov_len: capacity)
                entries.append(Entry(qid: qid, block: block, iov: iov))
            }
        }
    }

    func queue(fd: Int32, command: UInt32, entry index: Int) {
        let entry = entries[index]
        let commitID = command == UInt32(FERRY_FUSE_IO_URING_CMD_COMMIT_AND_FETCH)
            ? entry.block.load(fromByteOffset: Self.entryOffset + 8, as: UInt64.self) : 0
        let iov = command == UInt32(FERRY_FUSE_IO_URING_CMD_REGISTER) ? UnsafeRawPointer(entry.iov) : nil
        // The ring has room for every entry's one outstanding command, so this cannot be full.
        let rc = ferry_uring_queue_fuse(ring, fd, command, entry.qid, commitID, iov, UInt64(index))
        precondition(rc == 0, "io_uring submission queue full")
    }

    /// Runs the request the kernel put in entry `index` and leaves the reply where the kernel
    /// reads it: the out header in the header area, the body in the payload, its length in
    /// `payload_sz`.
    func answer(entry index: Int, handler: any FUSERequestHandler) {
        let header = entries[index].block
        let payload = header + Self.prefix
        // The reply header goes right before the payload, so READ data lands in place.
        let replyArea = UnsafeMutableRawBufferPointer(start: payload - FUSEOutHeader.size, count: capacity + FUSEOutHeader.size)
        let length = Int(UInt32(littleEndian: header.load(as: UInt32.self)))
        let opcode = UInt32(littleEndian: header.load(fromByteOffset: 4, as: UInt32.self))
        let unique = UInt64(littleEndian: header.load(fromByteOffset: 8, as: UInt64.self))
        let payloadSize = Int(header.load(fromByteOffset: Self.entryOffset + 16, as: UInt32.self))
        let opInSize = length - FUSEInHeader.size - payloadSize

        var replyLength: Int
        if payloadSize > capacity || opInSize < 0 || opInSize > Self.opInCapacity {
            // Sizes the kernel never sends; answering EIO beats reading past the buffers.
            replyLength = FUSEReply.error(EIO, unique: unique, into: replyArea)
        } else {
            request.baseAddress!.copyMemory(from: header, byteCount: FUSEInHeader.size)
            request.baseAddress!.advanced(by: FUSEInHeader.size).copyMemory(from: header + Self.opInOffset, byteCount: opInSize)
            let fixed = FUSEInHeader.size + opInSize
            let disposition: ReplyDisposition
            if opcode == Self.writeOpcode && payloadSize > 0 {
                // WRITE data stays in the entry and is written from there; the (small) reply
                // is built aside, since the payload is still being read while it is.
                vectors[0] = iovec(iov_base: payload, iov_len: payloadSize)
                vectors[1] = iovec(iov_base: writeScratch.baseAddress! + FUSEOutHeader.size,
                                   iov_len: writeScratch.count - FUSEOutHeader.size)
                var area = ReplyArea(scratch: writeScratch, readVectors: IOVectors(base: vectors + 1, count: 1))
                disposition = handler.handle(request: UnsafeRawBufferPointer(rebasing: request[0..<fixed]),
                                             payload: IOVectors(base: vectors, count: 1), reply: &area)
                replyLength = Self.length(of: disposition)
                if replyLength > 0 { replyArea.baseAddress!.copyMemory(from: writeScratch.baseAddress!, byteCount: replyLength) }
            } else {
                // Everything else is copied out first (names, xattr values: small), so the
                // reply may overwrite the payload.
                request.baseAddress!.advanced(by: fixed).copyMemory(from: payload, byteCount: payloadSize)
                vectors[0] = iovec(iov_base: payload, iov_len: capacity)
                var area = ReplyArea(scratch: replyArea, readVectors: IOVectors(base: vectors, count: 1))
                disposition = handler.handle(request: UnsafeRawBufferPointer(rebasing: request[0..<(fixed + payloadSize)]),
                                             reply: &area)
                replyLength = Self.length(of: disposition)
            }
            // Every ring request needs an answer to free its entry; the handler stays silent
            // only on requests it cannot parse.
            if replyLength == 0 { replyLength = FUSEReply.error(EIO, unique: unique, into: replyArea) }
        }
        header.copyMemory(from: replyArea.baseAddress!, byteCount: FUSEOutHeader.size)
        header.storeBytes(of: UInt32(replyLength - FUSEOutHeader.size), toByteOffset: Self.entryOffset + 16, as: UInt32.self)
    }

    private static func length(of disposition: ReplyDisposition) -> Int {
        switch disposition {
        case .none: return 0
        case .inline(let length): return length
        case .data(let dataLength): return FUSEOutHeader.size + dataLength
        // Not reached: the rings carry no lock requests (`amend` takes the lock flags out),
        // and a ring request has no deferral to wait with; EIO rather than a lost entry.
        case .deferred: return 0
        }
    }

    /// Closes the ring (which ends any command still in it) and frees the buffers.
    func release() {
        guard !released else { return }
        released = true
        ferry_uring_close(ring)
        ring.deallocate()
        for entry in entries {
            entry.block.deallocate()
            entry.iov.deallocate()
        }
        entries = []
        request.deallocate()
        writeScratch.deallocate()
        vectors.deallocate()
    }
}
