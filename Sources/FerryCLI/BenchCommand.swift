import ArgumentParser
import FerryDaemon
import FerryVhostFrontend
import Foundation

extension BenchWorkload: ExpressibleByArgument {}

/// `ferry bench`: drive a vhost-user-fs back-end (Ferry's or any other) through the
/// Swift front-end, with no VM, and report throughput and latency percentiles.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmark a vhost-user-fs back-end socket without a VM.",
        discussion: """
            Connects as a front-end (what QEMU and a guest kernel do), prepares the files the \
            workload needs through FUSE, then keeps DEPTH requests in flight on each of QUEUES \
            request queues (one thread per queue) for SECONDS. Workloads: \
            \(BenchWorkload.allCases.map(\.rawValue).joined(separator: ", ")).
            """
    )

    @Option(help: "The back-end's vhost-user socket.")
    var socket: String

    @Option(help: "stat, lookup, read4k, read1m, write1m or create.")
    var workload: BenchWorkload

    @Option(help: "Request queues (the back-end must offer at least this many).")
    var queues: Int = 1

    @Option(help: "Requests in flight per queue.")
    var depth: Int = 16

    @Option(help: "How long to run.")
    var seconds: Double = 10

    @Flag(help: "Print the result as one JSON object.")
    var json = false

    func validate() throws {
        guard (1...64).contains(queues) else { throw ValidationError("--queues must be between 1 and 64") }
        guard (1...1024).contains(depth) else { throw ValidationError("--depth must be between 1 and 1024") }
        guard seconds > 0 && seconds <= 3600 else { throw ValidationError("--seconds must be in (0, 3600]") }
    }

    func run() throws {
        let result: BenchResult
        do {
            result = try Benchmark.run(socketPath: socket, options: BenchOptions(workload: workload, queues: queues, depth: depth, seconds: seconds))
        } catch let error as FrontendError {
            throw CLIError("bench against \(socket): \(error)")
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(result), as: UTF8.self))
            return
        }
        let f = { (v: Double) in String(format: "%.1f", v) }
        print("workload \(result.workload)  queues \(result.queues)  depth \(result.depth)  \(f(result.seconds)) s")
        print("ops/s \(f(result.opsPerSecond))  (\(result.operations) operations, \(result.errors) errors\(result.firstErrno.map { ", first errno \($0)" } ?? ""))")
        if result.bytes > 0 { print("MB/s \(f(result.megabytesPerSecond))") }
        print("latency µs  p50 \(f(result.p50))  p90 \(f(result.p90))  p99 \(f(result.p99))  p99.9 \(f(result.p999))")
    }
}
