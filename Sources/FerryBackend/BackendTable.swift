#if canImport(Glibc)
import Glibc
#endif

/// An `[export.backend]` table as a backend unit reads it: typed values with where they were
/// written, problems reported there, and the checks of paths the configuration names.
public struct BackendTable {
    package let reader: TableReader
    /// A path from the configuration: relative ones are taken from the configuration directory.
    package let resolve: (String) -> String
    /// Paths not to check (outside the root of a sandboxed daemon that is reloading).
    package let unverifiable: (String) -> Bool

    package init(reader: TableReader, resolve: @escaping (String) -> String, unverifiable: @escaping (String) -> Bool) {
        self.reader = reader
        self.resolve = resolve
        self.unverifiable = unverifiable
    }

    /// `path` resolved, if it names a directory; otherwise a problem that calls it `missing`
    /// (not there or unreachable) or `notDirectory`.
    package func existingDirectory(_ path: String, at: TOMLPosition, named missing: String, _ notDirectory: String) -> String? {
        let resolved = resolve(path)
        if unverifiable(resolved) { return resolved }
        switch fileKind(resolved) {
        case (.directory, _): return resolved
        case (.missing, let e): reader.problem("\(missing) \(path) \(e == ENOENT ? "does not exist" : "cannot be reached: \(errnoText(e))")", at: at)
        default: reader.problem("\(notDirectory) \(path) is not a directory", at: at)
        }
        return nil
    }

    /// A readable regular file (a ceph.conf), resolved; otherwise a problem naming it `what`.
    package func readableFile(_ path: String, at: TOMLPosition, named what: String) -> String? {
        let resolved = resolve(path)
        switch fileKind(resolved) {
        case _ where unverifiable(resolved): return resolved
        case (.regular, _):
            if access(resolved, R_OK) == 0 { return resolved }
            reader.problem("\(what) \(path) is not readable: \(errnoText(errno))", at: at)
        case (.missing, _): reader.problem("\(what) \(path) does not exist", at: at)
        default: reader.problem("\(what) \(path) is not a regular file", at: at)
        }
        return nil
    }
}

extension BackendTable {
    /// Reads a source URL with a unit's own table reader, so a URL and an `[export.backend]`
    /// table get the same defaults and the same checks, and a URL's problems name where in
    /// it they are (`URL:1:COLUMN: message`). `fields`: what the unit makes of the URL's
    /// parts (NFS: `server`, `path`), with the 0-based offset each starts at; then the query
    /// (`key=value&...`, starting at `queryOffset`), each value an integer, a number, a
    /// boolean (`true`, `false`, or a bare `key` for true) or else a string. `settings`: keys
    /// of the table the command line gives beside the URL (`--ceph-conf`...), read as strings;
    /// their problems name the source without a position, the URL not being where they were
    /// written.
    package static func readingSource<T>(_ url: String, fields: [(key: String, value: String, offset: Int)],
                                         query: Substring = "", queryOffset: Int = 0, settings: SourceSettings = [:],
                                         _ read: (BackendTable) -> T?) throws(BackendError) -> T {
        let table = TOMLTable(origin: .root, position: TOMLPosition(line: 1, column: 1))
        func position(_ offset: Int) -> TOMLPosition { TOMLPosition(line: 1, column: offset + 1) }
        for field in fields {
            table.set(TOMLEntry(key: field.key, keyPosition: position(field.offset),
                                item: TOMLItem(value: .string(field.value), position: position(field.offset))))
        }
        let unwritten = TOMLPosition(line: 0, column: 0)
        for (key, value) in settings.sorted(by: { $0.key < $1.key }) {
            table.set(TOMLEntry(key: key, keyPosition: unwritten, item: TOMLItem(value: .string(value), position: unwritten)))
        }
        var offset = queryOffset
        for item in query.split(separator: "&", omittingEmptySubsequences: false) {
            defer { offset += item.count + 1 }
            guard !item.isEmpty else { continue }
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(parts[0])
            let valueOffset = parts.count > 1 ? offset + key.count + 1 : offset
            table.set(TOMLEntry(key: key, keyPosition: position(offset),
                                item: TOMLItem(value: queryValue(parts.count > 1 ? String(parts[1]) : nil), position: position(valueOffset))))
        }
        let problems = ProblemList()
        let reader = TableReader(table: table, file: url, name: "the URL", problems: problems)
        let result = read(BackendTable(reader: reader, resolve: { $0 }, unverifiable: { _ in false }))
        if !problems.problems.isEmpty {
            let located = problems.problems.map { $0.line == 0 ? ConfigProblem(file: url, line: nil, message: $0.message) : $0 }
            throw BackendError(located.map(\.description).joined(separator: "\n"))
        }
        guard let result else { throw BackendError("\(url): not a source this backend can read") }
        return result
    }

    private static func queryValue(_ text: String?) -> TOMLValue {
        guard let text else { return .boolean(true) }
        if let v = Int64(text) { return .integer(v) }
        if let v = Double(text) { return .float(v) }
        if text == "true" || text == "false" { return .boolean(text == "true") }
        return .string(text)
    }
}
