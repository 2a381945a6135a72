import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif

/// Where an export's files come from, as given on the command line.
enum Source: CustomStringConvertible {
    case directory(String)

    init(parsing text: String) throws {
        if text.hasPrefix("nfs://") {
            throw ValidationError("\(text): NFS sources are not supported by this build yet")
        }
        if text.hasPrefix("rados://") {
            throw ValidationError("\(text): RADOS sources are not supported by this build yet")
        }
        if let scheme = text.firstRange(of: "://") {
            throw ValidationError("\(text): unknown source kind '\(text[..<scheme.lowerBound])' (expected a directory)")
        }
        var st = stat()
        guard stat(text, &st) == 0 else {
            throw ValidationError("source \(text): \(String(cString: strerror(errno)))")
        }
        guard st.st_mode & S_IFMT == S_IFDIR else { throw ValidationError("source \(text) is not a directory") }
        self = .directory(text)
    }

    var description: String {
        switch self {
        case .directory(let path): return path
        }
    }
}
