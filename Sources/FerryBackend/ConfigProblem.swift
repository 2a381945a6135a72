/// Where something was written: a file and a 1-based line (and column when known).
public struct SourceLocation: Hashable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int?
    public init(file: String, line: Int, column: Int? = nil) {
        self.file = file
        self.line = line
        self.column = column
    }
    public var description: String { "\(file):\(line)" + (column.map { ":\($0)" } ?? "") }
}

/// One thing wrong with a configuration, rendered `FILE:LINE[:COLUMN]: message`
/// (or `FILE: message` for a problem with a file or directory as a whole).
public struct ConfigProblem: Error, Hashable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int?
    public var column: Int?
    public var message: String

    public init(file: String, line: Int?, column: Int? = nil, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.message = message
    }

    public init(_ message: String, at location: SourceLocation) {
        self.init(file: location.file, line: location.line, column: location.column, message: message)
    }

    public var description: String {
        guard let line else { return "\(file): \(message)" }
        return "\(file):\(line)" + (column.map { ":\($0)" } ?? "") + ": \(message)"
    }
}
