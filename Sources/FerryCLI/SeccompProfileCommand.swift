import ArgumentParser
import FerryDevFUSE
import FerryBackend
import FerryBackends
import FerryDaemon
import FerrySandbox
#if canImport(Glibc)
import Glibc
#endif

extension SeccompAction: ExpressibleByArgument {}

/// A backend kind the registry knows, as `--backend` takes it.
struct BackendKindArgument: ExpressibleByArgument {
    let module: any BackendModule.Type

    init?(argument: String) {
        guard let module = BackendRegistry.module(kind: argument) else { return nil }
        self.module = module
    }

    static var allValueStrings: [String] { BackendRegistry.all.map { $0.kind } }
}

/// `ferry seccomp-profile --backend KIND`: the system calls a process serving that kind
/// of export may make, one per line, as the filter allows them.
struct SeccompProfileCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seccomp-profile",
        abstract: "Print the system calls the seccomp filter allows for a backend kind.",
        discussion: """
            With --try NAME, load the filter (with --action) into this process and make that \
            system call, to see what the filter does to it: an allowed call prints `allowed`; \
            a forbidden one kills the process (kill), names it on standard error and kills it \
            (trap), or is logged by the kernel and runs (log).
            """)

    @Option(help: "posix, nfs or rados (repeat for a process serving several kinds).")
    var backend: [BackendKindArgument] = []

    @Flag(help: "The list of `ferry mount` (a mount on the host) rather than of a vhost-user back-end.")
    var hostMount = false

    @Flag(help: "With --host-mount: the list of a mount served through io_uring rings (`ferry mount --uring`).")
    var uring = false

    @Option(name: .customLong("try"), help: "A system call to make under the filter.")
    var trySyscall: String?

    @Option(help: "What the filter does to other calls, with --try: kill, trap, log.")
    var action: SeccompAction = .kill

    func validate() throws {
        if backend.isEmpty { throw ValidationError("give at least one --backend (posix, nfs or rados)") }
        if uring && !hostMount { throw ValidationError("--uring is for --host-mount (ferry mount)") }

    }

    /// nil, or why the filter could not be loaded.
    static func loadFilter(_ action: SeccompAction, _ syscalls: [String], hostMount: Bool = false) -> String? {
        do {
            try Sandbox.forbidNewPrivileges()
            try Seccomp.install(action, adding: syscalls, hostMount: hostMount)
            return nil
        } catch {
            return error.description
        }
    }

    func run() throws {
        let needs = BackendSandboxNeeds.union(backend.map { $0.module.sandbox })
        let syscalls = needs.syscalls + (uring ? URingSession.syscalls : [])
        guard let name = trySyscall else {
            for call in SyscallAllowlist.effective(adding: syscalls, hostMount: hostMount) { print(call) }
            return
        }
        guard let number = Seccomp.number(of: name) else { throw CLIError("no system call named '\(name)' on this architecture") }
        if let failure = Self.loadFilter(action, syscalls, hostMount: hostMount) { throw CLIError(failure) }
        // Arguments are all zero: enough to reach the filter, harmless when allowed.
        let (result, errnoValue) = Seccomp.call(number)
        print("allowed: \(name) returned \(result)" + (result < 0 ? " (\(String(cString: strerror(errnoValue))))" : ""))
    }
}
