import FerryTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The serving process's confinement, read from /proc as an operator would, and the
/// seccomp filter stopping a call it does not allow.
@Suite(.serialized) struct SandboxTests {
    /// chown, dac_override, dac_read_search, fowner, fsetid, setgid, setuid, mknod, setfcap.
    static let posixCapabilities: UInt64 = 0x8800_00df

    struct Status {
        let fields: [String: String]
        init(pid: pid_t) throws {
            var fields: [String: String] = [:]
            for line in try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8).split(separator: "\n") {
                guard let colon = line.firstIndex(of: ":") else { continue }
                fields[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
            self.fields = fields
        }
        var seccomp: String? { fields["Seccomp"] }
        var noNewPrivs: String? { fields["NoNewPrivs"] }
        var effectiveCapabilities: UInt64? { fields["CapEff"].flatMap { UInt64($0, radix: 16) } }
    }

    /// Device and inode of what `path` names (following /proc/PID/root).
    static func identity(_ path: String) -> (UInt64, UInt64) {
        var st = stat()
        _ = stat(path, &st)
        return (UInt64(st.st_dev), UInt64(st.st_ino))
    }

    static func children(of pid: pid_t) -> [pid_t] {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
        return text.split(separator: " ").compactMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    final class Virtiofsd {
        let top: String
        var export: String { top + "/export" }
        var socket: String { top + "/vhost.sock" }
        let process = Process()

        init(_ extra: [String]) throws {
            top = try makeTemporaryDirectory("ferry-sandbox")
            try FileManager.default.createDirectory(atPath: top + "/export", withIntermediateDirectories: false)
            process.executableURL = URL(fileURLWithPath: try BuiltProducts.require("ferry"))
            process.arguments = ["virtiofsd", "--socket-path=\(top)/vhost.sock", "--shared-dir=\(top)/export"] + extra
            process.standardError = FileHandle(forWritingAtPath: "/dev/null")
            try runWithDefaultSignalMask(process)
            let deadline = Date().addingTimeInterval(20)
            while !FileManager.default.fileExists(atPath: socket) && process.isRunning && Date() < deadline { usleep(20_000) }
            usleep(100_000)   // the sandbox is set up right after the socket is created
        }

        deinit {
            if process.isRunning { process.terminate(); process.waitUntilExit() }
            try? FileManager.default.removeItem(atPath: top)
        }

        func stop() -> Int32 {
            process.terminate()
            process.waitUntilExit()
            return process.terminationStatus
        }
    }

    @Test(.requires(.root))
    func virtiofsdIsSandboxedByDefault() throws {
        let d = try Virtiofsd([])
        #expect(d.process.isRunning)
        let parent = d.process.processIdentifier
        let children = Self.children(of: parent)
        #expect(children.count == 1, "the sandboxed server runs as the launcher's one child")
        let server = try #require(children.first)
        let status = try Status(pid: server)
        #expect(status.seccomp == "2")
        #expect(status.noNewPrivs == "1")
        #expect(status.effectiveCapabilities == Self.posixCapabilities)
        #expect(status.fields["Groups"] == "")
        // Its root is the export; the launcher's is still the host's.
        #expect(Self.identity("/proc/\(server)/root") == Self.identity(d.export))
        #expect(Self.identity("/proc/\(parent)/root") == Self.identity("/"))
        // Its own PID, mount and network namespaces.
        for ns in ["pid_for_children", "mnt", "net", "ipc"] {
            let mine = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/\(ns)")
            let its = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(server)/ns/\(ns == "pid_for_children" ? "pid" : ns)")
            #expect(mine != its, "\(ns)")
        }
        #expect(d.stop() == 0)
        #expect(!FileManager.default.fileExists(atPath: d.socket), "the launcher removes the socket its child made")
    }

    @Test(.requires(.root))
    func chrootModeConfinesTheProcessItself() throws {
        let d = try Virtiofsd(["--sandbox=chroot"])
        let pid = d.process.processIdentifier
        #expect(Self.children(of: pid).isEmpty)
        let status = try Status(pid: pid)
        #expect(status.seccomp == "2" && status.noNewPrivs == "1")
        #expect(Self.identity("/proc/\(pid)/root") == Self.identity(d.export))
        #expect(d.stop() == 0)
    }

    @Test func sandboxNoneSeccompNoneLeavesTheProcessAsItWas() throws {
        let d = try Virtiofsd(["--sandbox=none", "--seccomp=none"])
        let status = try Status(pid: d.process.processIdentifier)
        #expect(status.seccomp == "0")
        #expect(Self.identity("/proc/\(d.process.processIdentifier)/root") == Self.identity("/"))
        #expect(d.stop() == 0)
    }

    @Test func theProfileListsWhatEachBackendNeedsAndNothingDangerous() throws {
        let ferry = try BuiltProducts.require("ferry")
        let posix = Set(try runToCompletion(ferry, ["seccomp-profile", "--backend", "posix"]).output.split(separator: "\n").map(String.init))
        let nfs = Set(try runToCompletion(ferry, ["seccomp-profile", "--backend", "nfs"]).output.split(separator: "\n").map(String.init))
        #expect(posix.isSuperset(of: ["openat2", "open_by_handle_at", "setfsuid", "renameat2", "read", "futex"]))
        #expect(!nfs.contains("open_by_handle_at") && nfs.contains("connect"))
        for dangerous in ["ptrace", "mount", "umount2", "pivot_root", "reboot", "kexec_load", "init_module",
                          "bpf", "perf_event_open", "process_vm_writev", "execve", "unshare", "setns", "keyctl"] {
            #expect(!posix.contains(dangerous) && !nfs.contains(dangerous), "\(dangerous) must not be allowed")
        }
        let missing = try runToCompletion(ferry, ["seccomp-profile"])
        #expect(!missing.succeeded)
    }

    /// Runs `ferry seccomp-profile --backend posix --try CALL --action ACTION`.
    func attempt(_ call: String, _ action: String) throws -> (process: Process, stderr: String, stdout: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try BuiltProducts.require("ferry"))
        p.arguments = ["seccomp-profile", "--backend", "posix", "--try", call, "--action", action]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try runWithDefaultSignalMask(p)
        let stdout = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p, stderr, stdout)
    }

    @Test func aForbiddenSystemCallIsStopped() throws {
        // reboot with zero arguments is refused by the kernel anyway (bad magic): harmless
        // should the filter ever let it through, which the test would then report.
        let killed = try attempt("reboot", "kill")
        #expect(killed.process.terminationReason == .uncaughtSignal && killed.process.terminationStatus == SIGSYS,
                "reason \(killed.process.terminationReason.rawValue) status \(killed.process.terminationStatus): \(killed.stdout)")
        #expect(!killed.stdout.contains("allowed"))

        let trapped = try attempt("reboot", "trap")
        #expect(trapped.process.terminationReason == .uncaughtSignal && trapped.process.terminationStatus == SIGSYS)
        #expect(trapped.stderr.contains("seccomp stopped system call 169 (reboot)"), "\(trapped.stderr)")

        let logged = try attempt("reboot", "log")
        #expect(logged.process.terminationStatus == 0)
        #expect(logged.stdout.contains("allowed: reboot returned -1"))

        let allowed = try attempt("getppid", "kill")
        #expect(allowed.process.terminationStatus == 0 && allowed.stdout.contains("allowed: getppid"))
    }
}
