import FerryBackends
import FerryConfig
import FerrySandbox
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Everything a serving process sets for the whole process: the umask, which signals reach
/// which thread, the open-file limit, and the sandbox. Only executables (the `ferry`
/// commands) call these, once, before they start threads; the daemon's library code never
/// does, so a test can run a `Daemon` in its own process without its umask, signal mask or
/// privileges changing under it. Sockets do not depend on the umask set here: each is
/// given its final mode before bind (`ControlServer.listen`, `VhostUserFSBackend`), so it
/// never exists with wider access than intended, whatever the process umask is.
public enum ProcessSetup {
    /// umask 0 (a serving process creates files with exactly the mode the guest asked for:
    /// the guest's kernel applied its own umask), then `signals` blocked on the calling
    /// thread, which every thread started from here on inherits, so only the caller takes
    /// them (`sigwait`); SIGPIPE ignored when `ignoreBrokenPipes` (the daemon's endpoints
    /// write to clients that may have gone). Answers the blocked set.
    public static func prepareForServing(blocking signals: [Int32], ignoreBrokenPipes: Bool) -> sigset_t {
        umask(0)
        var set = sigset_t()
        sigemptyset(&set)
        for s in signals { sigaddset(&set, s) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
        if ignoreBrokenPipes { signal(SIGPIPE, SIG_IGN) }
        return set
    }

    /// Raises the open-file limit as virtiofsd does (`openFileLimit`).
    public static func raiseOpenFileLimit(requested: UInt64?, threadPoolSize: Int, logger: Logger) {
        setUpOpenFileLimit(requested: requested, threadPoolSize: threadPoolSize, logger: logger)
    }
}

/// The open file limit to set, or nil to leave it: what virtiofsd does. `requested` nil raises
/// the soft limit to min(1M, fs.nr_open) (raising the hard limit too if needed, which takes
/// CAP_SYS_RESOURCE); 0 leaves it; N sets it to N.
func openFileLimit(requested: UInt64?, soft: UInt64, hard: UInt64, nrOpen: UInt64) -> (soft: UInt64, hard: UInt64)? {
    switch requested {
    case 0?:
        return nil
    case let n?:
        return (n, max(hard, n))
    case nil:
        let target = min(1_000_000, nrOpen)
        if soft >= target { return nil }
        return (target, max(hard, target))
    }
}

private func readNrOpen() -> UInt64 {
    guard let file = fopen("/proc/sys/fs/nr_open", "r") else { return 1_048_576 }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 32)
    guard fgets(&buffer, 32, file) != nil else { return 1_048_576 }
    return UInt64(String(cString: buffer).filter(\.isNumber)) ?? 1_048_576
}

func setUpOpenFileLimit(requested: UInt64?, threadPoolSize: Int, logger: Logger) {
    var current = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &current) == 0 else { return }
    guard let wanted = openFileLimit(requested: requested, soft: UInt64(current.rlim_cur),
                                     hard: UInt64(current.rlim_max), nrOpen: readNrOpen()) else { return }
    var limit = rlimit(rlim_cur: rlim_t(wanted.soft), rlim_max: rlim_t(wanted.hard))
    if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 { return }
    let reason = String(cString: strerror(errno))
    // Without CAP_SYS_RESOURCE the hard limit cannot grow: go as far as it allows.
    limit = rlimit(rlim_cur: min(rlim_t(wanted.soft), current.rlim_max), rlim_max: current.rlim_max)
    if limit.rlim_cur > current.rlim_cur, setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
        logger.warning("open file limit raised only to the hard limit", metadata: [
            "wanted": "\(wanted.soft)", "limit": "\(limit.rlim_cur)", "error": "\(reason)"])
    } else {
        logger.warning("cannot change the open file limit", metadata: [
            "wanted": "\(wanted.soft)", "limit": "\(current.rlim_cur)", "error": "\(reason)"])
    }
}

extension ProcessSetup {
    /// The confinement of a serving process once its export and sockets are open: the root
    /// (the export itself, for a local directory; for a network source, which is connected by
    /// now, a private root with only what its client may still read), privileges, then the
    /// seccomp filter, which every thread started afterwards inherits.
    public static func confine(mode: SandboxMode, seccomp: SeccompAction, source: Source) throws(SandboxError) {
        let ownRoot = source.rootNeeds(readOnly: false).ownRoot
        switch (mode, ownRoot) {
        case (.namespace, let path?): try Sandbox.pivotRoot(into: path)
        case (.namespace, nil): try Sandbox.pivotRoot(into: PrivateRoot.network(source))
        case (.chroot, let path?): try Sandbox.chroot(into: path)
        case (.chroot, nil), (.none, _): break
        }
        try Sandbox.restrictPrivileges(keeping: source.sandbox.capabilities)
        try Seccomp.install(seccomp, adding: source.sandbox.syscalls)
    }

    /// The sandbox of `ferry serve`. One process serves every export, so unlike `ferry virtiofsd`
    /// it cannot make one export its root: `namespace` gives it its own PID, mount and IPC
    /// namespaces (the launcher stays outside and passes signals on) and a private root that
    /// shows only what serving and reloading need (`PrivateRoot.daemon`), while every export
    /// stays confined to its directory by openat2(RESOLVE_BENEATH). In every mode but `none` the
    /// process then has no new privileges, no supplementary groups, only the capabilities a
    /// POSIX export needs, and the seccomp allowlist of every backend this build knows (a
    /// reload may add any kind). Answers the root it pivoted into (nil: none).
    public static func confineDaemon(_ configuration: Configuration) throws(CLIError) -> PrivateRoot? {
        let needs = BackendRegistry.everySandboxNeed
        let sandbox = configuration.daemon.sandbox
        var root: PrivateRoot?
        do {
            switch sandbox.mode {
            case .none:
                break
            case .chroot:
                throw SandboxError("sandbox mode \"chroot\" confines a process to one directory, which only ferry virtiofsd serves; ferry serve takes \"namespace\" or \"none\"")
            case .namespace:
                // The sockets' directories are shown inside the root, so they must exist first.
                let sockets = [configuration.daemon.controlSocket] + configuration.exports.map(\.export.socket)
                for socket in sockets { try createParentDirectory(of: socket) }
                resolveNamesBeforePivot(configuration)
                let privateRoot = PrivateRoot.daemon(configuration)
                try Sandbox.enterNamespaces(isolateNetwork: false, cleanupPaths: [configuration.daemon.controlSocket])
                try Sandbox.pivotRoot(into: privateRoot)
                root = privateRoot
            }
            if sandbox.mode != .none || sandbox.seccomp != .none {
                try Sandbox.restrictPrivileges(keeping: needs.capabilities)
            }
            try Seccomp.install(sandbox.seccomp, adding: needs.syscalls)
        } catch let error as CLIError {
            throw error
        } catch {
            throw CLIError("\(error)")
        }
        return root
    }
}

/// `path` from the root ("/" joined with the working directory for a relative one).
public func absolutePath(_ path: String) -> String {
    if path.hasPrefix("/") { return path }
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
    guard getcwd(&buffer, buffer.count) != nil else { return path }
    let cwd = String(cString: buffer)
    return cwd == "/" ? "/" + path : cwd + "/" + path
}
