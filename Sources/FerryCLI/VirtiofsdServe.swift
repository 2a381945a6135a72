import FerryCore
import FerryVhostUser
import FerryPOSIX
import FerrySandbox
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Serves `plan` until SIGINT, SIGTERM or SIGHUP (then returns: exit 0), or until the
/// back-end stops by itself.
func serveVirtiofsd(_ plan: VirtiofsdPlan) throws(CLIError) {
    bootstrapVirtiofsdLogging(level: plan.logLevel, syslog: plan.syslog)
    let logger = Logger(label: "ferry.virtiofsd")

    let group = try plan.socketGroup.map { name throws(CLIError) in try resolveGroup(name) }
    let parsed = try Source(parsing: plan.source, ceph: plan.ceph)
    let threadPoolSize = plan.threadPoolSize ?? parsed.defaultRequestThreads
    setUpOpenFileLimit(requested: plan.rlimitNofile, threadPoolSize: threadPoolSize, logger: logger)
    let kinds: Set<BackendKind> = [parsed.backendKind]

    // Namespaces fork: before any thread exists. The parent stays outside, waits, removes
    // the socket (which the child can no longer name once it has pivoted) and exits as the
    // child did.
    if plan.sandbox == .namespace {
        var cleanup: [String] = []
        if case .socketPath(let path) = plan.listener { cleanup.append(path) }
        do {
            try Sandbox.enterNamespaces(isolateNetwork: kinds == [.posix], cleanupPaths: cleanup)
        } catch {
            throw CLIError("\(error)")
        }
    }

    // The driver creates files with exactly the mode the guest asked for; the guest kernel has
    // already applied its umask.
    umask(0)
    // Only the main thread takes these; every thread started from here on inherits the mask.
    var signals = sigset_t()
    sigemptyset(&signals)
    for s in [SIGINT, SIGTERM, SIGHUP, SIGUSR1] { sigaddset(&signals, s) }
    pthread_sigmask(SIG_BLOCK, &signals, nil)

    // A rados:// export another daemon holds: this one may be a migration's destination
    // (QEMU -incoming), which waits as a standby and takes the lease with the state.
    let server = try openExport(parsed, policy: plan.policy, posix: plan.posixOptions, logger: logger, migrationStandby: true)

    let backend: VirtiofsdBackend
    do {
        backend = try startVhostUserBackend(
            listener: plan.listener, socketGroup: group, handler: server,
            threadPoolSize: threadPoolSize, maxWrite: plan.policy.maxWrite, migration: plan.migration, logger: logger)
    } catch {
        server.shutdown()
        throw error
    }

    // The export and the socket are open: confine the process before its threads start.
    do {
        try confine(mode: plan.sandbox, seccomp: plan.seccomp, source: parsed, kinds: kinds)
    } catch {
        server.shutdown()
        throw CLIError("\(error)")
    }

    let mainThread = pthread_self()
    let serving = startThread {
        backend.run()
        pthread_kill(mainThread, SIGUSR1)
    }
    logger.info("serving", metadata: [
        "source": "\(parsed)", "listener": "\(plan.listener)", "cache": "\(plan.cache)",
        "thread-pool-size": "\(threadPoolSize)", "sandbox": "\(plan.sandbox)", "seccomp": "\(plan.seccomp)",
    ])

    var received: Int32 = 0
    sigwait(&signals, &received)
    if received != SIGUSR1 {
        logger.info("stopping", metadata: ["signal": "\(received)"])
        backend.stop()
    }
    pthread_join(serving, nil)
    server.shutdown()
    logger.info("stopped")
}

/// A running vhost-user back-end, as `serveVirtiofsd` drives it.
struct VirtiofsdBackend {
    /// Serves front-ends one after another until `stop`; called on a thread of its own.
    let run: () -> Void
    /// From any thread: makes `run` return.
    let stop: () -> Void
}

// MARK: - The vhost-user back-end

/// Listens for the vhost-user front-end (QEMU) on a socket path or an inherited fd.
func startVhostUserBackend(
    listener: VirtiofsdPlan.Listener, socketGroup: gid_t?, handler: any FUSERequestHandler,
    threadPoolSize: Int, maxWrite: UInt32, migration: MigrationOptions = MigrationOptions(), logger: Logger
) throws(CLIError) -> VirtiofsdBackend {
    var options = VhostUserFSOptions(threadPoolSize: threadPoolSize, maxWrite: maxWrite)
    options.migration = migration
    let backend: VhostUserFSBackend
    do {
        switch listener {
        case .socketPath(let path):
            backend = try VhostUserFSBackend(socketPath: path, socketGroup: socketGroup,
                                             handler: handler, options: options, logger: logger)
        case .fd(let fd):
            backend = try VhostUserFSBackend(listeningFD: fd, handler: handler, options: options, logger: logger)
        }
    } catch {
        throw CLIError("cannot listen for the vhost-user front-end: \(error)")
    }
    return VirtiofsdBackend(run: backend.run, stop: backend.stop)
}

// MARK: - Process set-up

/// The group id of `--socket-group`: a group name, or a number.
func resolveGroup(_ name: String) throws(CLIError) -> gid_t {
    if let entry = getgrnam(name) { return entry.pointee.gr_gid }
    if let number = gid_t(name) { return number }
    throw CLIError("--socket-group: no group named '\(name)'")
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

/// Logging to standard error, or to syslog with `--syslog`; nil level turns logging off.
func bootstrapVirtiofsdLogging(level: Logger.Level?, syslog: Bool) {
    LoggingSystem.bootstrap { label in
        guard let level else { return SwiftLogNoOpLogHandler() }
        if syslog {
            var handler = SyslogLogHandler(label: label)
            handler.logLevel = level
            return handler
        }
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
}

private final class ThreadBody {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}

/// Starts a joinable thread running `body`.
func startThread(_ body: @escaping () -> Void) -> pthread_t {
    let context = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    var thread = pthread_t()
    let result = pthread_create(&thread, nil, { context in
        Unmanaged<ThreadBody>.fromOpaque(context!).takeRetainedValue().body()
        return nil
    }, context)
    precondition(result == 0, "pthread_create: \(result)")
    return thread
}

/// The confinement of a serving process once its export and sockets are open: the root
/// (the export itself, for a local directory; for a network source, which is connected by
/// now, a private root with only what its client may still read), privileges, then the
/// seccomp filter, which every thread started afterwards inherits.
func confine(mode: SandboxMode, seccomp: SeccompAction, source: Source, kinds: Set<BackendKind>) throws(SandboxError) {
    switch (mode, source) {
    case (.namespace, .directory(let path)): try Sandbox.pivotRoot(into: path)
    case (.namespace, _): try Sandbox.pivotRoot(into: PrivateRoot.network(source))
    case (.chroot, .directory(let path)): try Sandbox.chroot(into: path)
    case (.chroot, _), (.none, _): break
    }
    try Sandbox.restrictPrivileges(keeping: Capability.needed(by: kinds))
    try Seccomp.install(seccomp, for: kinds)
}
