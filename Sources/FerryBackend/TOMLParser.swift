/// A recursive-descent TOML parser over Unicode scalars, tracking line and column.
package struct TOMLParser {
    private let s: [Unicode.Scalar]
    private var i = 0
    private var line = 1
    private var lineStart = 0

    package init(_ text: String) {
        s = Array(text.unicodeScalars)
    }

    // MARK: - Cursor

    private var position: TOMLPosition { TOMLPosition(line: line, column: i - lineStart + 1) }
    private var atEnd: Bool { i >= s.count }
    private var peek: Unicode.Scalar? { i < s.count ? s[i] : nil }
    private func peek(_ offset: Int) -> Unicode.Scalar? { i + offset < s.count ? s[i + offset] : nil }

    private mutating func advance() {
        if s[i] == "\n" {
            line += 1
            lineStart = i + 1
        }
        i += 1
    }

    private func error(_ message: String) -> TOMLError { TOMLError(message, at: position) }

    /// How a message names the scalar under the cursor.
    private var found: String {
        guard let c = peek else { return "end of file" }
        switch c {
        case "\n": return "end of line"
        case "\r": return "carriage return"
        case "\t": return "tab"
        default:
            if c.value < 0x20 || c.value == 0x7F { return "control character U+\(hex(c.value))" }
            return "'\(c)'"
        }
    }

    private func hex(_ v: UInt32) -> String {
        let h = String(v, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - h.count)) + h
    }

    private mutating func skipSpaces() {
        while let c = peek, c == " " || c == "\t" { advance() }
    }

    /// Skips spaces and a comment, leaving the cursor on the newline (or the end).
    private mutating func skipSpacesAndComment() throws(TOMLError) {
        skipSpaces()
        if peek == "#" {
            while let c = peek, c != "\n" {
                if c == "\r", peek(1) == "\n" { break }
                if (c.value < 0x20 && c != "\t") || c.value == 0x7F {
                    throw error("control character U+\(hex(c.value)) in a comment")
                }
                advance()
            }
        }
    }

    /// Consumes a newline (LF or CRLF); false when there is none.
    private mutating func newline() -> Bool {
        if peek == "\n" { advance(); return true }
        if peek == "\r", peek(1) == "\n" { advance(); advance(); return true }
        return false
    }

    /// Skips blank lines, comments and whitespace (inside arrays).
    private mutating func skipBlank() throws(TOMLError) {
        while true {
            try skipSpacesAndComment()
            if !newline() { return }
        }
    }

    /// After a key/value pair or a header: only a comment may follow on the line.
    private mutating func endOfLine(after what: String) throws(TOMLError) {
        try skipSpacesAndComment()
        if atEnd || newline() { return }
        throw error("expected end of line after \(what), found \(found)")
    }

    // MARK: - Document

    private var root = TOMLTable(origin: .root, position: TOMLPosition(line: 1, column: 1))

    package mutating func parseDocument() throws(TOMLError) -> TOMLTable {
        if peek == "\u{FEFF}" { i += 1; lineStart = 1 }
        var current = root
        while true {
            try skipSpacesAndComment()
            if atEnd { break }
            if newline() { continue }
            if peek == "[" {
                let start = position
                advance()
                if peek == "[" {
                    advance()
                    skipSpaces()
                    let key = try parseKey()
                    skipSpaces()
                    guard peek == "]", peek(1) == "]" else {
                        if peek == "]" { advance() }
                        throw error("expected ']]' to close the array-of-tables header, found \(found)")
                    }
                    advance(); advance()
                    try endOfLine(after: "the header")
                    current = try appendTableArray(key, at: start)
                } else {
                    skipSpaces()
                    let key = try parseKey()
                    skipSpaces()
                    guard peek == "]" else { throw error("expected ']' to close the table header, found \(found)") }
                    advance()
                    try endOfLine(after: "the header")
                    current = try defineTable(key, at: start)
                }
            } else {
                try parseKeyValue(into: current)
                try endOfLine(after: "a value")
            }
        }
        return root
    }

    // MARK: - Keys

    package typealias Key = [(name: String, position: TOMLPosition)]

    private static func isBare(_ c: Unicode.Scalar) -> Bool {
        switch c {
        case "A"..."Z", "a"..."z", "0"..."9", "_", "-": return true
        default: return false
        }
    }

    private mutating func parseKey() throws(TOMLError) -> Key {
        var parts: Key = []
        while true {
            let start = position
            let name: String
            if peek == "\"" {
                guard case .string(let v) = try parseBasicString().value else { fatalError() }
                name = v
            } else if peek == "'" {
                guard case .string(let v) = try parseLiteralString().value else { fatalError() }
                name = v
            } else {
                var v = ""
                while let c = peek, Self.isBare(c) { v.unicodeScalars.append(c); advance() }
                if v.isEmpty { throw error("expected a key, found \(found)") }
                name = v
            }
            parts.append((name, start))
            skipSpaces()
            guard peek == "." else { return parts }
            advance()
            skipSpaces()
        }
    }

    private func dotted(_ key: Key, upTo n: Int? = nil) -> String {
        key.prefix(n ?? key.count).map { part in
            part.name.unicodeScalars.allSatisfy(Self.isBare) && !part.name.isEmpty ? part.name : "\"\(part.name)\""
        }.joined(separator: ".")
    }

    // MARK: - Tables

    /// Walks (making implicit tables) to the table that will hold the key's last part.
    private func descend(_ key: Key, from start: TOMLTable, forHeader: Bool) throws(TOMLError) -> TOMLTable {
        var table = start
        for (n, part) in key.dropLast().enumerated() {
            if let entry = table[part.name] {
                switch entry.item.value {
                case .table(let sub):
                    if sub.origin == .inline {
                        throw TOMLError("cannot extend \(dotted(key, upTo: n + 1)): an inline table is complete as written (line \(entry.keyPosition.line))", at: part.position)
                    }
                    if !forHeader, sub.origin == .header || sub.origin == .implicit {
                        throw TOMLError("cannot add to table \(dotted(key, upTo: n + 1)) with a dotted key: it is defined by a header (line \(sub.position.line))", at: part.position)
                    }
                    table = sub
                case .tableArray(let tables) where forHeader:
                    table = tables.last!
                default:
                    throw TOMLError("\(dotted(key, upTo: n + 1)) is already defined as \(entry.item.value.kindDescription) on line \(entry.keyPosition.line)", at: part.position)
                }
            } else {
                let sub = TOMLTable(origin: forHeader ? .implicit : .dotted, position: part.position)
                table.set(TOMLEntry(key: part.name, keyPosition: part.position, item: TOMLItem(value: .table(sub), position: part.position)))
                table = sub
            }
        }
        return table
    }

    private mutating func defineTable(_ key: Key, at start: TOMLPosition) throws(TOMLError) -> TOMLTable {
        let parent = try descend(key, from: root, forHeader: true)
        let last = key.last!
        if let entry = parent[last.name] {
            if case .table(let existing) = entry.item.value, existing.origin == .implicit {
                existing.origin = .header
                existing.position = start
                return existing
            }
            if case .table(let existing) = entry.item.value, existing.origin == .header {
                throw TOMLError("table [\(dotted(key))] is defined twice (first on line \(existing.position.line))", at: last.position)
            }
            throw TOMLError("\(dotted(key)) is already defined as \(entry.item.value.kindDescription) on line \(entry.keyPosition.line)", at: last.position)
        }
        let table = TOMLTable(origin: .header, position: start)
        parent.set(TOMLEntry(key: last.name, keyPosition: last.position, item: TOMLItem(value: .table(table), position: start)))
        return table
    }

    private mutating func appendTableArray(_ key: Key, at start: TOMLPosition) throws(TOMLError) -> TOMLTable {
        let parent = try descend(key, from: root, forHeader: true)
        let last = key.last!
        let table = TOMLTable(origin: .header, position: start)
        if let entry = parent[last.name] {
            guard case .tableArray(let tables) = entry.item.value else {
                throw TOMLError("\(dotted(key)) is already defined as \(entry.item.value.kindDescription) on line \(entry.keyPosition.line)", at: last.position)
            }
            var updated = entry
            updated.item.value = .tableArray(tables + [table])
            parent.set(updated)
        } else {
            parent.set(TOMLEntry(key: last.name, keyPosition: last.position, item: TOMLItem(value: .tableArray([table]), position: start)))
        }
        return table
    }

    private mutating func parseKeyValue(into table: TOMLTable) throws(TOMLError) {
        let key = try parseKey()
        guard peek == "=" else { throw error("expected '=' after the key \(dotted(key)), found \(found)") }
        advance()
        skipSpaces()
        let item = try parseValue()
        let parent = try descend(key, from: table, forHeader: false)
        let last = key.last!
        if let existing = parent[last.name] {
            throw TOMLError("duplicate key \(dotted(key)) (first defined on line \(existing.keyPosition.line))", at: last.position)
        }
        parent.set(TOMLEntry(key: last.name, keyPosition: last.position, item: item))
    }

    // MARK: - Values

    private mutating func parseValue() throws(TOMLError) -> TOMLItem {
        guard let c = peek else { throw error("expected a value, found end of file") }
        switch c {
        case "\"": return try parseBasicString()
        case "'": return try parseLiteralString()
        case "[": return try parseArray()
        case "{": return try parseInlineTable()
        case "t", "f":
            let start = position
            for (word, value) in [("true", true), ("false", false)] where matches(word) {
                for _ in word.unicodeScalars { advance() }
                if let next = peek, Self.isBare(next) { break }
                return TOMLItem(value: .boolean(value), position: start)
            }
            throw TOMLError("expected a value (strings are quoted), found \(found)", at: start)
        case "0"..."9", "+", "-", "i", "n":
            return try parseNumber()
        default:
            throw error("expected a value, found \(found)")
        }
    }

    private func matches(_ word: String) -> Bool {
        for (n, c) in word.unicodeScalars.enumerated() where peek(n) != c { return false }
        return true
    }

    private mutating func parseNumber() throws(TOMLError) -> TOMLItem {
        let start = position
        var text = ""
        while let c = peek, Self.isBare(c) || c == "+" || c == "." || c == ":" {
            text.unicodeScalars.append(c)
            advance()
        }
        // Exponent signs: "1e-5" stops nowhere above since '-' is bare; '+' is taken too.
        func bad(_ why: String) -> TOMLError { TOMLError("malformed number: \(why)", at: start) }
        var body = Substring(text)
        var sign = ""
        if body.first == "+" || body.first == "-" { sign = String(body.removeFirst()) }
        if body == "inf" { return TOMLItem(value: .float(sign == "-" ? -.infinity : .infinity), position: start) }
        if body == "nan" { return TOMLItem(value: .float(.nan), position: start) }
        if body.isEmpty || !body.first!.isNumber {
            throw TOMLError("expected a value (strings are quoted), found '\(text.prefix(1))'", at: start)
        }
        if text.contains(":") || (body.count >= 10 && body.dropFirst(4).first == "-" && body.prefix(4).allSatisfy(\.isNumber)) {
            throw TOMLError("dates and times are not supported here", at: start)
        }
        for prefix in [("0x", 16), ("0o", 8), ("0b", 2)] where body.hasPrefix(prefix.0) {
            guard sign.isEmpty else { throw bad("a sign is not allowed with \(prefix.0)") }
            let digits = try underscores(body.dropFirst(2), start)
            guard let v = Int64(digits, radix: prefix.1) else { throw bad("invalid digits for base \(prefix.1)") }
            return TOMLItem(value: .integer(v), position: start)
        }
        let digits = try underscores(body, start)
        if digits.allSatisfy(\.isNumber) {
            if digits.count > 1, digits.first == "0" { throw bad("leading zeros are not allowed") }
            guard let v = Int64(sign + digits) else { throw bad("out of the 64-bit integer range") }
            return TOMLItem(value: .integer(v), position: start)
        }
        // A float: int [. digits] [e [sign] digits]
        let parts = digits.split(separator: "e", maxSplits: 1, omittingEmptySubsequences: false)
            .flatMap { $0.split(separator: "E", maxSplits: 1, omittingEmptySubsequences: false) }
        let mantissa = parts[0]
        let mantissaParts = mantissa.split(separator: ".", omittingEmptySubsequences: false)
        guard mantissaParts.count <= 2, mantissaParts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isNumber) }) else {
            throw bad(mantissa.contains(".") ? "expected digits on both sides of '.'" : "not a valid number")
        }
        if mantissaParts[0].count > 1, mantissaParts[0].first == "0" { throw bad("leading zeros are not allowed") }
        if parts.count == 2 {
            var exp = parts[1]
            if exp.first == "+" || exp.first == "-" { exp = exp.dropFirst() }
            guard !exp.isEmpty, exp.allSatisfy(\.isNumber) else { throw bad("expected digits in the exponent") }
        } else if parts.count > 2 || mantissaParts.count == 1 {
            throw bad("unexpected characters")
        }
        guard let v = Double(sign + digits) else { throw bad("not a valid float") }
        return TOMLItem(value: .float(v), position: start)
    }

    /// Removes `_` separators, which must each sit between two digits.
    private func underscores(_ text: Substring, _ start: TOMLPosition) throws(TOMLError) -> String {
        let chars = Array(text)
        var out = ""
        for (n, c) in chars.enumerated() {
            if c == "_" {
                guard n > 0, n + 1 < chars.count, chars[n - 1].isHexDigit, chars[n + 1].isHexDigit else {
                    throw TOMLError("malformed number: '_' must sit between two digits", at: start)
                }
            } else {
                out.append(c)
            }
        }
        return out
    }

    /// Consumes a string's opening quote, or three; true for a multi-line string. A newline
    /// right after three opening quotes is not part of the string.
    private mutating func openString(_ quote: Unicode.Scalar) -> Bool {
        guard matches(String(repeating: String(quote), count: 3)) else {
            advance()
            return false
        }
        advance(); advance(); advance()
        _ = newline()
        return true
    }

    /// At the current character: when the string ends here, consumes its closing quote(s)
    /// and returns true. Up to two quotes may sit just before a multi-line string's closing three.
    private mutating func closeString(_ quote: Unicode.Scalar, multiline: Bool, into out: inout String.UnicodeScalarView) -> Bool {
        guard multiline else {
            guard peek == quote else { return false }
            advance()
            return true
        }
        guard matches(String(repeating: String(quote), count: 3)) else { return false }
        var extra = 0
        while peek(3 + extra) == quote, extra < 2 { extra += 1 }
        for _ in 0..<extra { out.append(quote); advance() }
        advance(); advance(); advance()
        return true
    }

    private mutating func parseBasicString() throws(TOMLError) -> TOMLItem {
        let start = position
        let multiline = openString("\"")
        var out = String.UnicodeScalarView()
        while true {
            guard let c = peek else { throw TOMLError("unterminated string (opened here)", at: start) }
            if closeString("\"", multiline: multiline, into: &out) {
                return TOMLItem(value: .string(String(out)), position: start)
            }
            if c == "\\" {
                let escapeStart = position
                advance()
                guard let e = peek else { throw TOMLError("unterminated string (opened here)", at: start) }
                switch e {
                case "b": out.append("\u{08}"); advance()
                case "t": out.append("\t"); advance()
                case "n": out.append("\n"); advance()
                case "f": out.append("\u{0C}"); advance()
                case "r": out.append("\r"); advance()
                case "e": out.append("\u{1B}"); advance()
                case "\"": out.append("\""); advance()
                case "\\": out.append("\\"); advance()
                case "u", "U":
                    let n = e == "u" ? 4 : 8
                    advance()
                    var digits = ""
                    for _ in 0..<n {
                        guard let d = peek, d.properties.isASCIIHexDigit else {
                            throw TOMLError("expected \(n) hexadecimal digits after \\\(e)", at: escapeStart)
                        }
                        digits.unicodeScalars.append(d)
                        advance()
                    }
                    guard let v = UInt32(digits, radix: 16), let scalar = Unicode.Scalar(v) else {
                        throw TOMLError("\\\(e)\(digits) is not a Unicode scalar value", at: escapeStart)
                    }
                    out.append(scalar)
                case " ", "\t", "\n", "\r":
                    // Line-ending backslash: trim the newline and the whitespace after it.
                    guard multiline else { throw TOMLError("invalid escape sequence: '\\' followed by whitespace", at: escapeStart) }
                    var sawNewline = false
                    while let w = peek, w == " " || w == "\t" || w == "\n" || w == "\r" {
                        if w == "\n" { sawNewline = true }
                        advance()
                    }
                    if !sawNewline { throw TOMLError("invalid escape: '\\' followed by whitespace must end the line", at: escapeStart) }
                default:
                    throw TOMLError("invalid escape sequence '\\\(e)'", at: escapeStart)
                }
                continue
            }
            if c == "\n" || (c == "\r" && peek(1) == "\n") {
                if !multiline { throw TOMLError("unterminated string (opened here): a basic string ends on its line", at: start) }
                if c == "\r" { advance() }
                out.append("\n")
                advance()
                continue
            }
            if (c.value < 0x20 && c != "\t") || c.value == 0x7F {
                throw error("control character U+\(hex(c.value)) in a string (use an escape)")
            }
            out.append(c)
            advance()
        }
    }

    private mutating func parseLiteralString() throws(TOMLError) -> TOMLItem {
        let start = position
        let multiline = openString("'")
        var out = String.UnicodeScalarView()
        while true {
            guard let c = peek else { throw TOMLError("unterminated string (opened here)", at: start) }
            if closeString("'", multiline: multiline, into: &out) {
                return TOMLItem(value: .string(String(out)), position: start)
            }
            if c == "\n" || (c == "\r" && peek(1) == "\n") {
                if !multiline { throw TOMLError("unterminated string (opened here): a literal string ends on its line", at: start) }
                if c == "\r" { advance() }
                out.append("\n")
                advance()
                continue
            }
            if (c.value < 0x20 && c != "\t") || c.value == 0x7F {
                throw error("control character U+\(hex(c.value)) in a string")
            }
            out.append(c)
            advance()
        }
    }

    private mutating func parseArray() throws(TOMLError) -> TOMLItem {
        let start = position
        advance()
        var items: [TOMLItem] = []
        while true {
            try skipBlank()
            if peek == "]" { advance(); break }
            if atEnd { throw TOMLError("unterminated array (opened here): expected ']'", at: start) }
            items.append(try parseValue())
            try skipBlank()
            if peek == "," { advance(); continue }
            if peek == "]" { advance(); break }
            if atEnd { throw TOMLError("unterminated array (opened here): expected ']'", at: start) }
            throw error("expected ',' or ']' in the array, found \(found)")
        }
        return TOMLItem(value: .array(items), position: start)
    }

    private mutating func parseInlineTable() throws(TOMLError) -> TOMLItem {
        let start = position
        advance()
        let table = TOMLTable(origin: .dotted, position: start)
        skipSpaces()
        if peek == "}" {
            advance()
        } else {
            while true {
                skipSpaces()
                if peek == "\n" || peek == "\r" { throw error("an inline table must be on one line: expected a key") }
                try parseKeyValue(into: table)
                skipSpaces()
                if peek == "," {
                    let comma = position
                    advance()
                    skipSpaces()
                    if peek == "}" { throw TOMLError("trailing comma in an inline table (not allowed in TOML)", at: comma) }
                    continue
                }
                if peek == "}" { advance(); break }
                throw error("expected ',' or '}' in the inline table, found \(found)")
            }
        }
        freeze(table)
        return TOMLItem(value: .table(table), position: start)
    }

    /// Marks an inline table and the tables its dotted keys made as complete.
    private func freeze(_ table: TOMLTable) {
        table.origin = .inline
        for entry in table.entries {
            if case .table(let sub) = entry.item.value, sub.origin == .dotted { freeze(sub) }
        }
    }
}
