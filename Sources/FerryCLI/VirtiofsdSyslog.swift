import FerryDaemon
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// A swift-log handler writing to syslog(3) (facility LOG_USER, ident "virtiofsd"), for
/// `--syslog` as Kata passes it.
struct SyslogLogHandler: LogHandler {
    private static let opened: Bool = {
        // openlog keeps the ident pointer: it must live as long as the process (never freed).
        // LOG_NDELAY: connect to /dev/log now, before the sandbox hides it.
        openlog(strdup("virtiofsd")!, LOG_PID | LOG_NDELAY, LOG_USER)
        return true
    }()

    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String) {
        self.label = label
        _ = Self.opened
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { _, new in new } }
        if let extra = event.metadata { all.merge(extra) { _, new in new } }
        let line = Self.format(label: label, message: "\(event.message)", metadata: all)
        let priority = Self.priority(event.level)
        line.withCString { text in
            withVaList([text]) { vsyslog(priority, "%s", $0) }
        }
    }

    static func format(label: String, message: String, metadata: Logger.Metadata) -> String {
        guard !metadata.isEmpty else { return "\(label): \(message)" }
        let pairs = metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        return "\(label): \(message) \(pairs)"
    }

    static func priority(_ level: Logger.Level) -> Int32 {
        switch level {
        case .trace, .debug: return LOG_DEBUG
        case .info: return LOG_INFO
        case .notice: return LOG_NOTICE
        case .warning: return LOG_WARNING
        case .error: return LOG_ERR
        case .critical: return LOG_CRIT
        }
    }
}
