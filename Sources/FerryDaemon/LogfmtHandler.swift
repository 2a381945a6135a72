import FerryConfig
import Foundation
import Logging

/// Structured log lines for `ferry serve`: `key=value` pairs (logfmt), one event per line,
/// with the tenant and export on every line an export writes, so a log pipeline can filter
/// one tenant without parsing messages.
///
///     time=2026-11-21T21:40:00.123Z level=info logger=ferry tenant=acme export=home msg="export serving" tag=acme-home
public struct LogfmtHandler: LogHandler {
    public let label: String
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]

    public init(label: String, logLevel: Logger.Level) {
        self.label = label
        self.logLevel = logLevel
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(level: Logger.Level, message: Logger.Message, metadata explicit: Logger.Metadata?,
             source: String, file: String, function: String, line: UInt) {
        var merged = metadata
        if let explicit { merged.merge(explicit) { $1 } }
        var text = "time=\(Self.timestamp()) level=\(level) logger=\(Self.quote(label))"
        // Tenant and export first, then the message, then the rest in a stable order.
        for key in ["tenant", "export"] { if let v = merged.removeValue(forKey: key) { text += " \(key)=\(Self.quote("\(v)"))" } }
        text += " msg=\(Self.quote("\(message)"))"
        for key in merged.keys.sorted() { text += " \(key)=\(Self.quote("\(merged[key]!)"))" }
        text += "\n"
        FileHandle.standardError.write(Data(text.utf8))
    }

    public static func quote(_ value: String) -> String {
        let plain = !value.isEmpty && value.allSatisfy { $0 != " " && $0 != "\"" && $0 != "=" && $0 != "\\" && !$0.isNewline }
        if plain { return value }
        return "\"" + backslashEscaped(value) + "\""
    }

    private static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var parts = tm()
        var seconds = now.tv_sec
        gmtime_r(&seconds, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
                      parts.tm_hour, parts.tm_min, parts.tm_sec, now.tv_nsec / 1_000_000)
    }
}

extension FerryConfig.LogLevel {
    public var loggerLevel: Logger.Level {
        switch self {
        case .trace: return .trace
        case .debug: return .debug
        case .info: return .info
        case .notice: return .notice
        case .warning: return .warning
        case .error: return .error
        case .critical: return .critical
        }
    }
}

/// `\`, `"` and newlines escaped with a backslash: what logfmt values and Prometheus label
/// values both need.
func backslashEscaped(_ value: String) -> String {
    var out = ""
    for c in value {
        switch c {
        case "\\": out += "\\\\"
        case "\"": out += "\\\""
        case "\n": out += "\\n"
        default: out.append(c)
        }
    }
    return out
}
