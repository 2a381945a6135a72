import FerryTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// One live migration of a running Linux 6.12 guest (QEMU 10 TCG, 2 vCPUs, 4 request queues)
/// from the back-end on one socket to the back-end on another, as an operator's VMM does it
/// (../shared/ENVIRONMENT.md): the destination QEMU waits with `-incoming`, the source's
/// monitor sends `migrate`.
///
/// The guest runs scripts/guest/programs/append-log.c: it appends "line N" to
/// /mnt/log.txt through one open fd (fsync every 20 lines, "progress N" on the console) until
/// a line arrives on its second serial port, then 100 lines more, and checks the file itself.
/// The host tells it through that serial port (a socket per QEMU), not through the export,
/// so the harness works the same for every backend.
final class GuestMigration {
    enum Side: String { case source, destination }

    /// What the guest reported when it finished.
    struct Outcome {
        let console: String
        let exited: Bool
        let status: Int?
        /// Lines in the file and lines out of place, as the guest counted them.
        let lines: Int?
        let bad: Int?
    }

    /// A 6.12 image of its own with append-log in /opt/ferry/bin.
    static let image: Result<String, HarnessError> = {
        do {
            let program = try Guest.compileGuestProgram("append-log")
            return Guest.buildImage(kernel: .linux6_12, directory: Guest.repo + "/.build/guest-migration-6.12", extras: [program])
        } catch {
            return .failure(HarnessError("\(error)"))
        }
    }()

    let top: String
    private(set) var sourcePID: pid_t = 0
    let destinationPID: pid_t
    private(set) var sourceMonitor: QEMUMonitor!
    let incoming: String
    private let sourceSocket: String
    private let image: String
    /// Notes for a failure message: a source QEMU started again (`waitUntilWriting`).
    private(set) var notes = ""

    /// Boots the guest on `source` (writing) and a destination QEMU waiting for it on
    /// `destination`.
    init(source: String, destination: String) throws {
        image = try Self.image.get()
        top = try makeTemporaryDirectory("ferry-migration")
        incoming = top + "/incoming.sock"
        sourceSocket = source
        destinationPID = try Self.startGuest(socket: destination, side: .destination, top: top, image: image,
                                             extra: "-incoming unix:\(incoming)")
        do {
            try bootSource()
        } catch {
            kill(sourcePID, SIGKILL); kill(destinationPID, SIGKILL)
            throw error
        }
    }

    /// Starts the source QEMU and connects to its monitor (the socket can exist a moment
    /// before QEMU listens on it).
    private func bootSource() throws {
        let monitor = top + "/source.monitor"
        unlink(monitor)
        sourcePID = try Self.startGuest(socket: sourceSocket, side: .source, top: top, image: image,
                                        extra: "-monitor unix:\(monitor),server=on,wait=off")
        var lastError: Error?
        let connected = Self.waitFor(60) {
            guard Self.isRunning(self.sourcePID) else { return true }
            do { self.sourceMonitor = try QEMUMonitor(path: monitor); return true } catch { lastError = error; return false }
        }
        guard connected, sourceMonitor != nil else {
            throw HarnessError("no monitor on the source QEMU (\(lastError.map { "\($0)" } ?? "QEMU exited")):\n\(console(.source))")
        }
    }
    deinit {
        kill(sourcePID, SIGKILL)
        kill(destinationPID, SIGKILL)
    }

    func console(_ side: Side) -> String {
        Self.read(top + "/\(side.rawValue)-console.log").replacingOccurrences(of: "\r", with: "")
    }

    /// The last "progress N" the guest printed while on `side`.
    func progress(_ side: Side) -> Int {
        console(side).split(separator: "\n").reversed().lazy
            .compactMap { $0.hasPrefix("progress ") ? Int($0.dropFirst(9)) : nil }.first ?? 0
    }

    /// Waits until the guest has written (and fsynced) `lines` at the source.
    func waitUntilWriting(lines: Int = 60) throws {
        var writing = Self.waitFor(300) { self.progress(.source) >= lines || !Self.isRunning(self.sourcePID) }
        // QEMU 10's multi-threaded TCG now and then aborts in the firmware, before the guest
        // kernel runs (a race inside QEMU; scripts/guest/run-guest starts such a QEMU again
        // too). Nothing of the guest or the back-end ran: boot it once more.
        let early = console(.source)
        if !Self.isRunning(sourcePID), early.contains("iotlb_to_section: Assertion"), !early.contains("FERRY-GUEST:") {
            notes += "the source QEMU aborted in the firmware (a QEMU TCG race) and was started again\n"
            try bootSource()
            writing = Self.waitFor(300) { self.progress(.source) >= lines }
        }
        writing = writing && progress(.source) >= lines
        try #require(writing, "the guest never wrote \(lines) lines at the source:\n\(notes)\(self.console(.source))")
        try #require(Self.waitFor(60) { FileManager.default.fileExists(atPath: self.incoming) },
                     "the destination QEMU is not listening:\n\(console(.destination))")
    }

    /// `commands` on the source monitor (migration parameters), then `migrate`; waits for the
    /// migration to end and returns QEMU's `info migrate` at the end.
    func migrate(after commands: [String] = []) throws -> String {
        for command in commands { _ = try sourceMonitor.command(command) }
        _ = try sourceMonitor.command("migrate -d unix:\(incoming)")
        return try waitForMigrationToEnd()
    }

    /// Polls `info migrate` until the migration completed, failed or was cancelled.
    func waitForMigrationToEnd() throws -> String {
        var status = ""
        let ended = Self.waitFor(300) {
            status = (try? self.sourceMonitor.command("info migrate")) ?? ""
            return ["completed", "failed", "cancelled"].contains { status.contains("Migration status: \($0)") }
        }
        try #require(ended, "the migration neither completed nor failed in 300 s: \(status)")
        return status
    }

    /// Tells the guest on `side` to finish (a line on its control serial port) and waits for
    /// it to do so.
    func finish(on side: Side) throws -> Outcome {
        let control = Self.controlSocket(top: top, side: side)
        let told = Self.waitFor(60) { (try? Self.send("go\n", to: control)) != nil }
        try #require(told, "could not reach the guest's control port at \(control)")
        let exited = Self.waitFor(300) { self.console(side).contains("FERRY-GUEST: exit=") }
        let text = console(side)
        func number(after prefix: String) -> Int? {
            for line in text.split(separator: "\n") {
                if let range = line.range(of: prefix) {
                    return Int(line[range.upperBound...].prefix { $0.isNumber })
                }
            }
            return nil
        }
        return Outcome(console: text, exited: exited, status: number(after: "FERRY-GUEST: exit="),
                       lines: number(after: "lines="), bad: number(after: " bad="))
    }

    func finishOnDestination() throws -> Outcome { try finish(on: .destination) }
    func finishOnSource() throws -> Outcome { try finish(on: .source) }

    /// The whole move of a writing guest: it migrates, keeps writing through the same fd
    /// at the destination, and every line is there in order. Returns the guest's outcome.
    @discardableResult
    static func expectWritingGuestMigrates(source: String, destination: String,
                                           context: () -> String) throws -> Outcome {
        let migration = try GuestMigration(source: source, destination: destination)
        try migration.waitUntilWriting()
        let status = try migration.migrate()
        try #require(status.contains("Migration status: completed"),
                     "migration did not complete: \(status)\n\(context())\nsource console:\n\(migration.console(.source))")
        let atSwitchOver = migration.progress(.source)
        _ = try? migration.sourceMonitor.command("quit")
        let outcome = try migration.finish(on: .destination)
        try #require(outcome.exited, "the guest did not finish on the destination:\n\(outcome.console)\n\(context())")
        #expect(outcome.status == 0, "\(outcome.console)\n\(context())")
        #expect(outcome.bad == 0, "lines out of place: \(outcome.console)")
        // Told only at the destination, the guest wrote its last 100 lines there.
        #expect((outcome.lines ?? 0) >= atSwitchOver + 100, "the destination did not write through the moved fd: \(outcome.console)")
        #expect(outcome.console.contains("told at"), "\(outcome.console)")
        return outcome
    }

    /// The destination's daemon dies before the guest moves: the destination QEMU cannot
    /// load the device and exits. In precopy the source cannot know (it reports the
    /// migration completed and stays paused); the management layer (libvirt) sees the
    /// destination fail and resumes the source with `cont`, as this does. The guest must
    /// then write on at the source through the same fd, every line in order.
    @discardableResult
    static func expectGuestResumesAtSourceWhenTheDestinationDaemonDies(source: String, destinationDaemon: pid_t,
                                                                       destination: String,
                                                                       context: () -> String) throws -> Outcome {
        let migration = try GuestMigration(source: source, destination: destination)
        try migration.waitUntilWriting()
        kill(destinationDaemon, SIGKILL)
        let status = try migration.migrate()
        let destinationGone = waitFor(120) { !isRunning(migration.destinationPID) }
        #expect(destinationGone && migration.console(.destination).contains("load of migration failed"),
                "the destination QEMU did not give up: \(status)\n\(migration.console(.destination))")
        let resumed = try migration.sourceMonitor.command("cont")
        #expect(!resumed.contains("Error"), "\(resumed)")
        let running = try migration.sourceMonitor.command("info status")
        #expect(running.contains("VM status: running"), "\(running)")
        let outcome = try migration.finishOnSource()
        try #require(outcome.exited, "the guest did not finish at the source:\n\(outcome.console)\n\(context())")
        #expect(outcome.status == 0, "\(outcome.console)\n\(context())")
        #expect(outcome.bad == 0, "lines out of place: \(outcome.console)")
        return outcome
    }

    // MARK: Plumbing

    static func controlSocket(top: String, side: Side) -> String { top + "/\(side.rawValue).control" }

    /// `scripts/guest/run-guest --background` with `extra` QEMU arguments and a control
    /// serial port (ttyS1, a socket); returns QEMU's pid.
    private static func startGuest(socket: String, side: Side, top: String, image: String, extra: String) throws -> pid_t {
        let log = top + "/\(side.rawValue)-console.log"
        let control = controlSocket(top: top, side: side)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Guest.repo + "/scripts/guest/run-guest")
        let m = GuestMachine.linux612
        p.arguments = ["--socket", socket, "--cmd", "append-log /mnt/log.txt /dev/ttyS1", "--timeout", "900", "--quiet",
                       "--log", log, "--image", image, "--kernel", m.kernel.rawValue, "--smp", "\(m.smp)",
                       "--queues", "\(m.queues)", "--background"]
        var environment = ProcessInfo.processInfo.environment
        // Both ports named: a second serial port takes away -nographic's default console.
        environment["FERRY_QEMU_EXTRA"] = "-serial mon:stdio -chardev socket,id=control,path=\(control),server=on,wait=off "
            + "-serial chardev:control \(extra)"
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
            throw HarnessError("run-guest --background printed no pid: \(text)\n\(read(log))")
        }
        return pid
    }

    private static func send(_ text: String, to path: String) throws {
        let fd = try connectUnix(path)
        defer { close(fd) }
        let bytes = Array(text.utf8)
        guard Glibc.send(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count else { throw HarnessError("send: \(errno)") }
    }

    static func read(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

    /// Whether process `pid` runs: not gone and not a zombie. `kill(pid, 0)` cannot say: inside
    /// `scripts/nfs/isolated` the test process is PID 1 of its namespace and inherits the
    /// QEMU that run-guest left running without reaping it, so a QEMU that exited stays a
    /// zombie, which signal 0 still finds.
    static func isRunning(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
        // The state follows the command's closing parenthesis (the command may hold one).
        guard let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(after: close)...].split(separator: " ").first
        return state != nil && state != "Z" && state != "X"
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

    /// Fails the test (pointing to install-deps) on a QEMU that cannot migrate a
    /// vhost-user-fs device (8.2 or later can; scripts/install-deps installs 10.x).
    static func requireMigratingQEMU() throws {
        let r = try runToCompletion(Guest.qemu, ["--version"])
        let first = r.output.split(separator: "\n").first.map(String.init) ?? ""
        let numbers = first.split(separator: " ").dropFirst(3).first?.split(separator: ".").compactMap { Int($0) } ?? []
        let (major, minor) = (numbers.first ?? 0, numbers.dropFirst().first ?? 0)
        try #require(major > 8 || (major == 8 && minor >= 2),
                     "\(first) cannot migrate a vhost-user-fs device (8.2 or later can): run scripts/install-deps")
    }
}

/// A connected AF_UNIX stream socket.
func connectUnix(_ path: String) throws -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw HarnessError("socket: \(errno)") }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { close(fd); throw HarnessError("path too long: \(path)") }
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard connected == 0 else { let e = errno; close(fd); throw HarnessError("connect(\(path)): \(e)") }
    return fd
}

/// QEMU's human monitor on a unix socket: one command at a time, answers read up to the
/// next `(qemu) ` prompt.
final class QEMUMonitor {
    let fd: Int32

    init(path: String) throws {
        fd = try connectUnix(path)
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
            let n = Glibc.read(fd, &buffer, buffer.count)
            guard n > 0 else { throw HarnessError("the QEMU monitor closed: \(text)") }
            text += String(decoding: buffer[0..<n], as: UTF8.self)
        }
        return text
    }
}
