/// Collects problems while a configuration is read.
package final class ProblemList {
    package var problems: [ConfigProblem] = []
    package init() {}
    package func add(_ message: String, at location: SourceLocation) {
        problems.append(ConfigProblem(message, at: location))
    }
}

/// Key names that would hold a secret: a configuration refers to secrets by path only.
package let secretKeyNames: Set<String> = ["key", "secret", "password", "passwd", "token", "keyring_data", "keydata"]

/// Reads typed values out of one TOML table, reporting wrong types, missing keys and
/// (in `finish`) unknown keys. Never puts a string value into a type or key message.
package struct TableReader {
    package let table: TOMLTable
    package let file: String
    /// How messages name the table: "[[export]]", "[export.backend]", "the tenant file".
    package let name: String
    package let problems: ProblemList

    package init(table: TOMLTable, file: String, name: String, problems: ProblemList) {
        self.table = table
        self.file = file
        self.name = name
        self.problems = problems
    }

    package func location(_ p: TOMLPosition) -> SourceLocation { SourceLocation(file: file, line: p.line, column: p.column) }

    /// Where a table starts: its header (or `{`); line 1 for a whole file.
    package var headerLocation: SourceLocation {
        table.origin == .root ? SourceLocation(file: file, line: 1) : location(table.position)
    }

    package func problem(_ message: String, at p: TOMLPosition) { problems.add(message, at: location(p)) }

    private func entry(_ key: String, required: Bool) -> TOMLEntry? {
        guard let e = table[key] else {
            if required { missing(key) }
            return nil
        }
        return e
    }

    /// Reports `key` missing, at the table's header; `why` follows the message when a rule
    /// beyond the reader's own requires it.
    package func missing(_ key: String, because why: String? = nil) {
        problems.add("missing required key \"\(key)\" in \(name)" + (why.map { "; \($0)" } ?? ""), at: headerLocation)
    }

    private func wrongType(_ key: String, _ expected: String, _ e: TOMLEntry) {
        problem("\(key) must be \(expected), found \(e.item.value.kindDescription)", at: e.item.position)
    }

    package func string(_ key: String, required: Bool = false) -> (value: String, at: TOMLPosition)? {
        guard let e = entry(key, required: required) else { return nil }
        guard case .string(let v) = e.item.value else { wrongType(key, "a string", e); return nil }
        return (v, e.item.position)
    }

    package func integer(_ key: String, required: Bool = false) -> (value: Int64, at: TOMLPosition)? {
        guard let e = entry(key, required: required) else { return nil }
        guard case .integer(let v) = e.item.value else { wrongType(key, "an integer", e); return nil }
        return (v, e.item.position)
    }

    /// A count that must not be negative.
    package func count(_ key: String) -> UInt64? {
        guard let (v, at) = integer(key) else { return nil }
        guard v >= 0 else { problem("\(key) must not be negative", at: at); return nil }
        return UInt64(v)
    }

    package func bool(_ key: String) -> Bool? {
        guard let e = entry(key, required: false) else { return nil }
        guard case .boolean(let v) = e.item.value else { wrongType(key, "a boolean (true or false)", e); return nil }
        return v
    }

    package func choice<E: RawRepresentable & CaseIterable>(_ key: String, _ type: E.Type) -> E? where E.RawValue == String {
        guard let (v, at) = string(key) else { return nil }
        if let e = E(rawValue: v) { return e }
        let allowed = E.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
        problem("\(key) must be one of \(allowed)" + didYouMean(v, E.allCases.map(\.rawValue)), at: at)
        return nil
    }

    /// A byte count: an integer, or a string with a unit ("64MiB", "10 GB"); `perSecond`
    /// also accepts a trailing "/s".
    package func size(_ key: String, perSecond: Bool = false) -> UInt64? {
        guard let e = entry(key, required: false) else { return nil }
        switch e.item.value {
        case .integer(let v):
            guard v >= 0 else { problem("\(key) must not be negative", at: e.item.position); return nil }
            return UInt64(v)
        case .string(let text):
            switch parseSize(text, perSecond: perSecond) {
            case .success(let v): return v
            case .failure(let why):
                problem("\(key): \(why.message)", at: e.item.position)
                return nil
            }
        default:
            wrongType(key, "a size (an integer number of bytes or a string such as \"64MiB\")", e)
            return nil
        }
    }

    package func table(_ key: String, required: Bool = false, name: String) -> TableReader? {
        guard let e = entry(key, required: required) else { return nil }
        guard case .table(let t) = e.item.value else { wrongType(key, "a table", e); return nil }
        return TableReader(table: t, file: file, name: name, problems: problems)
    }

    /// `[[key]]` blocks (an array of inline tables is accepted too).
    package func tables(_ key: String, name: String) -> [TableReader] {
        guard let e = entry(key, required: false) else { return [] }
        switch e.item.value {
        case .tableArray(let ts):
            return ts.map { TableReader(table: $0, file: file, name: name, problems: problems) }
        case .array(let items):
            var out: [TableReader] = []
            for item in items {
                guard case .table(let t) = item.value else {
                    problem("\(key) must hold tables, found \(item.value.kindDescription)", at: item.position)
                    continue
                }
                out.append(TableReader(table: t, file: file, name: name, problems: problems))
            }
            return out
        default:
            wrongType(key, "an array of tables ([[\(key)]] blocks)", e)
            return []
        }
    }

    /// Reports every key not in `known`: secrets with their own message, others with a
    /// "did you mean" when one known key is close.
    package func finish(known: [String], secretHint: String = "") {
        for e in table.entries where !known.contains(e.key) {
            if secretKeyNames.contains(e.key.lowercased()) {
                problem("\"\(e.key)\" is not allowed: secrets are referred to by path, never written inline\(secretHint)", at: e.keyPosition)
            } else {
                problem("unknown key \"\(e.key)\" in \(name)" + didYouMean(e.key, known), at: e.keyPosition)
            }
        }
    }
}

/// "; did you mean "x"?" when exactly one candidate is close, else "".
package func didYouMean(_ word: String, _ candidates: [String]) -> String {
    let lower = word.lowercased()
    let scored = candidates.map { ($0, editDistance(lower, $0.lowercased())) }
    guard let best = scored.min(by: { $0.1 < $1.1 }) else { return "" }
    let limit = best.0.count <= 3 ? 1 : 2
    return best.1 <= limit ? "; did you mean \"\(best.0)\"?" : ""
}

package func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var beforePrevious = Array(0...b.count)
    var previous = Array(0...b.count)
    var current = previous
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            // Swapping two neighbours counts as one edit.
            if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                current[j] = min(current[j], beforePrevious[j - 2] + 1)
            }
        }
        beforePrevious = previous
        previous = current
    }
    return previous[b.count]
}

package struct SizeError: Error {
    package let message: String
    package init(message: String) { self.message = message }
}

private let sizeUnits: [(String, UInt64)] = [
    ("B", 1),
    ("KB", 1000), ("MB", 1_000_000), ("GB", 1_000_000_000), ("TB", 1_000_000_000_000),
    ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40),
]

/// "100MiB" -> 104857600. Units: B, KB/MB/GB/TB (powers of 1000), KiB/MiB/GiB/TiB (of 1024).
package func parseSize(_ text: String, perSecond: Bool) -> Result<UInt64, SizeError> {
    var t = Substring(text)
    while t.first == " " { t.removeFirst() }
    while t.last == " " { t.removeLast() }
    if perSecond, t.hasSuffix("/s") { t = t.dropLast(2) }
    let digits = t.prefix(while: { $0.isASCII && ($0.isNumber || $0 == "_") })
    var unit = t.dropFirst(digits.count)
    while unit.first == " " { unit.removeFirst() }
    let accepted = "expected a number of bytes with an optional unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)\(perSecond ? " and \"/s\"" : ""), such as \"100MiB\""
    if t.hasPrefix("-") { return .failure(SizeError(message: "a size must not be negative")) }
    guard !digits.isEmpty, let n = UInt64(digits.filter { $0 != "_" }) else {
        return .failure(SizeError(message: accepted))
    }
    guard !unit.isEmpty else { return .success(n) }
    guard let (_, factor) = sizeUnits.first(where: { $0.0 == unit }) else {
        let hint = didYouMean(String(unit), sizeUnits.map(\.0))
        return .failure(SizeError(message: "unknown size unit \"\(unit)\"\(hint.isEmpty ? "" : hint); " + accepted))
    }
    let (v, overflow) = n.multipliedReportingOverflow(by: factor)
    guard !overflow, v <= UInt64(Int64.max) else { return .failure(SizeError(message: "size is too large")) }
    return .success(v)
}
