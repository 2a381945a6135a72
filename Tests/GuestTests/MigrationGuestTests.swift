import FerryTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Live migration of a running Linux 6.12 guest (QEMU TCG, 2 vCPUs, 4 request queues)
/// between two `ferry virtiofsd` daemons serving the same directory, as an operator's
/// VMM does it (../shared/ENVIRONMENT.md): the destination QEMU waits with `-incoming`, the
/// source's monitor sends `migrate`, the source quits once it completed. The guest appends
/// through one open fd the whole time and never notices.
@Suite("Live migration between two ferry virtiofsd", .serialized, .requires(.root, .qemu))
struct MigrationGuestTests {
    /// QEMU migrates vhost-user-fs back-end state from 8.2 on (scripts/install-deps
    /// installs 10.x from bookworm-backports).
    static func qemuVersion() throws -> (major: Int, minor: Int, text: String) {
        let r = try runToCompletion(Guest.qemu, ["--version"])
        let first = r.output.split(separator: "\n").first.map(String.init) ?? ""
        let numbers = first.split(separator: " ").dropFirst(3).first?.split(separator: ".").compactMap { Int($0) } ?? []
        return (numbers.first ?? 0, numbers.dropFirst().first ?? 0, first)
    }

    /// Appends "line N" through fd 3 until the host says the guest has moved (/mnt/migrated),
    /// then 100 lines more from the destination, and reports how many lines the file has.
    static let writer = """
        exec 3>>/mnt/log.txt; i=0; n=-1
        while :; do
          echo "line $i" >&3 || { echo "write failed at $i"; exit 1; }
          i=$((i+1))
          if [ $n -lt 0 ] && [ -e /mnt/migrated ]; then n=$((i+100)); fi
          if [ $n -ge 0 ] && [ $i -ge $n ]; then break; fi
          if [ $i -ge 50000 ]; then echo "never migrated"; exit 1; fi
          usleep 5000
        done
        exec 3>&-; echo "lines=$(wc -l < /mnt/log.txt)"
        """

    /// `scripts/guest/run-guest --background` with `extra` QEMU arguments; returns QEMU's pid.
    static func startGuest(socket: String, log: String, extra: String, image: String) throws -> pid_t {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Guest.repo + "/scripts/guest/run-guest")
        let m = GuestMachine.linux612
        p.arguments = ["--socket", socket, "--cmd", writer, "--timeout", "600", "--quiet", "--log", log, "--image", image,
                       "--kernel", m.kernel.rawValue, "--smp", "\(m.smp)", "--queues", "\(m.queues)", "--background"]
        var environment = ProcessInfo.processInfo.environment
        environment["FERRY_QEMU_EXTRA"] = extra
        p.environment = environment
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try runWithDefaultSignalMask(p)
        // Only the pid it prints (EOF once run-guest returns): not waitUntilExit, which on
        // Linux waits for every process holding Foundation's exit notification, and the
        // supervisor run-guest leaves behind holds it until QEMU ends.
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        guard let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw HarnessError("run-guest --background printed no pid: \(text)\n\((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        }
        return pid
    }

    static func lines(_ path: String) -> [String] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    /// Polls `condition` every 100 ms for up to `seconds`; a bound, so a broken run fails
    /// instead of hanging, not a measure of speed.
    static func waitFor(_ seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while !condition() {
            if Date() >= deadline { return false }
            usleep(100_000)
        }
        return true
    }

    /// Fails the test (pointing to install-deps) on a QEMU that cannot migrate vhost-user-fs.
    static func requireMigratingQEMU() throws -> Bool {
        let qemu = try qemuVersion()
        guard qemu.major > 8 || (qemu.major == 8 && qemu.minor >= 2) else {
            Issue.record("\(qemu.text) cannot migrate a vhost-user-fs device (8.2 or later can): run scripts/install-deps")
            return false
        }
        return true
    }

    @Test(.timeLimit(.minutes(15)), arguments: [["--migration-mode=find-paths", "--migration-verify-handles"],
                                                ["--migration-mode=file-handles"]])
    func aGuestAppendingThroughOneOpenFdMigratesBetweenTwoDaemons(options: [String]) throws {
        guard try Self.requireMigratingQEMU() else { return }
        let image = try Guest.image(for: .linux6_12)
        let export = try makeTemporaryDirectory("ferry-migration-export")
        let top = try makeTemporaryDirectory("ferry-migration")
        let source = try Daemon.ferry(export: export, extra: options)
        let destination = try Daemon.ferry(export: export, extra: options)
        let monitorPath = top + "/source.monitor", incoming = top + "/incoming.sock"
        let sourceLog = top + "/source-console.log", destinationLog = top + "/destination-console.log"

        let sourcePID = try Self.startGuest(socket: source.socket, log: sourceLog,
                                            extra: "-monitor unix:\(monitorPath),server,nowait", image: image)
        defer { kill(sourcePID, SIGKILL) }
        let destinationPID = try Self.startGuest(socket: destination.socket, log: destinationLog,
                                                 extra: "-incoming unix:\(incoming)", image: image)
        defer { kill(destinationPID, SIGKILL) }

        // The guest is up and writing on the source.
        let writing = Self.waitFor(300) { Self.lines(export + "/log.txt").count >= 50 }
        try #require(writing, "the guest never wrote 50 lines at the source:\n\((try? String(contentsOfFile: sourceLog, encoding: .utf8)) ?? "")")
        #expect(Self.waitFor(30) { FileManager.default.fileExists(atPath: incoming) }, "the destination QEMU is not listening")

        let monitor = try QEMUMonitor(path: monitorPath)
        _ = try monitor.command("migrate -d unix:\(incoming)")
        var status = ""
        let finished = Self.waitFor(300) {
            status = (try? monitor.command("info migrate")) ?? ""
            return status.contains("Migration status: completed") || status.contains("Migration status: failed")
                || status.contains("Migration status: cancelled")
        }
        try #require(finished && status.contains("Migration status: completed"),
                     "migration did not complete: \(status)\nsource daemon:\n\(source.log)\ndestination daemon:\n\(destination.log)\nsource console:\n\((try? String(contentsOfFile: sourceLog, encoding: .utf8)) ?? "")")
        let atSwitchOver = Self.lines(export + "/log.txt").count
        _ = try? monitor.command("quit")
        // Tell the guest, now on the destination, to finish.
        #expect(FileManager.default.createFile(atPath: export + "/migrated", contents: nil))

        let exited = Self.waitFor(300) {
            ((try? String(contentsOfFile: destinationLog, encoding: .utf8)) ?? "").contains("FERRY-GUEST: exit=")
        }
        let console = ((try? String(contentsOfFile: destinationLog, encoding: .utf8)) ?? "").replacingOccurrences(of: "\r", with: "")
        try #require(exited, "the guest did not finish on the destination:\n\(console)\ndestination daemon:\n\(destination.log)\nsource daemon:\n\(source.log)")
        #expect(console.contains("FERRY-GUEST: exit=0"), "\(console)")

        // Every line, in order, once: written at the source, then through the same fd at the destination.
        let written = Self.lines(export + "/log.txt")
        #expect(written == (0..<written.count).map { "line \($0)" }, "log.txt is not lines 0…\(written.count - 1) in order")
        #expect(console.contains("lines=\(written.count)"), "\(console)")
        #expect(written.count >= atSwitchOver + 100, "the destination did not write through the moved fd")
        #expect(source.log.contains("migration state saved"), "\(source.log)")
        #expect(destination.log.contains("migration state loaded"), "\(destination.log)")
        #expect(destination.stop() == 0, "destination daemon:\n\(destination.log)")
        source.stop()
    }
}

extension MigrationGuestTests {
    /// The destination's daemon dies before the guest moves: the destination QEMU cannot
    /// load the device and gives up. In precopy the source cannot know (it reports the
    /// migration completed and stays paused); the management layer (libvirt) sees the
    /// destination fail and resumes the source with `cont`. The guest then runs on at the
    /// source with the same session: its open fd still works, every line is in place.
    @Test(.timeLimit(.minutes(15)))
    func aMigrationWhoseDestinationDaemonDiedLeavesTheGuestRunningAtTheSource() throws {
        guard try Self.requireMigratingQEMU() else { return }
        let image = try Guest.image(for: .linux6_12)
        let export = try makeTemporaryDirectory("ferry-migration-export")
        let top = try makeTemporaryDirectory("ferry-migration")
        let source = try Daemon.ferry(export: export)
        let destination = try Daemon.ferry(export: export)
        let monitorPath = top + "/source.monitor", incoming = top + "/incoming.sock"
        let sourceLog = top + "/source-console.log", destinationLog = top + "/destination-console.log"
        let sourcePID = try Self.startGuest(socket: source.socket, log: sourceLog,
                                            extra: "-monitor unix:\(monitorPath),server,nowait", image: image)
        defer { kill(sourcePID, SIGKILL) }
        let destinationPID = try Self.startGuest(socket: destination.socket, log: destinationLog,
                                                 extra: "-incoming unix:\(incoming)", image: image)
        defer { kill(destinationPID, SIGKILL) }
        let writing = Self.waitFor(300) { Self.lines(export + "/log.txt").count >= 50 }
        try #require(writing, "the guest never wrote 50 lines at the source")
        #expect(Self.waitFor(30) { FileManager.default.fileExists(atPath: incoming) }, "the destination QEMU is not listening")

        kill(destination.process.processIdentifier, SIGKILL)
        let monitor = try QEMUMonitor(path: monitorPath)
        _ = try monitor.command("migrate -d unix:\(incoming)")
        var status = ""
        let ended = Self.waitFor(300) {
            status = (try? monitor.command("info migrate")) ?? ""
            return status.contains("Migration status: completed") || status.contains("Migration status: failed")
        }
        try #require(ended, "the migration neither completed nor failed: \(status)")
        // The destination could not load the device without its daemon, and exited.
        let destinationGone = Self.waitFor(120) { kill(destinationPID, 0) != 0 }
        let destinationConsole = (try? String(contentsOfFile: destinationLog, encoding: .utf8)) ?? ""
        #expect(destinationGone && destinationConsole.contains("load of migration failed"), "\(destinationConsole)")
        // What libvirt does then: resume the source.
        _ = try monitor.command("cont")
        let running = try monitor.command("info status")
        #expect(running.contains("VM status: running"), "\(running)")
        #expect(FileManager.default.createFile(atPath: export + "/migrated", contents: nil))
        let exited = Self.waitFor(300) {
            ((try? String(contentsOfFile: sourceLog, encoding: .utf8)) ?? "").contains("FERRY-GUEST: exit=")
        }
        let console = ((try? String(contentsOfFile: sourceLog, encoding: .utf8)) ?? "").replacingOccurrences(of: "\r", with: "")
        try #require(exited, "the guest did not finish at the source:\n\(console)\nsource daemon:\n\(source.log)")
        #expect(console.contains("FERRY-GUEST: exit=0"), "\(console)")
        let written = Self.lines(export + "/log.txt")
        #expect(written == (0..<written.count).map { "line \($0)" }, "log.txt is not lines 0…\(written.count - 1) in order")
        #expect(console.contains("lines=\(written.count)"), "\(console)")
        #expect(source.stop() == 0, "source daemon:\n\(source.log)")
    }
}

extension MigrationGuestTests {
    /// `ferry serve` with one POSIX export of `export` on `socket`.
    static func serve(export: String, name: String) throws -> (daemon: Daemon, socket: String) {
        let top = try makeTemporaryDirectory("ferry-migration-serve-\(name)")
        let config = top + "/config"
        try FileManager.default.createDirectory(atPath: config + "/tenants", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: top + "/run", withIntermediateDirectories: true)
        try "control_socket = \"\(top)/run/control.sock\"\n".write(toFile: config + "/ferry.toml", atomically: true, encoding: .utf8)
        try """
            name = "guest"
            [[export]]
            name = "data"
            tag = "ferry"
            socket = "\(top)/run/data.sock"
            queues = \(GuestMachine.linux612.queues)
            [export.backend]
            kind = "posix"
            path = "\(export)"
            """.write(toFile: config + "/tenants/guest.toml", atomically: true, encoding: .utf8)
        return (try Daemon.serve(config: config, socket: top + "/run/data.sock"), top + "/run/data.sock")
    }

    /// The same move between two `ferry serve` daemons: the destination host's daemon takes
    /// the incoming state on the export's socket.
    @Test(.timeLimit(.minutes(15)))
    func aGuestMigratesBetweenTwoFerryServeDaemons() throws {
        guard try Self.requireMigratingQEMU() else { return }
        let image = try Guest.image(for: .linux6_12)
        let export = try makeTemporaryDirectory("ferry-migration-export")
        let top = try makeTemporaryDirectory("ferry-migration")
        let source = try Self.serve(export: export, name: "source")
        let destination = try Self.serve(export: export, name: "destination")
        let monitorPath = top + "/source.monitor", incoming = top + "/incoming.sock"
        let sourceLog = top + "/source-console.log", destinationLog = top + "/destination-console.log"
        let sourcePID = try Self.startGuest(socket: source.socket, log: sourceLog,
                                            extra: "-monitor unix:\(monitorPath),server,nowait", image: image)
        defer { kill(sourcePID, SIGKILL) }
        let destinationPID = try Self.startGuest(socket: destination.socket, log: destinationLog,
                                                 extra: "-incoming unix:\(incoming)", image: image)
        defer { kill(destinationPID, SIGKILL) }
        try #require(Self.waitFor(300) { Self.lines(export + "/log.txt").count >= 50 }, "the guest never wrote 50 lines at the source")
        #expect(Self.waitFor(30) { FileManager.default.fileExists(atPath: incoming) }, "the destination QEMU is not listening")

        let monitor = try QEMUMonitor(path: monitorPath)
        _ = try monitor.command("migrate -d unix:\(incoming)")
        var status = ""
        let finished = Self.waitFor(300) {
            status = (try? monitor.command("info migrate")) ?? ""
            return status.contains("Migration status: completed") || status.contains("Migration status: failed")
        }
        try #require(finished && status.contains("Migration status: completed"),
                     "migration did not complete: \(status)\nsource:\n\(source.daemon.log)\ndestination:\n\(destination.daemon.log)")
        let atSwitchOver = Self.lines(export + "/log.txt").count
        _ = try? monitor.command("quit")
        #expect(FileManager.default.createFile(atPath: export + "/migrated", contents: nil))
        let exited = Self.waitFor(300) {
            ((try? String(contentsOfFile: destinationLog, encoding: .utf8)) ?? "").contains("FERRY-GUEST: exit=")
        }
        let console = ((try? String(contentsOfFile: destinationLog, encoding: .utf8)) ?? "").replacingOccurrences(of: "\r", with: "")
        try #require(exited, "the guest did not finish on the destination:\n\(console)\ndestination:\n\(destination.daemon.log)")
        #expect(console.contains("FERRY-GUEST: exit=0"), "\(console)")
        let written = Self.lines(export + "/log.txt")
        #expect(written == (0..<written.count).map { "line \($0)" }, "log.txt is not lines 0…\(written.count - 1) in order")
        #expect(written.count >= atSwitchOver + 100, "the destination did not write through the moved fd")
        #expect(destination.daemon.log.contains("migration state loaded"), "\(destination.daemon.log)")
        destination.daemon.stop()
        source.daemon.stop()
    }
}

/// QEMU's human monitor on a unix socket: one command at a time, answers read up to the
/// next `(qemu) ` prompt.
final class QEMUMonitor {
    let fd: Int32

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket: \(errno)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8)
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { close(fd); throw HarnessError("connect(\(path)): \(errno)") }
        _ = try readUntilPrompt()
    }

    deinit { close(fd) }

    func command(_ line: String) throws -> String {
        let bytes = Array((line + "\n").utf8)
        // MSG_NOSIGNAL: a QEMU that died must fail the test, not kill it with SIGPIPE.
        guard send(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count else { throw HarnessError("monitor write: \(errno)") }
        return try readUntilPrompt()
    }

    private func readUntilPrompt() throws -> String {
        var text = ""
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !text.hasSuffix("(qemu) ") {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 60_000) == 1 else { throw HarnessError("the QEMU monitor did not answer: \(text)") }
            let n = read(fd, &buffer, buffer.count)
            guard n > 0 else { throw HarnessError("the QEMU monitor closed: \(text)") }
            text += String(decoding: buffer[0..<n], as: UTF8.self)
        }
        return text
    }
}
