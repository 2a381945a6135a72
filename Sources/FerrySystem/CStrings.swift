#if canImport(Glibc)
import Glibc
#endif

extension String {
    /// The text of a C character buffer filled by a call (gethostname, mkdtemp, librados):
    /// up to its first NUL, or all of it; invalid UTF-8 is repaired as `String(cString:)` does.
    public init(nulTerminated chars: [CChar]) {
        let end = chars.firstIndex(of: 0) ?? chars.count
        self = String(decoding: chars[..<end].lazy.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// This machine's host name, or "" if gethostname fails.
public func hostName() -> String {
    var host = [CChar](repeating: 0, count: 256)
    gethostname(&host, host.count - 1)
    return String(nulTerminated: host)
}
