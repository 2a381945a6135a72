import ArgumentParser
import FerryConfig
import FerryDaemon
import FerrySandbox
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// `ferry serve`: every export of every tenant in one process.
struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve every export of every tenant in the configuration directory (the daemon).",
        discussion: """
            Each export gets its own vhost-user socket and request threads. SIGHUP or `ferry reload` \
            re-reads the configuration: new exports start, removed ones stop after their in-flight \
            requests, changed ones restart, the rest are not touched; a configuration with problems \
            is rejected whole. SIGTERM or SIGINT drains every export and exits 0.
            """
    )

    @Option(name: .customLong("config"), help: "The configuration directory.")
    var directory: String = ConfigLoader.defaultDirectory

    @Option(help: "Override the log level of ferry.toml: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String?

    func run() throws {
        var configuration: Configuration
        switch ConfigLoader.load(directory: directory) {
        case .success(let loaded): configuration = loaded
        case .failure(let problems):
            for problem in problems.problems { writeStandardError("\(problem)\n") }
            writeStandardError("ferry serve: \(problems.problems.count) problem(s) in \(directory); nothing started\n")
            throw ExitCode(1)
        }
        var chosen = configuration.daemon.logLevel.loggerLevel
        if let logLevel {
            guard let parsed = FerryConfig.LogLevel(rawValue: logLevel) else {
                throw ValidationError("--log-level must be one of \(FerryConfig.LogLevel.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            chosen = parsed.loggerLevel
        }
        let level = chosen
        LoggingSystem.bootstrap { label in LogfmtHandler(label: label, logLevel: level) }
        let logger = Logger(label: "ferry")

        // Process-wide, before any thread: umask 0, the signals this thread waits for below.
        var signals = ProcessSetup.prepareForServing(blocking: [SIGINT, SIGTERM, SIGHUP], ignoreBrokenPipes: true)
        // Every export's descriptors share one process: raise the open-file limit as virtiofsd does.
        ProcessSetup.raiseOpenFileLimit(requested: nil, threadPoolSize: 0, logger: logger)
        // Confinement comes before any thread, socket or backend: see confineDaemon.
        let sandbox = configuration.daemon.sandbox
        // Reloads read the directory again after the sandbox has made "/" the working directory.
        configuration.directory = absolutePath(directory)
        let service: DaemonService
        do {
            let root = try ProcessSetup.confineDaemon(configuration)
            service = try DaemonService(configuration: configuration, root: root, logger: logger)
        } catch {
            writeStandardError("ferry serve: \(error)\n")
            throw ExitCode(1)
        }
        let daemon = service.daemon
        service.start()
        let statuses = daemon.statuses()
        logger.info("serving", metadata: [
            "config": "\(directory)", "sandbox": "\(sandbox.mode)", "seccomp": "\(sandbox.seccomp)", "exports": "\(statuses.count)",
            "failed": "\(statuses.filter { $0.state.isError }.count)",
            "control": "\(configuration.daemon.controlSocket)",
            "metrics": "\(configuration.daemon.metricsAddress.map { "\($0)" } ?? "off")",
        ])

        while true {
            // Wake every few seconds to retry exports whose backend was unreachable.
            var wait = timespec(tv_sec: 5, tv_nsec: 0)
            let received = sigtimedwait(&signals, nil, &wait)
            if received < 0 {
                daemon.retryFailed()
                continue
            }
            if received == SIGHUP {
                logger.info("SIGHUP: reloading the configuration")
                _ = daemon.reload()
                continue
            }
            logger.info("stopping", metadata: ["signal": "\(received)"])
            break
        }
        service.stop()
        logger.info("stopped")
    }
}

/// `ferry reload`: asks the running daemon to re-read its configuration.
struct ReloadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reload",
        abstract: "Make the running daemon re-read its configuration (as SIGHUP does) and print what changed.")

    @Option(name: .customLong("config"), help: "The configuration directory (to find the daemon's control socket).")
    var directory: String = ConfigLoader.defaultDirectory

    @Option(help: "The daemon's control socket (default: control_socket of ferry.toml).")
    var controlSocket: String?

    func run() throws {
        // ferry.toml alone: a broken tenant file must not keep `reload` from reaching the daemon.
        let path = controlSocket ?? ConfigLoader.daemonSettings(directory: directory).controlSocket
        let reply: ControlReply
        do {
            reply = try askDaemon(ControlRequest(command: .reload), at: path, timeout: 600)
        } catch {
            throw CLIError("\(error)")
        }
        guard let outcome = reply.reload else { throw CLIError(reply.error ?? "the daemon did not reload") }
        if !outcome.accepted {
            for problem in outcome.problems { writeStandardError("\(problem)\n") }
            writeStandardError("ferry reload: configuration rejected; the daemon keeps the one in force\n")
            throw ExitCode(1)
        }
        func line(_ what: String, _ keys: [String]) { if !keys.isEmpty { print("\(what): \(keys.joined(separator: ", "))") } }
        line("added", outcome.added)
        line("changed (restarted)", outcome.changed)
        line("removed", outcome.removed)
        line("retried (were in error)", outcome.retried)
        line("migration options updated (guest untouched)", outcome.updated)
        print("unchanged: \(outcome.unchanged.count) export(s)")
    }
}
