import FerryCore
import FerryDaemon
import FerryPOSIX
import FerrySandbox
import FerryVhostUser
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
    ProcessSetup.raiseOpenFileLimit(requested: plan.rlimitNofile, threadPoolSize: threadPoolSize, logger: logger)

    // Namespaces fork: before any thread exists. The parent stays outside, waits, removes
    // the socket (which the child can no longer name once it has pivoted) and exits as the
    // child did.
    if plan.sandbox == .namespace {
        var cleanup: [String] = []
        if case .socketPath(let path) = plan.listener { cleanup.append(path) }
        do {
            try Sandbox.enterNamespaces(isolateNetwork: !parsed.sandbox.network, cleanupPaths: cleanup)
        } catch {
            throw CLIError("\(error)")
        }
    }

    // umask 0 (the driver creates files with exactly the mode the guest asked for); only the
    // main thread takes these signals.
    var signals = ProcessSetup.prepareForServing(blocking: [SIGINT, SIGTERM, SIGHUP, SIGUSR1], ignoreBrokenPipes: false)

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
        try ProcessSetup.confine(mode: plan.sandbox, seccomp: plan.seccomp, source: parsed)
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

