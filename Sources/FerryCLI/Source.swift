import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif

/// Where an export's files come from, as given on the command line.
enum Source: CustomStringConvertible {
    case directory(String)

    init(parsing text: String) throws {
        if text.hasPrefix("nfs://") {
            throw CLIError("\(text): NFS sources are not supported by this build yet")
        }
        if text.hasPrefix("rados://") {
            throw CLIError("\(text): RADOS sources are not supported by this build yet")
        }
        if let scheme = text.firstRange(of: "://") {
            throw CLIError("\(text): unknown source kind '\(text[..<scheme.lowerBound])' (expected a directory)")
        }
        var st = stat()
        guard stat(text, &st) == 0 else {
            throw CLIError("source \(text): \(String(cString: strerror(errno)))")
        }
        guard st.st_mode & S_IFMT == S_IFDIR else { throw CLIError("source \(text) is not a directory") }
        self = .directory(text)
    }

    var description: String {
        switch self {
        case .directory(let path): return path
        }
    }
}

/// A problem with what the operator asked for, reported as `Error: message` without a
/// usage dump (that is for malformed command lines).
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
