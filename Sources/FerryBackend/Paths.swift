import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Joins a directory and a name without doubling slashes.
package func joinPath(_ directory: String, _ name: String) -> String {
    if name.hasPrefix("/") { return name }
    if directory.isEmpty || directory == "." { return name }
    return directory.hasSuffix("/") ? directory + name : directory + "/" + name
}

/// Lexically removes ".", "..", and repeated slashes from a path.
package func normalizePath(_ path: String) -> String {
    let absolute = path.hasPrefix("/")
    var parts: [Substring] = []
    for part in path.split(separator: "/") {
        if part == "." { continue }
        if part == "..", let last = parts.last, last != ".." { parts.removeLast(); continue }
        if part == "..", absolute { continue }
        parts.append(part)
    }
    let joined = parts.joined(separator: "/")
    return absolute ? "/" + joined : (joined.isEmpty ? "." : joined)
}

package enum FileKind { case missing, directory, regular, other }

package func fileKind(_ path: String) -> (FileKind, Int32) {
    var st = stat()
    guard stat(path, &st) == 0 else { return (.missing, errno) }
    switch st.st_mode & S_IFMT {
    case S_IFDIR: return (.directory, 0)
    case S_IFREG: return (.regular, 0)
    default: return (.other, 0)
    }
}

package func errnoText(_ e: Int32) -> String { String(cString: strerror(e)).lowercased() }

/// A Ceph secret key is 40 base64 characters starting "AQ" (a version byte and type).
package func looksLikeCephKey(_ s: String) -> Bool {
    let t = s.trimmingCharacters(in: .whitespaces)
    guard t.count >= 28, !t.contains("/") || t.hasPrefix("AQ") else { return false }
    let base64 = t.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "+" || $0 == "/" || $0 == "=") }
    return base64 && t.hasPrefix("AQ") && t.hasSuffix("=")
}

/// nil when `host` is a valid host name, IPv4 literal, or IPv6 literal (bare or in
/// brackets); otherwise why not.
package func checkHost(_ host: String) -> String? {
    if host.isEmpty { return "must not be empty" }
    if host.hasPrefix("[") || host.contains(":") {
        var h = host
        if h.hasPrefix("[") {
            guard h.hasSuffix("]") else { return "malformed IPv6 literal (no closing ']')" }
            h = String(h.dropFirst().dropLast())
        }
        var addr = in6_addr()
        return inet_pton(AF_INET6, h, &addr) == 1 ? nil : "malformed IPv6 address"
    }
    let labels = host.split(separator: ".", omittingEmptySubsequences: false)
    // All-numeric last label: it must be an IPv4 literal (RFC 1123 rules out numeric TLDs).
    if let last = labels.last, !last.isEmpty, last.allSatisfy({ $0.isASCII && $0.isNumber }) {
        var addr = in_addr()
        return inet_pton(AF_INET, host, &addr) == 1 ? nil : "malformed IPv4 address"
    }
    let name = host.hasSuffix(".") ? String(host.dropLast()) : host
    guard name.utf8.count <= 253 else { return "host name longer than 253 bytes" }
    for label in name.split(separator: ".", omittingEmptySubsequences: false) {
        if label.isEmpty { return "malformed host name (empty label)" }
        if label.utf8.count > 63 { return "malformed host name (a label is longer than 63 bytes)" }
        if !label.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }) {
            return "malformed host name (letters, digits and '-' only)"
        }
        if label.hasPrefix("-") || label.hasSuffix("-") { return "malformed host name (a label starts or ends with '-')" }
    }
    return nil
}
