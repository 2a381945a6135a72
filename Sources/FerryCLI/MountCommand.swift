import ArgumentParser
import FerryCore
import FerryDaemon
import FerryDevFUSE
import FerryFUSE
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

    @Argument(help: "What to serve: a directory, nfs://SERVER/PATH[?version=3|4|4.0|4.1|4.2] or rados://POOL[/NAMESPACE].")
    var source: String

    @Argument(help: "Where to mount it.")
    var mountPoint: String

    @Option(help: "Worker threads reading /dev/fuse.")
    var threads: Int = 4

    @Option(help: ArgumentHelp("FUSE over io_uring (Linux 6.14+): auto, on or off.", discussion: """
        auto: requests come through io_uring rings when the kernel allows it (its fuse module's \
        enable_uring parameter is 1), through /dev/fuse otherwise; on: the rings or an error.
        """))
    var uring: URingMode = .auto

    @Option(help: "io_uring rings (each with its own thread); the kernel's queues, one per possible CPU, are shared out among them. Default: one per queue.")
    var uringQueues: Int?

    @Option(help: "Entries (requests in flight) per io_uring queue.")
    var uringDepth: Int = 4

    @OptionGroup var export: ExportOptions

    @OptionGroup var ceph: CephOptions

    @Option(help: "Log level: error, warn, info, debug, trace.")
    var logLevel: LogLevelOption = .info

    @Option(help: "What seccomp does to a system call the backend does not need: kill, log, trap or none.")
    var seccomp: SeccompAction = .kill

    @Option(help: ArgumentHelp(
        "FUSE passthrough: auto, on or off.",
        discussion: "With passthrough the kernel reads, writes and maps an open file of a directory export "
            + "through the host file itself (Linux 6.9+). auto: when the kernel offers it and the export "
            + "allows it (a directory export without --quota-bytes or --writeback); on: refuse to start "
            + "unless it works; off: every byte goes through ferry."))
    var passthrough: PassthroughMode = .auto

    @Option(help: "Most bytes of file data the export may hold (EDQUOT beyond). Ferry then counts every write, so passthrough is off.")
    var quotaBytes: UInt64?

    func validate() throws {
        guard (1...256).contains(threads) else { throw ValidationError("--threads must be between 1 and 256") }
        guard export.maxInodes >= 16 else { throw ValidationError("--max-inodes must be at least 16") }
        if let uringQueues, !(1...4096).contains(uringQueues) {
            throw ValidationError("--uring-queues must be between 1 and 4096")
        }
        guard (1...64).contains(uringDepth) else { throw ValidationError("--uring-depth must be between 1 and 64") }
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
        // Whether to set up rings is decided before mounting: they must exist before the
        // process is confined, and `on` fails before anything is mounted.
        let wantRings: Bool
        switch uring {
        case .off: wantRings = false
        case .on:
            if let reason = URingSupport.unavailableReason() {
                logger.error("--uring on: \(reason)")
                throw ExitCode(2)
            }
            wantRings = true
        case .auto:
            let reason = URingSupport.unavailableReason()
            if let reason { logger.debug("FUSE over io_uring not used", metadata: ["reason": "\(reason)"]) }
            wantRings = reason == nil
        }
        // umask 0 (the driver creates files with exactly the mode the client asked for; the
        // client's kernel has already applied its umask); only the main thread takes these
        // signals: workers are started after this.
        var signals = ProcessSetup.prepareForServing(blocking: [SIGINT, SIGTERM, SIGUSR1, SIGUSR2], ignoreBrokenPipes: false)

        var policy = export.policy
        policy.quota.bytes = quotaBytes
        let server = try openExport(parsed, policy: policy, posix: export.posixOptions, logger: logger)

        let device: DeviceMount
        do {
            device = try DeviceMount(mountPoint: mountPoint, fsName: "ferry:\(parsed)", maxRead: policy.maxWrite)
        } catch {
            logger.error("\(error)")
            throw ExitCode(2)
        }
        let backingFiles = passthrough == .off ? nil : DeviceBackingFiles(device: device)
        if let backingFiles, case .unavailable(let reason) = server.enablePassthrough(backingFiles) {
            if passthrough == .on {
                logger.error("--passthrough on: \(reason)")
                device.unmount()
                server.shutdown()
                throw ExitCode(2)
            }
            logger.info("passthrough off: \(reason)")
        }
        let mainThread = pthread_self()
        var rings: URingSession? = nil
        if wantRings {
            do {
                rings = try URingSession(device: device, handler: server, maxWrite: policy.maxWrite,
                                         rings: uringQueues ?? URingSupport.possibleCPUs(), depth: uringDepth,
                                         required: uring == .on, logger: logger) { pthread_kill(mainThread, SIGUSR1) }
            } catch {
                logger.error("\(error)")
                device.unmount()
                server.shutdown()
                throw ExitCode(2)
            }
        }
        // Mounted, the export open: confine the process before the workers start (the
        // backend's own threads, librados's, are covered too: the filter goes to every thread).
        do {
            try Sandbox.restrictPrivileges(keeping: parsed.sandbox.capabilities.union([.sysAdmin]))
            try Seccomp.install(seccomp, adding: parsed.sandbox.syscalls + (rings == nil ? [] : URingSession.syscalls),
                                hostMount: true)
        } catch {
            logger.error("cannot confine the process: \(error)")
            device.unmount()
            server.shutdown()
            throw ExitCode(2)
        }
        let session = DeviceSession(device: device, handler: server, maxWrite: policy.maxWrite, logger: logger,
                                    initParticipant: rings) {
            pthread_kill(mainThread, SIGUSR1)
        }
        session.start(threads: threads)
        if passthrough == .on, let backingFiles,
           let problem = Self.passthroughProblem(server, backingFiles, beneath: source, mountPoint: mountPoint) {
            logger.error("--passthrough on: \(problem)")
            device.unmount()
            session.join()
            rings?.join()
            server.shutdown()
            throw ExitCode(2)
        }
        logger.info("mounted", metadata: ["source": "\(parsed)", "threads": "\(threads)", "cache": "\(policy.cache)",
                                          "uring": "\(uring.rawValue)", "passthrough": "\(passthrough.rawValue)"])
        if rings == nil { logger.info("transport", metadata: ["transport": "classic"]) }

        var received: Int32 = 0
        // SIGUSR2: log the counters (how tests and operators see what serves the mount).
        while sigwait(&signals, &received) == 0 && received == SIGUSR2 {
            logger.info("counters", metadata: Self.counters(server, rings))
        }
        if received != SIGUSR1 {
            logger.info("unmounting", metadata: ["signal": "\(received)"])
        }
        device.unmount()
        session.join()
        rings?.join()
        server.shutdown()
        let counts = Self.counters(server, rings)
        if let failure = rings?.failure {
            logger.error("unmounted", metadata: counts.merging(["error": "\(failure)"]) { $1 })
            throw ExitCode(2)
        }
        logger.info("unmounted", metadata: counts)
    }

    /// Why passthrough cannot work once the kernel answered INIT, or nil when it does: the
    /// kernel did not agree FUSE_PASSTHROUGH, or refused a backing file beneath the export.
    private static func passthroughProblem(_ server: any ServedExport, _ backingFiles: DeviceBackingFiles,
                                           beneath directory: String, mountPoint: String) -> String? {
        // The kernel sends INIT as soon as the mount exists; a worker answers it.
        var agreed = server.passthroughAgreed
        for _ in 0..<1000 where agreed == nil {
            usleep(10_000)
            agreed = server.passthroughAgreed
        }
        switch agreed {
        case nil: return "the kernel sent no INIT within 10 s"
        case false?: return "the kernel did not offer FUSE_PASSTHROUGH (Linux 6.9 or later with CONFIG_FUSE_PASSTHROUGH)"
        case true?: break
        }
        // The session agrees before its INIT reply is written; the kernel turns passthrough
        // on when it takes that reply, and holds every request until then: one OPENDIR of
        // the mount's root has gone through once the kernel is ready.
        let root = open(mountPoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if root >= 0 { close(root) }
        guard let refused = backingFiles.probe(beneath: directory) else { return nil }
        switch refused.rawValue {
        case EPERM: return "the kernel refused a backing file (EPERM): FUSE_DEV_IOC_BACKING_OPEN needs CAP_SYS_ADMIN in the initial user namespace"
        case ELOOP: return "\(directory) is on a stacking file system (overlay, a FUSE mount with passthrough); the kernel refuses backing files there (ELOOP, max_stack_depth 1)"
        default: return "the kernel refused a backing file from \(directory): \(refused)"
        }
    }
}

/// `ferry mount --passthrough`.
enum PassthroughMode: String, ExpressibleByArgument, CaseIterable {
    case auto, on, off
}

extension MountCommand {
    /// Which transport serves the mount and how much went through each path: requests
    /// answered through the rings, every request the server counted (rings and device), the
    /// FORGETs and INTERRUPTs (which always come through the device), the nodes held, the
    /// opens the kernel serves itself (passthrough) and the bytes the daemon moved.
    static func counters(_ server: any ServedExport, _ rings: URingSession?) -> Logger.Metadata {
        let snapshot = server.statistics.snapshot()
        let operations = snapshot.operations
        func count(_ opcodes: Set<UInt32>) -> UInt64 {
            operations.filter { opcodes.contains($0.opcode) }.reduce(0) { $0 + $1.requests }
        }
        var metadata: Logger.Metadata = [
            "transport": "\(rings?.outcome == .rings ? "io_uring" : "classic")",
            "requests": "\(operations.reduce(0) { $0 + $1.requests })",
            "forgets": "\(count([FUSEOpcode.forget.rawValue, FUSEOpcode.batchForget.rawValue]))",
            "interrupts": "\(count([FUSEOpcode.interrupt.rawValue]))",
            "nodes": "\(server.nodeCount)",
            // Bytes the daemon itself moved: with passthrough the kernel moves the rest.
            "passthrough_opens": "\(snapshot.passthroughOpens)", "passthrough_fallbacks": "\(snapshot.passthroughFallbacks)",
            "bytes_read": "\(snapshot.bytesRead)", "bytes_written": "\(snapshot.bytesWritten)",
        ]
        if let rings { metadata["uring_requests"] = "\(rings.requestsServed)" }
        return metadata
    }
}

extension URingMode: ExpressibleByArgument {}
