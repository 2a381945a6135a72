import CFerrySandbox
#if canImport(Glibc)
import Glibc
#endif

/// How a serving process confines itself, as virtiofsd's `--sandbox` means it.
public enum SandboxMode: String, Sendable, CaseIterable {
    /// New mount, PID, IPC (and, without network backends, network) namespaces; for a
    /// POSIX export, pivot_root into the export so nothing else can be named.
    case namespace
    /// chroot into the export (no namespaces).
    case chroot
    /// No confinement beyond the driver's own (openat2 RESOLVE_BENEATH).
    case none
}

/// Linux capability numbers Ferry keeps for some backends.
public enum Capability: Int, Sendable, CaseIterable {
    case chown = 0, dacOverride = 1, dacReadSearch = 2, fowner = 3, fsetid = 4, kill = 5, setgid = 6, setuid = 7
    case linuxImmutable = 9, sysChroot = 18, sysAdmin = 21, sysResource = 24, mknod = 27, lease = 28, setfcap = 31
}

/// The steps of confining a process, each its own call so a command can order them:
/// namespaces (which fork) before any thread starts; pivot_root or chroot once the export is
/// open; capabilities, no-new-privileges and seccomp last.
public enum Sandbox {
    /// Enters new namespaces and forks: the child returns (as PID 1 of the new PID
    /// namespace) and serves; the parent stays outside, passes SIGTERM, SIGINT and SIGHUP on
    /// to the child, and exits with the child's status. Call before any thread starts.
    /// `cleanupPaths` are removed by the parent once the child has exited (sockets the child
    /// created but can no longer name after pivoting).
    public static func enterNamespaces(isolateNetwork network: Bool, cleanupPaths: [String] = []) throws(SandboxError) {
        // Only the PID namespace is entered before the fork (it applies to children): the
        // parent must stay in the host's mount namespace, or the child's pivot_root would
        // move the parent's root too, and its clean-up would name paths inside the export.
        guard ferry_sb_unshare(ferry_sb_clone_newpid()) == 0 else {
            let reason = String(cString: strerror(errno))
            throw SandboxError("cannot enter a new PID namespace (\(reason)): the namespace sandbox needs root (CAP_SYS_ADMIN); use --sandbox=chroot or none")
        }
        let child = ferry_sb_fork()
        if child < 0 { throw SandboxError("fork: \(String(cString: strerror(errno)))") }
        if child == 0 {
            // If the parent is killed outright, do not outlive it.
            _ = ferry_sb_die_with_parent()
            // As PID 1 of the namespace, signals with the default disposition never arrive.
            _ = ferry_sb_accept_termination_signals()
            var flags = ferry_sb_clone_newns() | ferry_sb_clone_newipc()
            if network { flags |= ferry_sb_clone_newnet() }
            guard ferry_sb_unshare(flags) == 0 else {
                throw SandboxError("cannot enter new mount/IPC/network namespaces: \(String(cString: strerror(errno)))")
            }
            guard ferry_sb_make_root_slave() == 0 else {
                throw SandboxError("cannot make / a slave mount: \(String(cString: strerror(errno)))")
            }
            return
        }
        superviseAndExit(child, cleanupPaths: cleanupPaths)
    }

    /// The parent's side: forward the termination signals, wait, exit as the child did.
    private static func superviseAndExit(_ child: pid_t, cleanupPaths: [String]) -> Never {
        var signals = sigset_t()
        sigemptyset(&signals)
        for s in [SIGTERM, SIGINT, SIGHUP, SIGCHLD] { sigaddset(&signals, s) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        while true {
            var status: Int32 = 0
            let done = waitpid(child, &status, WNOHANG)
            if done == child {
                for path in cleanupPaths { unlink(path) }
                if status & 0x7f == 0 { exit((status >> 8) & 0xff) }   // exited
                exit(128 + (status & 0x7f))                            // killed by a signal
            }
            var received: Int32 = 0
            sigwait(&signals, &received)
            if received != SIGCHLD { kill(child, received) }
        }
    }

    /// Makes `path` the process's root: bind-mounts it on itself and pivots into it, so no
    /// path outside it can be named again. Descriptors opened before keep working.
    public static func pivotRoot(into path: String) throws(SandboxError) {
        guard ferry_sb_bind_self(path) == 0 else { throw SandboxError("cannot bind-mount \(path): \(String(cString: strerror(errno)))") }
        guard ferry_sb_pivot_into(path) == 0 else { throw SandboxError("cannot pivot_root into \(path): \(String(cString: strerror(errno)))") }
    }

    public static func chroot(into path: String) throws(SandboxError) {
        guard ferry_sb_chroot_into(path) == 0 else { throw SandboxError("cannot chroot into \(path): \(String(cString: strerror(errno)))") }
    }

    /// PR_SET_NO_NEW_PRIVS alone, which loading a seccomp filter without CAP_SYS_ADMIN needs.
    public static func forbidNewPrivileges() throws(SandboxError) {
        guard ferry_sb_no_new_privs() == 0 else { throw SandboxError("PR_SET_NO_NEW_PRIVS: \(String(cString: strerror(errno)))") }
    }

    /// No new privileges, no supplementary groups, and only `keep` of the capabilities.
    public static func restrictPrivileges(keeping keep: Set<Capability>) throws(SandboxError) {
        try forbidNewPrivileges()
        if getuid() == 0 || geteuid() == 0 {
            guard ferry_sb_drop_supplementary_groups() == 0 else { throw SandboxError("setgroups: \(String(cString: strerror(errno)))") }
        }
        let mask = keep.reduce(UInt64(0)) { $0 | (1 << UInt64($1.rawValue)) }
        guard ferry_sb_limit_capabilities(mask) == 0 else { throw SandboxError("cannot limit capabilities: \(String(cString: strerror(errno)))") }
    }

    /// The effective capabilities of the calling thread, as a bit mask.
    public static var effectiveCapabilities: UInt64 { ferry_sb_effective_capabilities() }
}
