import FerryConfig
import FerrySandbox
import Logging

/// `ferry serve` without its process: the daemon with every export, its control socket and
/// its metrics endpoint, started and stopped together. It changes nothing process-wide
/// (`ProcessSetup` is the executable's part), so a test can run it in its own process.
public final class DaemonService: Sendable {
    public let daemon: Daemon
    private let control: ControlServer
    private let metrics: MetricsServer?

    /// Binds the control socket and the metrics endpoint (what can fail); nothing serves
    /// until `start`. `root`: the sandbox's private root the process pivoted into, if any.
    public init(configuration: Configuration, root: PrivateRoot? = nil, logger: Logger) throws(CLIError) {
        daemon = Daemon(configuration: configuration, root: root, logger: logger)
        control = try ControlServer(path: configuration.daemon.controlSocket, daemon: daemon, logger: logger)
        if let address = configuration.daemon.metricsAddress {
            do {
                metrics = try MetricsServer(address: address, daemon: daemon, logger: logger)
            } catch {
                control.stop()
                throw error
            }
        } else {
            metrics = nil
        }
    }

    /// Starts every export, then answers on the control socket and the metrics endpoint.
    public func start() {
        daemon.start()
        control.start()
        metrics?.start()
    }

    /// Stops answering, then drains and stops every export.
    public func stop() {
        metrics?.stop()
        control.stop()
        daemon.stop()
    }
}
