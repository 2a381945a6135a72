import FerryTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `GuestMigration.isRunning`, which the guest tests use to see a QEMU end: inside
/// `scripts/nfs/isolated` nobody reaps it, and an exited QEMU stays a zombie.
@Suite("Guest harness: is a process running")
struct GuestProcessTests {
    /// Spawns `argv` directly (not through Foundation's Process, which would reap it).
    static func spawn(_ argv: [String]) throws -> pid_t {
        var pid: pid_t = 0
        var cArgs = argv.map { strdup($0) } + [nil]
        defer { for p in cArgs { free(p) } }
        let rc = posix_spawn(&pid, argv[0], nil, nil, &cArgs, environ)
        guard rc == 0 else { throw HarnessError("posix_spawn \(argv[0]): \(rc)") }
        return pid
    }

    @Test func anExitedChildNobodyReapedIsNotRunningThoughSignalZeroStillFindsIt() throws {
        let pid = try Self.spawn(["/bin/true"])
        defer { var status: Int32 = 0; waitpid(pid, &status, 0) }
        // A zombie once it exited; a bound, not a measure of speed.
        let zombie = GuestMigration.waitFor(30) {
            ((try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? "").contains(") Z ")
        }
        try #require(zombie, "the child never became a zombie")
        #expect(kill(pid, 0) == 0, "signal 0 finds a zombie: what made the old check wrong")
        #expect(!GuestMigration.isRunning(pid))
    }

    @Test func aLiveChildIsRunningAndAReapedOneIsNot() throws {
        let pid = try Self.spawn(["/bin/sleep", "600"])
        #expect(GuestMigration.isRunning(pid))
        kill(pid, SIGKILL)
        var status: Int32 = 0
        #expect(waitpid(pid, &status, 0) == pid)
        #expect(!GuestMigration.isRunning(pid))
    }
}

/// The scripts that start ganesha and Ceph leave daemons running for the rest of the run,
/// while other tests read their children's output through pipes. A daemon that inherited
/// such a pipe's write end would keep that read from ending until the daemon stops: CI saw
/// four tests in four suites wait out their time limits together, freed at the same second
/// as a ganesha restart.
@Suite("Harness: daemons the scripts start inherit none of the tests' descriptors")
struct ScriptDescriptorTests {
    @Test func aPipeReachesEndOfFileWhileADaemonTheScriptLeftRunsOn() throws {
        var ends: [Int32] = [-1, -1]
        try #require(pipe(&ends) == 0)   // not close-on-exec, as Foundation's Pipe
        defer { close(ends[0]) }
        let run = try runBashScript(["-c", "setsid sleep 120 </dev/null >/dev/null 2>&1 & echo $!"])
        let daemon = pid_t(run.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        try #require(run.status == 0 && daemon > 0, "\(run.output)")
        defer { kill(daemon, SIGKILL) }
        close(ends[1])
        // Every write end is closed unless the daemon holds one: the read end then hangs up.
        var reader = pollfd(fd: ends[0], events: Int16(POLLIN), revents: 0)
        let ready = poll(&reader, 1, 10_000)
        var byte: UInt8 = 0
        #expect(ready == 1 && read(ends[0], &byte, 1) == 0, "the script's daemon holds the test's pipe")
        let held = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(daemon)/fd")) ?? []
        #expect(Set(held).isSubset(of: ["0", "1", "2"]), "the daemon holds descriptors \(held.sorted())")
    }
}

/// The lock NFS tests take around the shared ganesha (`shared`) or around a restart of it
/// (`exclusive`), on a pool as wide as CI's two cores.
@Suite("Harness: the NFS server's lock waits without taking a thread")
struct AsyncReadersWriterLockTests {
    /// Everything here runs on one thread of the test's own (`OneThreadExecutor`), not on the
    /// shared pool, which other tests keep busy: a waiter that blocked its thread would stop
    /// the test's other tasks, whatever the rest of the process does.
    @Test func waitersTakeNoThreadAndAWaitingWriterGoesBeforeLaterReaders() async throws {
        let thread = OneThreadExecutor()
        let lock = AsyncReadersWriterLock()
        let order = Locked<[String]>([])
        let otherWorkRan = Locked(false)
        await lock.lockShared()   // a long check holds it
        // Should a waiter block the thread, the other work below would never run, nor would
        // this test: a plain thread then ends the long check after 60 s, so the test fails
        // instead of hanging.
        let endedByWatchdog = Locked(false)
        Thread {
            let deadline = Date().addingTimeInterval(60)
            while !otherWorkRan.value && Date() < deadline { usleep(10_000) }
            if !otherWorkRan.value { endedByWatchdog.update { $0 = true }; lock.unlockShared() }
        }.start()
        let writers = (0..<8).map { _ in
            Task(executorPreference: thread) { await lock.exclusive { order.update { $0.append("writer") } } }
        }
        let readers = (0..<8).map { _ in
            Task(executorPreference: thread) { await lock.shared { order.update { $0.append("reader") } } }
        }
        // One thread runs the sixteen waiters' first steps, then this.
        await Task(executorPreference: thread) { otherWorkRan.update { $0 = true } }.value
        #expect(!endedByWatchdog.value, "the other work waited for the lock's waiters")
        #expect(await eventuallySuspending { lock.waiting == (8, 8) }, "\(lock.waiting)")
        #expect(order.value.isEmpty, "a waiter got in while the check held the lock")
        if !endedByWatchdog.value { lock.unlockShared() }
        for task in writers + readers { await task.value }
        #expect(order.value == Array(repeating: "writer", count: 8) + Array(repeating: "reader", count: 8))
        #expect(lock.waiting == (0, 0))
    }

    @Test func readersShareAndAWriterWaitsForTheLastOfThem() async throws {
        let lock = AsyncReadersWriterLock()
        await lock.lockShared()
        await lock.lockShared()   // two readers at once
        let wrote = Locked(false)
        let writer = Task { await lock.exclusive { wrote.update { $0 = true } } }
        #expect(await eventuallySuspending { lock.waiting.writers == 1 })
        lock.unlockShared()
        try await Task.sleep(for: .milliseconds(200))
        #expect(!wrote.value, "the writer got in while a reader still held")
        lock.unlockShared()
        await writer.value
        #expect(wrote.value)
    }

    /// A task executor with one thread, which runs its jobs in order, for the life of the process.
    final class OneThreadExecutor: TaskExecutor, @unchecked Sendable {
        private let condition = NSCondition()
        private var jobs: [UnownedJob] = []   // guarded by `condition`

        init() {
            Thread { [self] in
                while true {
                    condition.lock()
                    while jobs.isEmpty { condition.wait() }
                    let job = jobs.removeFirst()
                    condition.unlock()
                    job.runSynchronously(on: asUnownedTaskExecutor())
                }
            }.start()
        }

        func enqueue(_ job: consuming ExecutorJob) {
            let job = UnownedJob(job)
            condition.lock()
            jobs.append(job)
            condition.signal()
            condition.unlock()
        }
    }

}

/// The slots guest tests run in (`GuestSlots`), tried on slots of their own.
@Suite("Harness: tests in slots run on threads of their own, so many at once, and are timed from their slot")
struct SlotsTests {
    @Test func bodiesThatBlockLeaveThePoolFreeAndNoMoreThanTheWidthRunAtOnce() async throws {
        let slots = Slots(width: 2)
        let running = Locked(0), most = Locked(0)
        let release = Locked(false)
        // Six bodies that block their thread until released: with the pool two threads wide,
        // blocking bodies on it would leave nothing to release them.
        let bodies = (0..<6).map { _ in
            Task {
                try await slots.run(limit: .seconds(600)) {
                    running.update { $0 += 1 }
                    most.update { $0 = max($0, running.value) }
                    while !release.value { usleep(10_000) }
                    running.update { $0 -= 1 }
                }
            }
        }
        #expect(await eventuallySuspending { running.value == 2 && slots.waiting == 4 })
        await Task.detached { release.update { $0 = true } }.value
        for body in bodies { try await body.value }
        #expect(most.value == 2)
    }

    @Test func aBodyRunningPastItsLimitIsAnIssueAndTheWaitForASlotIsNotCounted() async throws {
        let slots = Slots(width: 1)
        let holder = Task { try await slots.run(limit: .seconds(600)) { _ = usleep(1_500_000) } }
        try await Task.sleep(for: .milliseconds(100))
        // Waits about 1.4 s for the slot, then runs 0.5 s: within a 1 s limit.
        try await slots.run(limit: .seconds(1)) { _ = usleep(500_000) }
        try await holder.value
        let overran: () async throws -> Void = {
            try await slots.run(limit: .seconds(1)) { _ = usleep(2_000_000) }
        }
        let isTheLimit: @Sendable (Issue) -> Bool = { issue in issue.comments.contains { $0.rawValue.contains("still running") } }
        try await withKnownIssue("the body runs 2 s against a 1 s limit", isIntermittent: false, overran, when: { true }, matching: isTheLimit)
    }
}

/// Polls `condition` every 10 ms, suspended between polls (holding no thread), up to 1,000
/// times; returns whether it held.
private func eventuallySuspending(_ condition: () -> Bool) async -> Bool {
    for _ in 0..<1000 {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}
