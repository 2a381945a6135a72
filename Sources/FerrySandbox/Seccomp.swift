import CFerrySandbox
import CSeccomp
#if canImport(Glibc)
import Glibc
#endif

/// What happens to a system call outside an export's allowlist.
public enum SeccompAction: String, Sendable, CaseIterable {
    /// The whole process dies of SIGSYS (the default, as in virtiofsd).
    case kill
    /// The call is allowed and logged by the kernel (audit): to find what a setup needs.
    case log
    /// SIGSYS, whose handler names the call on standard error, then the process dies.
    case trap
    /// No filter.
    case none
}

/// The system call allowlists: one set every Ferry process needs (the Swift runtime,
/// threads, memory, signals, the vhost-user transport and the control/metrics sockets).
/// Each backend names what it needs beyond these (`BackendModule.sandbox`); the effective
/// list of a process is the union of the base and what its backends add.
public enum SyscallAllowlist {
    /// Threads, memory, time, signals, and the transports' I/O on descriptors they already
    /// hold (guest memory is mapped from memfds the VMM sends; kicks are eventfds).
    static let base: [String] = [
        // Memory and the runtime.
        "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mlock", "munlock", "membarrier",
        "futex", "set_robust_list", "get_robust_list", "rseq", "set_tid_address",
        "clone", "clone3", "exit", "exit_group", "sched_yield", "sched_getaffinity", "getcpu",
        "getrandom", "arch_prctl", "prctl", "uname", "sysinfo", "getrlimit", "prlimit64",
        // Identity and time.
        "getpid", "gettid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid",
        "getgroups", "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
        // Signals.
        "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigtimedwait", "sigaltstack", "tgkill", "tkill",
        "kill", "restart_syscall",
        // Descriptors the process already holds.
        "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2",
        "close", "dup", "dup3", "fcntl", "ioctl", "lseek", "fstat", "newfstatat", "statx", "pipe2",
        "poll", "ppoll", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "eventfd2",
        "memfd_create",
        // Unix sockets: the vhost-user socket (fds arrive with SCM_RIGHTS), the control socket.
        "accept", "accept4", "recvmsg", "sendmsg", "recvfrom", "sendto", "shutdown",
        "getsockopt", "setsockopt", "getsockname", "getpeername", "socket", "bind", "listen", "connect",
        "unlink", "unlinkat", "fchmod", "chmod", "mkdir", "mkdirat", "openat", "access", "faccessat",
        "readlink", "readlinkat", "getcwd", "fstatfs", "statfs", "getdents64",
    ]

    /// `ferry mount`: the /dev/fuse session reads and writes a descriptor it holds (as in
    /// `base`); the process unmounts at exit.
    static let hostMount: [String] = ["umount2"]

    /// The calls a process may make whose backends need `backends` besides the base,
    /// sorted and without repeats; `hostMount`: through a mount on the host (`ferry mount`)
    /// rather than vhost-user.
    public static func effective(adding backends: [String], hostMount: Bool = false) -> [String] {
        var names = Set(base)
        if hostMount { names.formUnion(Self.hostMount) }
        names.formUnion(backends)
        return names.sorted()
    }
}

/// A seccomp filter could not be built or loaded.
public struct SandboxError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public enum Seccomp {
    /// Loads the filter allowing the base and `backends` (what the process's backends need)
    /// into every thread of the process (TSYNC), with `action` for everything else. `none` loads nothing. No new privileges must already be set
    /// (or the process must hold CAP_SYS_ADMIN).
    public static func install(_ action: SeccompAction, adding backends: [String], hostMount: Bool = false) throws(SandboxError) {
        let defaultAction: UInt32
        switch action {
        case .none: return
        case .kill: defaultAction = SCMP_ACT_KILL_PROCESS
        case .log: defaultAction = SCMP_ACT_LOG
        case .trap:
            defaultAction = SCMP_ACT_TRAP
            guard ferry_sb_report_sigsys() == 0 else { throw SandboxError("cannot install the SIGSYS reporter: \(String(cString: strerror(errno)))") }
        }
        guard let filter = seccomp_init(defaultAction) else { throw SandboxError("seccomp_init failed") }
        defer { seccomp_release(filter) }
        for name in SyscallAllowlist.effective(adding: backends, hostMount: hostMount) {
            let number = seccomp_syscall_resolve_name(name)
            // A call this architecture does not have (time on some, for instance).
            if number == __NR_SCMP_ERROR { continue }
            let rc = seccomp_rule_add_array(filter, SCMP_ACT_ALLOW, number, 0, nil)
            if rc != 0 { throw SandboxError("seccomp: cannot allow \(name): \(String(cString: strerror(-rc)))") }
        }
        var rc = seccomp_attr_set(filter, SCMP_FLTATR_CTL_TSYNC, 1)
        if rc != 0 { throw SandboxError("seccomp: cannot synchronise threads: \(String(cString: strerror(-rc)))") }
        rc = seccomp_load(filter)
        if rc != 0 { throw SandboxError("seccomp_load failed: \(String(cString: strerror(-rc)))") }
    }

    /// Makes system call `number` with all-zero arguments: the self-check of
    /// `ferry seccomp-profile --try`. Answers the result and errno.
    public static func call(_ number: Int32) -> (result: Int, errno: Int32) {
        let result = ferry_sb_raw_syscall(Int(number))
        return (result, errno)
    }

    /// The number of a system call on this architecture, or nil.
    public static func number(of name: String) -> Int32? {
        let n = seccomp_syscall_resolve_name(name)
        return n == __NR_SCMP_ERROR ? nil : n
    }
}
