import FerryTestSupport
import Foundation
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Two 6.12 guests, each with its own `ferry virtiofsd -o posix_lock -o flock` on one
/// directory, see each other's fcntl and flock locks: both daemons keep them on the host's
/// files. Guest B's waiting lock waits in its daemon (the `ferry-lockwait` thread appears
/// when it is deferred) until guest A lets go, and is granted only then. A host process
/// through `ferry mount` and a guest see each other's locks likewise.
@Suite(.serialized, .requires(.root, .qemu, .devFUSE))
struct LockGuestTests {
    /// A 6.12 image of its own with scripts/guest/programs/lock-tool.c in /opt/ferry/bin.
    static let image: Result<String, HarnessError> = {
        do {
            let program = try Guest.compileGuestProgram("lock-tool")
            return Guest.buildImage(kernel: .linux6_12, directory: Guest.repo + "/.build/guest-locks-6.12", extras: [program])
        } catch {
            return .failure(HarnessError("\(error)"))
        }
    }()

    /// One vCPU each: two TCG guests share the machine.
    static let machine = GuestMachine(kernel: .linux6_12, smp: 1, queues: 1)

    /// Guest A: holds a write lock on bytes 10..99 of /mnt/f and a flock on /mnt/g until the
    /// host creates the release files.
    static let holderCommand = """
        lock-tool hold /mnt/f w 10 90 /mnt/a-posix-held /mnt/release-posix &
        lock-tool flock-hold /mnt/g /mnt/a-flock-held /mnt/release-flock &
        wait
        """

    /// Guest B: sees A's locks, is refused them, then waits for each; `release seen` says
    /// the host had released A's lock before B's was granted.
    static let waiterCommand = """
        lock-tool getlk /mnt/f w 0 0
        lock-tool setlk /mnt/f w 0 0
        lock-tool wait /mnt/f w 0 0 /mnt/release-posix
        lock-tool flock-try /mnt/g
        touch /mnt/b-flock-waiting
        lock-tool flock-wait /mnt/g /mnt/release-flock
        """

    /// `Guest.run` on a thread of its own.
    final class Background: @unchecked Sendable {
        private let result = Mutex<Result<Guest.Run, any Error>?>(nil)
        private let done = DispatchSemaphore(value: 0)
        init(socket: String, command: String, image: String) {
            Thread { [self] in
                let r = Result { try Guest.run(socket: socket, command: command, timeout: 400, machine: LockGuestTests.machine, image: image) }
                result.withLock { $0 = r }
                done.signal()
            }.start()
        }
        func wait() throws -> Guest.Run {
            done.wait()
            return try result.withLock { $0! }.get()
        }
    }

    @Test
    func twoGuestsOnTwoDaemonsSeeAndWaitForEachOthersLocks() async throws {
        try await GuestSlots.run(minutes: 15) {
            let export = try makeTemporaryDirectory("ferry-guest-locks")
            defer { try? FileManager.default.removeItem(atPath: export) }
            try Self.twoGuests(export: export) { try Daemon.ferry(export: export, extra: $0) }
        }
    }

    /// The same on one NFSv4.0 or 4.1 export: each daemon is an NFS client of its own, and
    /// the locks the guests meet are the NFS server's (LOCK, LOCKT, LOCKU over the wire).
    @Test(.requires(.ganesha), arguments: [NFSTestVersion.v4_0, .v4_1])
    func twoGuestsOnTwoNFSClientsOfOneExportSeeAndWaitForEachOthersLocks(version: NFSTestVersion) async throws {
        try await GuestSlots.run(minutes: 15) {
            let server = try NFSTestServer.shared()
            try await server.shared {
                let export = try server.makeExport("guest-locks-v\(version)")
                try Self.twoGuests(export: export) { try Daemon.ferry(source: server.url(export, version: version), extra: $0) }
            }
        }
    }

    /// Guest A holds, guest B sees, is refused and waits, each on its own daemon from
    /// `daemon` (given the lock options) over the files of `export`, which the host reads
    /// and writes directly to see and release the locks.
    static func twoGuests(export: String, daemon: ([String]) throws -> Daemon) throws {
        let image = try Self.image.get()
        try Data(repeating: 0x61, count: 200).write(to: URL(fileURLWithPath: export + "/f"))
        try Data("g".utf8).write(to: URL(fileURLWithPath: export + "/g"))
        let options = ["-o", "posix_lock", "-o", "flock"]
        let daemonA = try daemon(options)
        defer { daemonA.stop() }
        let daemonB = try daemon(options)
        defer { daemonB.stop() }

        let guestA = Background(socket: daemonA.socket, command: Self.holderCommand, image: image)
        let held = eventually(within: 300) {
            FileManager.default.fileExists(atPath: export + "/a-posix-held")
                && FileManager.default.fileExists(atPath: export + "/a-flock-held")
        }
        #expect(held, "guest A never held its locks; daemon A:\n\(daemonA.log)")
        guard held else {
            for name in ["release-posix", "release-flock"] { _ = FileManager.default.createFile(atPath: export + "/" + name, contents: nil) }
            _ = try? guestA.wait()
            return
        }
        let guestB = Background(socket: daemonB.socket, command: Self.waiterCommand, image: image)
        // B's F_SETLKW is deferred to daemon B's lock-wait thread (started with the first waiter).
        let deferred = eventually(within: 300) { processTreeHasThread(daemonB.process.processIdentifier, named: "ferry-lockwait") }
        #expect(deferred, "daemon B:\n\(daemonB.log)")
        _ = FileManager.default.createFile(atPath: export + "/release-posix", contents: nil)
        #expect(eventually(within: 300) { FileManager.default.fileExists(atPath: export + "/b-flock-waiting") })
        // Give B's flock request time to reach its daemon; what it prints shows the order.
        sleep(2)
        _ = FileManager.default.createFile(atPath: export + "/release-flock", contents: nil)

        let a = try guestA.wait()
        let b = try guestB.wait()
        #expect(a.status == 0, "\(a.output)")
        #expect(b.status == 0, "\(b.output)")
        let lines = b.output.split(separator: "\n").map(String.init)
        #expect(lines.contains("getlk: F_WRLCK start=10 len=90 pid=0"), "\(b.output)")
        #expect(lines.contains("setlk: Resource temporarily unavailable"), "\(b.output)")
        #expect(lines.contains("wait: granted, release seen"), "\(b.output)")
        #expect(lines.contains("flock-try: Resource temporarily unavailable"), "\(b.output)")
        #expect(lines.contains("flock-wait: granted, release seen"), "\(b.output)")
        #expect(daemonA.stop() == 0, "\(daemonA.log)")
        #expect(daemonB.stop() == 0, "\(daemonB.log)")
    }

    /// A host process through `ferry mount` of the directory and a guest through `ferry
    /// serve` (whose exports share locks unless `locks = false`) see each other's locks:
    /// both are the host kernel's.
    @Test
    func aHostMountAndAGuestSeeEachOthersLocks() async throws {
        try await GuestSlots.run(minutes: 10) {
            let image = try Self.image.get()
            let tool = try Guest.compileGuestProgram("lock-tool")   // static: runs on the host too
            let export = try makeTemporaryDirectory("ferry-guest-host-locks")
            let mnt = try makeTemporaryDirectory("ferry-guest-host-locks-mnt")
            defer { rmdir(mnt); try? FileManager.default.removeItem(atPath: export) }
            try Data(repeating: 0x61, count: 200).write(to: URL(fileURLWithPath: export + "/f"))

            let mount = Process()
            mount.executableURL = URL(fileURLWithPath: try BuiltProducts.require("ferry"))
            mount.arguments = ["mount", "--uring", "off", export, mnt]   // locks shared: the /dev/fuse loop
            let mountLog = mnt + ".log"
            _ = FileManager.default.createFile(atPath: mountLog, contents: nil)
            mount.standardOutput = FileHandle(forWritingAtPath: mountLog)
            mount.standardError = FileHandle(forWritingAtPath: mountLog)
            try runWithDefaultSignalMask(mount)
            defer {
                if mount.isRunning { kill(mount.processIdentifier, SIGTERM); mount.waitUntilExit() }
                unlink(mountLog)
            }
            // Mounted once the directory is on a device other than its parent's. (CI once saw this
            // test give up after 30 s looking for the mount in /proc/self/mounts while ferry's log
            // already said "mounted" and "session started"; the wait is now a bound only, and a
            // failure says how long it waited and whether ferry still ran.)
            let started = Date()
            let mounted = eventually(within: 180) { isMountPoint(mnt) }
            try #require(mounted, """
                not mounted after \(Int(Date().timeIntervalSince(started))) s; ferry \(mount.isRunning ? "still runs" : "exited")
                \((try? String(contentsOfFile: mountLog, encoding: .utf8)) ?? "")
                """)

            func host(_ arguments: [String]) throws -> Process {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: tool)
                p.arguments = arguments
                p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
                try runWithDefaultSignalMask(p)
                return p
            }
            func hostOutput(_ arguments: [String]) throws -> String {
                try runToCompletion(tool, arguments).output.trimmingCharacters(in: .whitespacesAndNewlines)
            }

            // The host process holds bytes 10..99 through the mount.
            let holder = try host(["hold", mnt + "/f", "w", "10", "90", mnt + "/host-held", mnt + "/host-release"])
            defer { if holder.isRunning { kill(holder.processIdentifier, SIGKILL) } }
            #expect(eventually(within: 60) { FileManager.default.fileExists(atPath: export + "/host-held") })

            let (daemon, _) = try Daemon.serveOnePOSIXExport(directory: export)
            defer { daemon.stop() }
            let guest = Background(socket: daemon.socket, command: """
                lock-tool getlk /mnt/f w 0 0
                lock-tool setlk /mnt/f w 50 1
                lock-tool hold /mnt/f w 0 5 /mnt/guest-held /mnt/guest-release
                """, image: image)
            let guestHeld = eventually(within: 300) { FileManager.default.fileExists(atPath: export + "/guest-held") }
            #expect(guestHeld, "daemon:\n\(daemon.log)")
            if guestHeld {
                // The host mount sees the guest's lock.
                #expect(try hostOutput(["getlk", mnt + "/f", "w", "0", "5"]) == "getlk: F_WRLCK start=0 len=5 pid=0")
                #expect(try hostOutput(["setlk", mnt + "/f", "w", "2", "1"]) == "setlk: Resource temporarily unavailable")
            }
            for name in ["guest-release", "host-release"] { _ = FileManager.default.createFile(atPath: export + "/" + name, contents: nil) }
            let run = try guest.wait()
            holder.waitUntilExit()
            #expect(holder.terminationStatus == 0)
            #expect(run.status == 0, "\(run.output)")
            let lines = run.output.split(separator: "\n").map(String.init)
            #expect(lines.contains("getlk: F_WRLCK start=10 len=90 pid=0"), "\(run.output)")
            #expect(lines.contains("setlk: Resource temporarily unavailable"), "\(run.output)")
            #expect(daemon.stop() == 0, "\(daemon.log)")
        }
    }
}
