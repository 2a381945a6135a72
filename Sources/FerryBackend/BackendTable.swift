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
