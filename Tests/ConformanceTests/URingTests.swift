import Foundation
import FerryTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// FUSE over io_uring through `ferry mount` on real /dev/fuse: the rings really carry the
/// requests (ferry's counters, SIGUSR2), data stays right under several processes, FORGET and
/// INTERRUPT still arrive through the device beside the rings, unmounting ends the rings, and
/// `--uring on|auto` follow the kernel's switch.
@Suite("FUSE over io_uring through ferry mount", .serialized, .requires(.root, .devFUSE, .fuseURing))
struct URingTests {
    private func number(_ counters: [String: String], _ key: String) -> Int { Int(counters[key] ?? "") ?? -1 }

    @Test("Every request but INIT, FORGET and INTERRUPT goes through the rings, and SIGTERM unmounts cleanly",
          .timeLimit(.minutes(5)))
    func requestsGoThroughTheRings() throws {
        let mount = try Transport.uring.mount()
        defer { mount.stop() }
        for i in 0..<100 {
            let path = mount.mountpoint + "/file\(i)"
            try Data("content \(i)".utf8).write(to: URL(fileURLWithPath: path))
            #expect(FileManager.default.contents(atPath: path) == Data("content \(i)".utf8))
        }
        // A request still in flight (a RELEASE the kernel sends after close(2) returns) is
        // counted by the ring when it arrives and by the server when it is answered: compare
        // counters that stayed the same between two snapshots.
        var counters = try mount.counters()
        for _ in 0..<50 {
            usleep(100_000)
            let again = try mount.counters()
            if again["uring_requests"] == counters["uring_requests"] && again["requests"] == counters["requests"] { break }
            counters = again
        }
        #expect(counters["transport"] == "io_uring", "\(counters)\n\(mount.log)")
        // The server's count leaves INIT out (it comes before the session).
        let device = number(counters, "forgets") + number(counters, "interrupts")
        #expect(number(counters, "uring_requests") >= 300, "\(counters)")
        #expect(number(counters, "uring_requests") == number(counters, "requests") - device,
                "requests that did not come through the rings: \(counters)")

        let exited = mount.terminate(timeout: 20)
        try #require(exited, "ferry still running 20 s after SIGTERM:\n\(mount.log)")
        #expect(mount.process.terminationReason == .exit && mount.process.terminationStatus == 0, "\(mount.log)")
        #expect(!isFUSEMount(mount.mountpoint))
        #expect(!mount.log.contains(" error "), "\(mount.log)")
        let unmounted = mount.log.split(separator: "\n").last { $0.hasSuffix(" unmounted") }.map { FerryMount.metadata(of: String($0)) }
        #expect(number(unmounted ?? [:], "uring_requests") >= number(counters, "uring_requests"), "\(mount.log)")
    }

    @Test("Several processes write and read back large files through the rings", .timeLimit(.minutes(5)))
    func dataIsCorrectWithSeveralProcesses() throws {
        let mount = try Transport.uring.mount()
        defer { mount.stop() }
        let scratch = try makeTemporaryDirectory("ferry-uring-data")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        // Each process: 9 MiB of random bytes (not a multiple of a request), copied in through
        // the mount, compared through the mount and in the source directory beneath it.
        let script = """
            set -e
            dd if=/dev/urandom of="$1/in-$3" bs=1000000 count=9 status=none
            cp "$1/in-$3" "$2/out-$3"
            cmp "$1/in-$3" "$2/out-$3"
            cat "$2/out-$3" "$2/out-$3" > "$2/twice-$3"
            cat "$1/in-$3" "$1/in-$3" | cmp - "$2/twice-$3"
            """
        let processes = try (0..<4).map { i -> Process in
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/sh")
            p.arguments = ["-c", script, "sh", scratch, mount.mountpoint, "\(i)"]
            try p.run()
            return p
        }
        for (i, p) in processes.enumerated() {
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "process \(i) failed\n\(mount.log.suffix(2000))")
        }
        for i in 0..<4 {
            let written = FileManager.default.contents(atPath: scratch + "/in-\(i)")
            #expect(written?.count == 9_000_000)
            #expect(written == FileManager.default.contents(atPath: mount.source + "/out-\(i)"), "source copy \(i) differs")
        }
        let counters = try mount.counters()
        // 4 x 27 MB moved: at least one 1 MiB request for each MiB.
        #expect(counters["transport"] == "io_uring" && number(counters, "uring_requests") > 100, "\(counters)")
    }

    @Test("FORGETs arrive through the device while the rings serve: nodes are released", .timeLimit(.minutes(5)))
    func forgetsReleaseNodes() throws {
        let mount = try Transport.uring.mount()
        defer { mount.stop() }
        for i in 0..<2000 {
            _ = FileManager.default.createFile(atPath: mount.source + "/n\(i)", contents: nil)
        }
        var st = stat()
        for i in 0..<2000 { #expect(lstat(mount.mountpoint + "/n\(i)", &st) == 0) }
        let held = try mount.counters()
        #expect(number(held, "nodes") >= 2000, "\(held)")
        // Evicting the kernel's dentries and inodes sends FORGETs for them.
        let deadline = Date().addingTimeInterval(30)
        var now = held
        repeat {
            try "2".write(toFile: "/proc/sys/vm/drop_caches", atomically: false, encoding: .utf8)
            usleep(200_000)
            now = try mount.counters()
        } while number(now, "nodes") >= 1000 && Date() < deadline
        #expect(number(now, "nodes") < 1000 && number(now, "forgets") > 0, "nodes still held: \(now)")
        #expect(number(now, "uring_requests") > number(held, "uring_requests") || number(now, "uring_requests") > 2000, "\(now)")
        // Looked up again, through the rings, after being forgotten.
        for i in stride(from: 0, to: 2000, by: 100) { #expect(lstat(mount.mountpoint + "/n\(i)", &st) == 0) }
    }

    @Test("Writers killed in the middle of a WRITE send INTERRUPTs; the mount keeps serving", .timeLimit(.minutes(5)))
    func interruptedWritersLeaveTheMountServing() throws {
        let mount = try Transport.uring.mount()
        defer { mount.stop() }
        var counters: [String: String] = [:]
        for attempt in 0..<60 {
            // Without a writeback cache each 1 MiB WRITE is a request the writer waits for.
            let dd = Process()
            dd.executableURL = URL(fileURLWithPath: "/bin/dd")
            dd.arguments = ["if=/dev/zero", "of=\(mount.mountpoint)/victim", "bs=1M", "count=400", "status=none"]
            try dd.run()
            usleep(UInt32(20_000 + (attempt % 7) * 7_000))
            // SIGKILL: dd holds back the signals it catches while it writes.
            kill(dd.processIdentifier, SIGKILL)
            dd.waitUntilExit()
            if attempt % 5 == 4 {
                counters = try mount.counters()
                if number(counters, "interrupts") > 0 { break }
            }
        }
        #expect(number(counters, "interrupts") > 0, "no INTERRUPT reached ferry: \(counters)")
        let data = Data((0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        try data.write(to: URL(fileURLWithPath: mount.mountpoint + "/after"))
        #expect(FileManager.default.contents(atPath: mount.mountpoint + "/after") == data)
        #expect(FileManager.default.contents(atPath: mount.source + "/after") == data)
        #expect(mount.terminate(timeout: 20) && mount.process.terminationStatus == 0, "\(mount.log.suffix(3000))")
    }

    @Test("SIGTERM while a process holds a file open aborts the connection and ends the rings", .timeLimit(.minutes(2)))
    func busyUnmountEndsTheRings() throws {
        let mount = try Transport.uring.mount()
        defer { mount.stop() }
        try Data("held".utf8).write(to: URL(fileURLWithPath: mount.mountpoint + "/held"))
        let fd = open(mount.mountpoint + "/held", O_RDONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        let exited = mount.terminate(timeout: 20)
        try #require(exited, "ferry still running 20 s after SIGTERM with a file held open:\n\(mount.log)")
        #expect(mount.process.terminationReason == .exit && mount.process.terminationStatus == 0, "\(mount.log)")
        #expect(!isFUSEMount(mount.mountpoint))
        #expect(FileManager.default.contents(atPath: mount.source + "/held") == Data("held".utf8))
    }

    @Test("One ring can serve every CPU's queue (--uring-queues 1)", .timeLimit(.minutes(5)))
    func fewerRingsThanQueues() throws {
        let mount = try Transport.uring.mount(extraArguments: ["--uring-queues", "1", "--uring-depth", "2"])
        defer { mount.stop() }
        // Several processes, which the scheduler spreads over the CPUs (and so the queues).
        let churn = try Concurrency.churn(in: mount.mountpoint, seed: 501, workers: 4, ops: 100)
        Concurrency.expectChurnPassed(churn, on: "ferry mount --uring-queues 1", log: mount.log)
        let counters = try mount.counters()
        #expect(counters["transport"] == "io_uring" && number(counters, "uring_requests") > 400, "\(counters)")
    }

    @Test("--uring on with the kernel's switch off is a clear error, before mounting", .timeLimit(.minutes(2)))
    func onWithTheSwitchOffFails() throws {
        let outcome: Result<FerryMount, Error> = try URingSwitch.with(false) {
            Result { try FerryMount(extraArguments: ["--uring", "on"]) }
        }
        switch outcome {
        case .success(let mount):
            Issue.record("ferry mount --uring on mounted with enable_uring=0:\n\(mount.log)")
            mount.stop()
        case .failure(let error):
            let text = "\(error)"
            #expect(text.contains("exited with status 2")
                    && text.contains("--uring on: FUSE over io_uring is disabled: echo 1 > \(URingSwitch.path)"), "\(text)")
        }
    }

    @Test("auto serves through /dev/fuse when the switch is off, through the rings when it is on",
          .timeLimit(.minutes(5)), arguments: [false, true])
    func autoFollowsTheSwitch(_ enabled: Bool) throws {
        let mount = try URingSwitch.with(enabled) { try FerryMount(extraArguments: ["--uring", "auto"]) }
        defer { mount.stop() }
        try Data("x".utf8).write(to: URL(fileURLWithPath: mount.mountpoint + "/x"))
        #expect(FileManager.default.contents(atPath: mount.mountpoint + "/x") == Data("x".utf8))
        let counters = try mount.counters()
        if enabled {
            #expect(counters["transport"] == "io_uring" && number(counters, "uring_requests") > 0, "\(counters)")
        } else {
            #expect(counters["transport"] == "classic" && counters["uring_requests"] == nil, "\(counters)")
        }
    }
}
