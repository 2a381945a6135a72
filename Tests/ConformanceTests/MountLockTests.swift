import FerryTestSupport
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// fcntl and flock locks through `ferry mount` of a directory, between processes of the
/// host: they are the host kernel's locks on the exported files (so plain host processes see
/// them too), and a waiting F_SETLKW waits in the daemon's `ferry-lockwait` thread, never in
/// a request thread.
@Suite("Record locks through ferry mount", .serialized, .requires(.root, .devFUSE))
struct MountLockTests {
    /// scripts/guest/programs/lock-tool.c, built for the host once per test process.
    static let lockTool: Result<String, HarnessError> = {
        do {
            let output = try makeTemporaryDirectory("ferry-lock-tool") + "/lock-tool"
            let r = try runToCompletion("/usr/bin/gcc", ["-O2", "-Wall", "-o", output,
                                                         BuiltProducts.packageRoot.path + "/scripts/guest/programs/lock-tool.c"])
            return r.succeeded ? .success(output) : .failure(HarnessError("gcc lock-tool.c failed:\n\(r.output)"))
        } catch {
            return .failure(HarnessError("\(error)"))
        }
    }()

    /// One lock-tool process, its output in a file.
    final class Tool {
        let process = Process()
        let outputPath: String
        init(_ arguments: [String]) throws {
            outputPath = try makeTemporaryDirectory("ferry-lock-tool-run") + "/out"
            _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
            let handle = FileHandle(forWritingAtPath: outputPath)!
            process.executableURL = URL(fileURLWithPath: try MountLockTests.lockTool.get())
            process.arguments = arguments
            process.standardOutput = handle
            process.standardError = handle
            try runWithDefaultSignalMask(process)
        }
        var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }
        /// Waits for the exit (bounded, only so that a broken build ends); nil if still running.
        func exitStatus(within seconds: Double = 60) -> Int32? {
            let deadline = Date().addingTimeInterval(seconds)
            while process.isRunning && Date() < deadline { usleep(10_000) }
            return process.isRunning ? nil : process.terminationStatus
        }
        deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() } }
    }

    /// Runs lock-tool to its end: (status, output).
    static func run(_ arguments: [String]) throws -> (Int32, String) {
        let tool = try Tool(arguments)
        let status = tool.exitStatus() ?? -1
        return (status, tool.output.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    static func mount() throws -> FerryMount {
        let mount = try FerryMount()
        try Data("0123456789".utf8).write(to: URL(fileURLWithPath: mount.source + "/f"))
        return mount
    }

    /// Starts a holder (`hold` or `flock-hold` with MNT/held and MNT/release) and returns
    /// once it holds its lock.
    static func holder(_ m: FerryMount, _ arguments: [String]) throws -> Tool {
        let tool = try Tool(arguments + [m.mountpoint + "/held", m.mountpoint + "/release"])
        #expect(eventually { FileManager.default.fileExists(atPath: m.source + "/held") }, "\(tool.output)")
        return tool
    }

    /// Starts a waiter and returns once its request waits on ferry's lock-wait thread.
    static func waiter(_ m: FerryMount, _ arguments: [String]) throws -> Tool {
        let tool = try Tool(arguments)
        #expect(eventually { processTreeHasThread(m.process.processIdentifier, named: "ferry-lockwait") })
        #expect(tool.process.isRunning, "\(tool.output)")
        return tool
    }

    @Test func fcntlLocksMeetBetweenProcessesAndAWaiterIsGrantedWhenTheHolderUnlocks() throws {
        let m = try Self.mount()
        defer { m.stop() }
        let (mnt, src) = (m.mountpoint, m.source)
        let holder = try Self.holder(m, ["hold", mnt + "/f", "w", "10", "90"])

        let (_, seen) = try Self.run(["getlk", mnt + "/f", "w", "0", "0"])
        // The holder's own pid: it is a process of this mount (the daemon keeps the pid each
        // lock owner locked as; the host reports none for the OFD lock that holds it).
        #expect(seen == "getlk: F_WRLCK start=10 len=90 pid=\(holder.process.processIdentifier)")
        // A host process beside the mount sees the same lock on the exported file itself.
        let (_, onHost) = try Self.run(["getlk", src + "/f", "w", "0", "0"])
        #expect(onHost.hasPrefix("getlk: F_WRLCK start=10 len=90"), "\(onHost)")
        let (refused, tried) = try Self.run(["setlk", mnt + "/f", "w", "50", "1"])
        #expect(refused == 1 && tried == "setlk: Resource temporarily unavailable")
        #expect(try Self.run(["setlk", mnt + "/f", "w", "0", "10"]).0 == 0)   // outside the held range

        #expect(!processTreeHasThread(m.process.processIdentifier, named: "ferry-lockwait"))
        // The waiting request is deferred to the daemon's lock-wait thread.
        let waiter = try Self.waiter(m, ["wait", mnt + "/f", "w", "0", "0", mnt + "/release"])
        _ = FileManager.default.createFile(atPath: src + "/release", contents: nil)
        #expect(holder.exitStatus() == 0)
        #expect(waiter.exitStatus() == 0)
        #expect(waiter.output == "wait: granted, release seen\n")
    }

    @Test func flockLocksMeetBetweenProcessesAndAWaiterIsGrantedWhenTheHolderUnlocks() throws {
        let m = try Self.mount()
        defer { m.stop() }
        let (mnt, src) = (m.mountpoint, m.source)
        let holder = try Self.holder(m, ["flock-hold", mnt + "/f"])
        let (refused, tried) = try Self.run(["flock-try", mnt + "/f"])
        #expect(refused == 1 && tried == "flock-try: Resource temporarily unavailable")
        // The host's own flock on the exported file meets it as well.
        let (hostRefused, _) = try Self.run(["flock-try", src + "/f"])
        #expect(hostRefused == 1)

        let waiter = try Self.waiter(m, ["flock-wait", mnt + "/f", mnt + "/release"])
        _ = FileManager.default.createFile(atPath: src + "/release", contents: nil)
        #expect(holder.exitStatus() == 0)
        #expect(waiter.exitStatus() == 0)
        #expect(waiter.output == "flock-wait: granted, release seen\n")
    }

    @Test func aKilledWaiterEndsAtOnceAndIsNeverGrantedItsLock() throws {
        let m = try Self.mount()
        defer { m.stop() }
        let (mnt, src) = (m.mountpoint, m.source)
        let holder = try Self.holder(m, ["hold", mnt + "/f", "w", "0", "0"])
        let waiter = try Self.waiter(m, ["wait", mnt + "/f", "w", "0", "0"])
        kill(waiter.process.processIdentifier, SIGKILL)
        // INTERRUPT answered EINTR: the process is gone while the lock is still held.
        #expect(waiter.exitStatus() != nil)
        #expect(holder.process.isRunning)
        _ = FileManager.default.createFile(atPath: src + "/release", contents: nil)
        #expect(holder.exitStatus() == 0)
        // Nobody holds the file now: the dead waiter's lock was never taken for it.
        let (status, output) = try Self.run(["setlk", src + "/f", "w", "0", "0"])
        #expect(status == 0, "\(output)")
    }

    @Test func unmountingWhileAWaiterWaitsEndsPromptly() throws {
        let m = try Self.mount()
        defer { m.stop() }
        let mnt = m.mountpoint
        let holder = try Self.holder(m, ["hold", mnt + "/f", "w", "0", "0"])
        let waiter = try Self.waiter(m, ["wait", mnt + "/f", "w", "0", "0"])
        // ferry unmounts (busy: detached and aborted), the waiter's call fails, ferry exits,
        // all while the lock is still held by the other process.
        #expect(m.terminate(), "\(m.log)")
        #expect(waiter.exitStatus() == 1, "\(waiter.output)")
        #expect(holder.process.isRunning)
        kill(holder.process.processIdentifier, SIGKILL)
    }

    /// Over io_uring rings a waiting lock cannot yet be held back in its entry, so ferry does
    /// not agree the lock flags there and the host kernel keeps the locks: processes on the
    /// mount still meet each other's locks, and a waiter is granted when the holder unlocks.
    @Test(.requires(.fuseURing)) func overIOUringLocksStayInTheHostKernelAndStillWork() throws {
        let m = try Transport.uring.mount()
        defer { m.stop() }
        try Data("0123456789".utf8).write(to: URL(fileURLWithPath: m.source + "/f"))
        #expect(try m.counters()["transport"] == "io_uring")
        let mnt = m.mountpoint
        let holder = try Self.holder(m, ["hold", mnt + "/f", "w", "10", "90"])
        let (refused, tried) = try Self.run(["setlk", mnt + "/f", "w", "50", "1"])
        #expect(refused == 1 && tried == "setlk: Resource temporarily unavailable")
        let waiter = try Tool(["wait", mnt + "/f", "w", "0", "0", mnt + "/release"])
        usleep(200_000)
        #expect(waiter.process.isRunning, "\(waiter.output)")
        #expect(!processTreeHasThread(m.process.processIdentifier, named: "ferry-lockwait"))
        _ = FileManager.default.createFile(atPath: m.source + "/release", contents: nil)
        #expect(holder.exitStatus() == 0)
        #expect(waiter.exitStatus() == 0)
        #expect(waiter.output == "wait: granted, release seen\n")
    }
}
