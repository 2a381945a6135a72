/// Where one export is, as `ferry exports list/show`, `--json` and the metrics report it.
/// Encoded as the one string operators have always seen ("listening", "error: why"...), so
/// the control socket's JSON and `--json` read as they did when the state was that string.
public enum ExportState: Equatable, Sendable, CustomStringConvertible {
    /// Its backend is being opened.
    case starting
    /// Serving, waiting for the VMM to connect.
    case listening
    /// Serving a connected VMM.
    case guestConnected
    /// Not serving, and why (a backend that could not be opened, a guest that broke the
    /// virtqueue rules...).
    case error(String)
    case stopped
    /// Configured, but no daemon serves it (none runs, or it was added since the last reload).
    /// Only `ferry exports` says this; the daemon never does.
    case notRunning

    /// Serving: listening or with a guest.
    public var isUp: Bool { self == .listening || self == .guestConnected }

    public var isError: Bool {
        if case .error = self { return true }
        return false
    }

    public var description: String {
        switch self {
        case .starting: return "starting"
        case .listening: return "listening"
        case .guestConnected: return "guest connected"
        case .error(let why): return "error: \(why)"
        case .stopped: return "stopped"
        case .notRunning: return "not running"
        }
    }

    /// The state `description` names; nil for a string no version of the daemon reports.
    public init?(reported text: String) {
        let errorPrefix = "error: "
        if text.hasPrefix(errorPrefix) {
            self = .error(String(text.dropFirst(errorPrefix.count)))
            return
        }
        guard let plain = [ExportState.starting, .listening, .guestConnected, .stopped, .notRunning]
            .first(where: { $0.description == text }) else { return nil }
        self = plain
    }
}

extension ExportState: Codable {
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let state = ExportState(reported: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "unknown export state '\(text)'"))
        }
        self = state
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
