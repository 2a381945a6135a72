import Dispatch
import FerryFUSE
import Glibc

/// One queue's benchmark loop: keeps every slot busy until the deadline, records each
/// operation's latency, and resubmits from the completion. Owned by one thread.
struct QueueDriver {
    let session: FUSESession
    let queue: FUSEQueueClient
    let queueNumber: Int
    let workload: BenchWorkload
    let target: Benchmark.Target
    let deadline: UInt64
    var histogram = LatencyHistogram()
    var operations: UInt64 = 0
    var errors: UInt64 = 0
    /// The first failed reply's errno (or -1 for a malformed reply), to say what went wrong.
    var firstError: Int32?

    /// Per lane (one operation in flight each): when it started and, for `create`, the
    /// step it is at and the node/handle/name it works on.
    struct Lane { var started: UInt64 = 0; var step = 0; var node: UInt64 = 0; var fh: UInt64 = 0; var serial = 0 }
    private var lanes: [Lane] = []
    private var laneOfSlot: [Int] = []
    private var sequential: UInt64 = 0
    private var random: UInt64
    private var nextSerial = 0
    private var lookupsSinceForget: UInt64 = 0
    private var lookupNode: UInt64 = 0

    init(session: FUSESession, queue: FUSEQueueClient, queueNumber: Int, workload: BenchWorkload,
         target: Benchmark.Target, deadline: UInt64) {
        self.session = session; self.queue = queue; self.queueNumber = queueNumber; self.workload = workload
        self.target = target; self.deadline = deadline
        random = 0x9E37_79B9_7F4A_7C15 &* UInt64(queueNumber + 1)
        // Spread sequential readers over the file so queues do not read the same MiB.
        sequential = UInt64(queueNumber) * 16 << 20
    }

    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    mutating func run() throws {
        lanes = [Lane](repeating: Lane(), count: queue.depth)
        laneOfSlot = [Int](repeating: -1, count: queue.depth)
        if workload == .write1m {
            // Write data is whatever the buffers hold; give them a pattern once.
            for s in 0..<queue.depth { queue.dataBuffer(s).initializeMemory(as: UInt8.self, repeating: 0x5a) }
        }
        for lane in 0..<queue.depth { try startOperation(lane: lane, at: Self.now()) }
        queue.queue.kickIfNeeded()
        var completions: [FUSECompletion] = []
        var next: [(lane: Int, newOperation: Bool)] = []
        completions.reserveCapacity(queue.depth); next.reserveCapacity(queue.depth)
        while queue.inFlight > 0 {
            completions.removeAll(keepingCapacity: true)
            next.removeAll(keepingCapacity: true)
            try queue.waitAndReap(timeoutMilliseconds: 30_000) { completions.append($0) }
            let now = Self.now()
            // Every reaped slot is free again, so nothing may be submitted until all of
            // this batch's replies are read: a new request could take a slot whose reply
            // (and lane) has not been looked at yet.
            for c in completions { if let n = try complete(c, at: now) { next.append(n) } }
            for n in next {
                if n.newOperation { try startOperation(lane: n.lane, at: now) } else { try submitStep(lane: n.lane) }
            }
            queue.queue.kickIfNeeded()
        }
        if lookupsSinceForget > 0 { try session.forget(nodeID: lookupNode, nlookup: lookupsSinceForget) }
    }

    /// Accounts for one completion; returns the lane's next submission, if any.
    private mutating func complete(_ c: FUSECompletion, at now: UInt64) throws -> (lane: Int, newOperation: Bool)? {
        let lane = laneOfSlot[c.slot]
        let ok = c.isWellFormed && c.header?.error == 0
        if !ok {
            errors += 1
            if firstError == nil { firstError = c.isWellFormed ? -(c.header?.error ?? 0) : -1 }
        }
        if workload == .lookup && ok {
            if lookupNode == 0 { lookupNode = FUSEClientDecoder.entryOut(queue.replyArguments(c.slot, count: 128))?.nodeID ?? 0 }
            lookupsSinceForget += 1
            if lookupsSinceForget == Benchmark.forgetBatch, lookupNode != 0 {
                try session.forget(nodeID: lookupNode, nlookup: lookupsSinceForget)
                lookupsSinceForget = 0
            }
        }
        if workload == .create {
            // A failed step ends the cycle: later steps would only fail too.
            if ok, lanes[lane].step < 2 {
                if lanes[lane].step == 0 {
                    let args = queue.replyArguments(c.slot, count: 144)
                    lanes[lane].node = FUSEClientDecoder.entryOut(args)?.nodeID ?? 0
                    lanes[lane].fh = FUSEClientDecoder.openOut(UnsafeRawBufferPointer(rebasing: args[128...]))?.fh ?? 0
                }
                lanes[lane].step += 1
                return (lane, false)
            }
            // The cycle is over. A guest's kernel forgets an unlinked inode once its
            // dentry goes; without that, back-ends keep an fd per created file and run out.
            if lanes[lane].node != 0 {
                try session.forget(nodeID: lanes[lane].node, nlookup: 1)
                lanes[lane].node = 0
            }
        }
        if ok { operations += 1; histogram.record(nanoseconds: now &- lanes[lane].started) }
        return now < deadline ? (lane, true) : nil
    }

    private mutating func startOperation(lane: Int, at now: UInt64) throws {
        lanes[lane].started = now
        lanes[lane].step = 0
        lanes[lane].serial = nextSerial
        nextSerial += 1
        try submitStep(lane: lane)
    }

    private mutating func submitStep(lane: Int) throws {
        let slot: Int?
        let fileSize = UInt64(Benchmark.fileSize)
        switch workload {
        case .stat:
            slot = queue.submit(opcode: .getattr, nodeID: target.fileNode, argument: FUSEGetattrIn(getattrFlags: 0, fh: 0),
                                replyArgumentSize: 104, kick: false)
        case .lookup:
            slot = queue.submit(opcode: .lookup, nodeID: target.directory, argument: FUSENoArgument(), name: target.fileName,
                                replyArgumentSize: 128, kick: false)
        case .read4k:
            random ^= random << 13; random ^= random >> 7; random ^= random << 17
            let offset = (random % (fileSize / 4096)) * 4096
            slot = queue.submit(opcode: .read, nodeID: target.fileNode, argument: FUSEReadIn(fh: target.fileHandle, offset: offset, size: 4096),
                                readLength: 4096, kick: false)
        case .read1m:
            let offset = sequential % fileSize
            sequential += 1 << 20
            slot = queue.submit(opcode: .read, nodeID: target.fileNode, argument: FUSEReadIn(fh: target.fileHandle, offset: offset, size: 1 << 20),
                                readLength: 1 << 20, kick: false)
        case .write1m:
            let offset = sequential % fileSize
            sequential += 1 << 20
            let file = target.perQueue[queueNumber]
            slot = queue.submit(opcode: .write, nodeID: file.node, argument: FUSEWriteIn(fh: file.fh, offset: offset, size: 1 << 20),
                                writeLength: 1 << 20, replyArgumentSize: 8, kick: false)
        case .create:
            let name = "c-q\(queueNumber)-\(lanes[lane].serial)"
            switch lanes[lane].step {
            case 0:
                slot = queue.submit(opcode: .create, nodeID: target.directory,
                                    argument: FUSECreateIn(flags: UInt32(O_RDWR | O_CREAT | O_EXCL), mode: 0o644, umask: 0o022, openFlags: 0),
                                    name: name, replyArgumentSize: 144, kick: false)
            case 1:
                slot = queue.submit(opcode: .release, nodeID: lanes[lane].node,
                                    argument: FUSEReleaseIn(fh: lanes[lane].fh, flags: UInt32(O_RDWR), releaseFlags: 0, lockOwner: 0), kick: false)
            default:
                slot = queue.submit(opcode: .unlink, nodeID: target.directory, argument: FUSENoArgument(), name: name, kick: false)
            }
        }
        guard let slot else { throw FrontendError.unsupported("no free slot or descriptors on queue \(queue.queue.index)") }
        laneOfSlot[slot] = lane
    }
}
