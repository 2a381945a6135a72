import ArgumentParser
import FerryCore
import FerryDaemon
import FerryDevFUSE
import FerryPOSIX
import FerryRADOSBackend
import FerrySandbox
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// `ferry mount SOURCE MOUNTPOINT`: serve an export on the host through /dev/fuse.
struct MountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Mount a source on a host directory through /dev/fuse (runs in the foreground).",
        discussion: """
            Unmounts cleanly on SIGINT or SIGTERM. Needs root. Once mounted, the process keeps \
            only the capabilities its backend needs (and CAP_SYS_ADMIN, to unmount), takes no \
            new privileges, and runs under the backend's seccomp allowlist (see \
            `ferry seccomp-profile --backend KIND --host-mount`).
            """
    )

    @Argument(help: "What to serve: a directory, nfs://SERVER/PATH[?version=3|4] or rados://POOL[/NAMESPACE].")
    var source: String

    @Argument(help: "Where to mount it.")
    var mountPoint: String

    @Option(help: "Worker threads reading /dev/fuse.")
    var threads: Int = 4

    @OptionGroup var export: ExportOptions

    @OptionGroup var ceph: CephOptions

    @Option(help: "Log level: error, warn, info, debug, trace.")
    var logLevel: LogLevelOption = .info

    @Option(help: "What seccomp does to a system call the backend does not need: kill, log, trap or none.")
    var seccomp: SeccompAction = .kill

    func validate() throws {
        guard (1...256).contains(threads) else { throw ValidationError("--threads must be between 1 and 256") }
        guard export.maxInodes >= 16 else { throw ValidationError("--max-inodes must be at least 16") }
    }

    func run() throws {
        let level = logLevel.level
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "ferry.mount")
        logger[metadataKey: "export"] = "\(mountPoint)"

        let parsed = try Source(parsing: source, ceph: ceph.access)
        // umask 0 (the driver creates files with exactly the mode the client asked for; the
        // client's kernel has already applied its umask); only the main thread takes these
        // signals: workers are started after this.
        var signals = ProcessSetup.prepareForServing(blocking: [SIGINT, SIGTERM, SIGUSR1], ignoreBrokenPipes: false)

        let policy = export.policy
        let server = try openExport(parsed, policy: policy, posix: export.posixOptions, logger: logger)

        let device: DeviceMount
        do {
            device = try DeviceMount(mountPoint: mountPoint, fsName: "ferry:\(parsed)", maxRead: policy.maxWrite)
        } catch {
            logger.error("\(error)")
            throw ExitCode(2)
        }
        // Mounted, the export open: confine the process before the workers start (the
        // backend's own threads, librados's, are covered too: the filter goes to every thread).
        do {
            try Sandbox.restrictPrivileges(keeping: parsed.sandbox.capabilities.union([.sysAdmin]))
            try Seccomp.install(seccomp, adding: parsed.sandbox.syscalls, hostMount: true)
        } catch {
            logger.error("cannot confine the process: \(error)")
            device.unmount()
            server.shutdown()
            throw ExitCode(2)
        }
        let mainThread = pthread_self()
        let session = DeviceSession(device: device, handler: server, maxWrite: policy.maxWrite, logger: logger) {
            pthread_kill(mainThread, SIGUSR1)
        }
        session.start(threads: threads)
        logger.info("mounted", metadata: ["source": "\(parsed)", "threads": "\(threads)", "cache": "\(policy.cache)"])

        var received: Int32 = 0
        sigwait(&signals, &received)
        if received != SIGUSR1 {
            logger.info("unmounting", metadata: ["signal": "\(received)"])
        }
        device.unmount()
        session.join()
        server.shutdown()
        logger.info("unmounted")
    }
}
