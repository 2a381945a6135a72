/// A TOML document tree in which every key and value remembers where it was written.
///
/// This is the subset of TOML 1.0 that Ferry's configuration needs: comments, bare,
/// quoted and dotted keys, `[table]`, `[[array.of.tables]]`, basic and literal strings
/// (single- and multi-line, with escapes), integers (decimal with `_`, `0x`, `0o`, `0b`),
/// floats (including `inf` and `nan`), booleans, arrays and inline tables. Dates and
/// times are rejected with a clear message: no configuration key takes one.

/// A 1-based line and column (columns count Unicode scalars).
public struct TOMLPosition: Hashable, Sendable, CustomStringConvertible {
    public var line: Int
    public var column: Int
    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }
    public var description: String { "\(line):\(column)" }
}

/// A syntax or structure error, with the position of the offending text.
public struct TOMLError: Error, Equatable, Sendable, CustomStringConvertible {
    public var position: TOMLPosition
    public var message: String
    public init(_ message: String, at position: TOMLPosition) {
        self.message = message
        self.position = position
    }
    public var description: String { "\(position): \(message)" }
}

// The @unchecked Sendable of TOMLItem, TOMLValue, TOMLEntry and TOMLTable: a table is a
// class the parser keeps adding to while it reads a document, and nothing changes it once
// `TOML.parse` has returned; only then is a document shared (read by the loader and the
// backends' readers).

/// A value and where it starts.
public struct TOMLItem: @unchecked Sendable {
    public var value: TOMLValue
    public var position: TOMLPosition
}

public enum TOMLValue: @unchecked Sendable {
    case string(String)
    case integer(Int64)
    case float(Double)
    case boolean(Bool)
    case array([TOMLItem])
    case table(TOMLTable)
    /// `[[name]]` blocks, in order.
    case tableArray([TOMLTable])

    /// How a message names this kind of value: "a string", "an integer"...
    public var kindDescription: String {
        switch self {
        case .string: return "a string"
        case .integer: return "an integer"
        case .float: return "a float"
        case .boolean: return "a boolean"
        case .array: return "an array"
        case .table(let t): return t.origin == .inline ? "an inline table" : "a table"
        case .tableArray: return "an array of tables"
        }
    }
}

/// One `key = value` (or sub-table) of a table.
public struct TOMLEntry: @unchecked Sendable {
    public var key: String
    public var keyPosition: TOMLPosition
    public var item: TOMLItem
}

/// A table. Reference semantics: the parser keeps adding to tables it has already made.
public final class TOMLTable: @unchecked Sendable {
    public enum Origin: Sendable {
        /// The document itself.
        case root
        /// `[a.b]` or one `[[a.b]]` block.
        case header
        /// Made on the way to a header (`a` in `[a.b]`), not yet defined itself.
        case implicit
        /// Made by a dotted key (`a` in `a.b = 1`).
        case dotted
        /// `{ ... }`: complete as written.
        case inline
    }

    public internal(set) var origin: Origin
    /// The header's `[`, the inline table's `{`, the first dotted key, or 1:1 for the root.
    public internal(set) var position: TOMLPosition
    public private(set) var keys: [String] = []
    private var storage: [String: TOMLEntry] = [:]

    init(origin: Origin, position: TOMLPosition) {
        self.origin = origin
        self.position = position
    }

    public subscript(key: String) -> TOMLEntry? { storage[key] }

    /// The entries in the order they were written.
    public var entries: [TOMLEntry] { keys.map { storage[$0]! } }

    func set(_ entry: TOMLEntry) {
        if storage[entry.key] == nil { keys.append(entry.key) }
        storage[entry.key] = entry
    }
}

public enum TOML {
    /// Parses a whole document.
    public static func parse(_ text: String) throws(TOMLError) -> TOMLTable {
        var parser = TOMLParser(text)
        return try parser.parseDocument()
    }
}
