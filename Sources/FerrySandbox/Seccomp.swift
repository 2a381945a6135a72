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

/// The backends whose system calls a process must be allowed.
public enum BackendKind: String, Sendable, CaseIterable, Hashable {
    case posix, nfs, rados
}

/// The system call allowlists: one set every Ferry process needs (the Swift runtime,
/// threads, memory, signals, the vhost-user transport and the control/metrics sockets),
/// and one per backend kind. The effective list of a process is the union of the base and
/// the kinds it serves.
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

    /// A local directory: the file system calls of every FUSE operation, done as the
    /// caller (per-thread fsuid, fsgid and groups) on descriptors and file handles.
    static let posix: [String] = [
        "openat2", "open_by_handle_at", "name_to_handle_at", "mknodat", "symlinkat", "linkat",
        "renameat", "renameat2", "fchmodat", "fchown", "fchownat", "utimensat", "fsync", "fdatasync",
        "syncfs", "fallocate", "ftruncate", "fsetxattr", "fgetxattr", "flistxattr", "fremovexattr",
        "faccessat2", "copy_file_range", "setfsuid", "setfsgid", "setgroups", "setresuid", "setresgid",
        "capget", "capset", "umask", "flock", "fchdir",
    ]

    /// libnfs: its own TCP connections to the server (and rpcbind), name lookups.
    static let nfs: [String] = [
        "socket", "connect", "bind", "getsockname", "getpeername", "sendto", "recvfrom", "sendmsg",
        "recvmsg", "sendmmsg", "recvmmsg", "setsockopt", "getsockopt", "poll", "ppoll", "select",
        "pselect6", "socketpair", "openat", "fstat", "close",
    ]

    /// librados: its messenger threads, timers and event loops.
    static let rados: [String] = [
        "socket", "connect", "bind", "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg",
        "setsockopt", "getsockopt", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait",
        "timerfd_create", "timerfd_settime", "timerfd_gettime", "eventfd2", "pipe2", "epoll_create",
        "sched_setaffinity", "sched_getparam", "sched_setscheduler", "sched_getscheduler",
        "set_mempolicy", "get_mempolicy", "mbind", "io_setup", "io_submit", "io_getevents",
        "socketpair", "select", "pselect6", "openat", "fstat", "close", "fsync", "fdatasync",
        "getsockname", "getpeername", "sysinfo",
    ]

    /// `ferry mount`: the /dev/fuse session reads and writes a descriptor it holds (as in
    /// `base`); the process unmounts at exit.
    static let hostMount: [String] = ["umount2"]

    /// The calls a process serving `kinds` may make, sorted and without repeats;
    /// `hostMount`: through a mount on the host (`ferry mount`) rather than vhost-user.
    public static func effective(for kinds: Set<BackendKind>, hostMount: Bool = false) -> [String] {
        var names = Set(base)
        if hostMount { names.formUnion(Self.hostMount) }
        for kind in kinds {
            switch kind {
            case .posix: names.formUnion(posix)
            case .nfs: names.formUnion(nfs)
            case .rados: names.formUnion(rados)
            }
        }
        return names.sorted()
    }
}

/// A seccomp filter could not be built or loaded.
public struct SandboxError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public enum Seccomp {
    /// Loads the filter for `kinds` into every thread of the process (TSYNC), with `action`
    /// for everything else. `none` loads nothing. No new privileges must already be set
    /// (or the process must hold CAP_SYS_ADMIN).
    public static func install(_ action: SeccompAction, for kinds: Set<BackendKind>, hostMount: Bool = false) throws(SandboxError) {
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
        for name in SyscallAllowlist.effective(for: kinds, hostMount: hostMount) {
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
