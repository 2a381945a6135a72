import Dispatch
import FerryFUSE
import Foundation
import Glibc

/// What `ferry bench` measures. Each is a loop a guest application might run.
public enum BenchWorkload: String, CaseIterable, Sendable {
    /// GETATTR of one file.
    case stat
    /// LOOKUP of an existing name, with a FORGET on hiprio every 1024 lookups.
    case lookup
    /// Random 4 KiB READs from a 64 MiB file.
    case read4k
    /// Sequential 1 MiB READs from a 64 MiB file.
    case read1m
    /// Sequential 1 MiB WRITEs (wrapping at 64 MiB), one file per queue.
    case write1m
    /// CREATE + RELEASE + UNLINK of a fresh name; one operation is all three (then a
    /// FORGET of the node on hiprio, as the guest kernel sends once the dentry goes).
    case create

    var transferSize: Int {
        switch self {
        case .read4k: return 4096
        case .read1m, .write1m: return 1 << 20
        default: return 0
        }
    }
}

/// The parameters of one benchmark run.
public struct BenchOptions: Sendable {
    public var workload: BenchWorkload
    public var queues: Int
    public var depth: Int
    public var seconds: Double
    public init(workload: BenchWorkload, queues: Int, depth: Int, seconds: Double) {
        self.workload = workload; self.queues = queues; self.depth = depth; self.seconds = seconds
    }
}

/// What one run measured. Latencies are per operation, in microseconds.
public struct BenchResult: Sendable, Codable {
    public var workload: String
    public var queues: Int
    public var depth: Int
    public var seconds: Double
    public var operations: UInt64
    public var bytes: UInt64
    public var errors: UInt64
    /// The errno of the first failed reply (-1: malformed reply); nil without errors.
    public var firstErrno: Int32?
    public var opsPerSecond: Double
    public var megabytesPerSecond: Double
    public var p50: Double
    public var p90: Double
    public var p99: Double
    public var p999: Double
}

/// Runs a workload: prepares its files through FUSE (so any back-end will do), then
/// drives each request queue from its own thread with `depth` requests in flight.
public enum Benchmark {
    static let fileSize = 64 << 20
    static let forgetBatch: UInt64 = 1024
    /// Names live in a directory of their own so runs do not collide with other files.
    static let directoryName = "ferry-bench"

    public static func run(socketPath: String, options: BenchOptions) throws -> BenchResult {
        var configuration = FrontendConfiguration(requestQueues: options.queues, depth: options.depth,
                                                  dataBufferSize: max(options.workload.transferSize, 4096))
        configuration.scratchBytes = 0
        let session = try FUSESession(socketPath: socketPath, configuration: configuration)
        let target = try prepare(session, options.workload, queues: options.queues)

        let totals = Totals()
        let start = DispatchTime.now().uptimeNanoseconds
        let deadline = start + UInt64(options.seconds * 1e9)
        let group = DispatchGroup()
        for (i, queue) in session.requestQueues.enumerated() {
            group.enter()
            let thread = Thread {
                defer { group.leave() }
                var driver = QueueDriver(session: session, queue: queue, queueNumber: i, workload: options.workload,
                                         target: target, deadline: deadline)
                var failure: Error?
                do { try driver.run() } catch { failure = error }
                totals.add(driver, failure: failure)
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
        group.wait()
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        if let failure = totals.failure { throw failure }
        let (histogram, operations, errors) = (totals.histogram, totals.operations, totals.errors)
        try finish(session, options.workload, target: target)

        let bytes = operations * UInt64(options.workload.transferSize)
        return BenchResult(workload: options.workload.rawValue, queues: options.queues, depth: options.depth,
                           seconds: elapsed, operations: operations, bytes: bytes, errors: errors, firstErrno: totals.firstErrno,
                           opsPerSecond: Double(operations) / elapsed,
                           megabytesPerSecond: Double(bytes) / elapsed / 1e6,
                           p50: Double(histogram.quantile(0.5)) / 1000, p90: Double(histogram.quantile(0.9)) / 1000,
                           p99: Double(histogram.quantile(0.99)) / 1000, p999: Double(histogram.quantile(0.999)) / 1000)
    }

    /// The drivers' results, summed under a lock as each thread ends.
    /// @unchecked Sendable: every var is touched only with `lock` held.
final class Totals: @unchecked Sendable {
        let lock = NSLock()
        var histogram = LatencyHistogram()
        var operations: UInt64 = 0, errors: UInt64 = 0
        var failure: Error?
        var firstErrno: Int32?
        func add(_ d: QueueDriver, failure: Error?) {
            lock.lock(); defer { lock.unlock() }
            histogram.merge(d.histogram); operations += d.operations; errors += d.errors
            self.failure = self.failure ?? failure
            firstErrno = firstErrno ?? d.firstError
        }
    }

    /// What the drivers work on: a directory, and a file (node and open handle).
    struct Target: Sendable {
        var directory: UInt64
        var fileNode: UInt64 = 0
        var fileHandle: UInt64 = 0
        var fileName = ""
        /// write1m: one (node, fh) per queue.
        var perQueue: [(node: UInt64, fh: UInt64)] = []
    }

    static func prepare(_ session: FUSESession, _ workload: BenchWorkload, queues: Int) throws -> Target {
        let q = session.queue
        let root = FUSESession.rootNodeID
        let directory: UInt64
        do { directory = try q.mkdir(parent: root, name: directoryName, mode: 0o755).nodeID }
        catch FrontendError.fuseError(_, EEXIST) { directory = try q.lookup(parent: root, name: directoryName).nodeID }
        var target = Target(directory: directory)
        switch workload {
        case .stat, .lookup:
            target.fileName = "stat-target"
            let (entry, open) = try q.create(parent: directory, name: target.fileName, flags: O_RDWR | O_CREAT, mode: 0o644)
            try q.release(nodeID: entry.nodeID, fh: open.fh)
            target.fileNode = entry.nodeID
        case .read4k, .read1m:
            target.fileName = "read-64m"
            let entry: FUSEEntryOut
            do { entry = try q.lookup(parent: directory, name: target.fileName) }
            catch FrontendError.fuseError(_, ENOENT) { entry = FUSEEntryOut() }
            if entry.nodeID == 0 || entry.attr.size != UInt64(fileSize) {
                try fill(q, directory: directory, name: target.fileName)
            }
            target.fileNode = try q.lookup(parent: directory, name: target.fileName).nodeID
            target.fileHandle = try q.open(nodeID: target.fileNode, flags: O_RDONLY).fh
        case .write1m:
            for i in 0..<queues {
                let (entry, open) = try q.create(parent: directory, name: "write-q\(i)", flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644)
                target.perQueue.append((entry.nodeID, open.fh))
            }
        case .create:
            break
        }
        return target
    }

    /// Writes the 64 MiB read file in 1 MiB pieces (the slots are at least 4 KiB; writes
    /// are as large as the slot allows).
    static func fill(_ q: FUSEQueueClient, directory: UInt64, name: String) throws {
        let (entry, open) = try q.create(parent: directory, name: name, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644)
        let chunk = q.dataBufferSize
        var offset = 0
        while offset < fileSize {
            let n = min(chunk, fileSize - offset)
            _ = try q.roundTripWrite(nodeID: entry.nodeID, fh: open.fh, offset: UInt64(offset), length: n) { b in
                for i in stride(from: 0, to: b.count, by: 8) { b.storeBytes(of: UInt64(offset + i), toByteOffset: i, as: UInt64.self) }
            }
            offset += n
        }
        try q.release(nodeID: entry.nodeID, fh: open.fh)
    }

    static func finish(_ session: FUSESession, _ workload: BenchWorkload, target: Target) throws {
        let q = session.queue
        if target.fileHandle != 0 { try q.release(nodeID: target.fileNode, fh: target.fileHandle) }
        for (node, fh) in target.perQueue { try q.release(nodeID: node, fh: fh) }
        try session.drainHiprio()
    }
}
