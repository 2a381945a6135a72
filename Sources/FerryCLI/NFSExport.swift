import FerryConfig
import FerryCore
import Logging

/// `nfs://SERVER/PATH[?version=3|4]`.
struct NFSSource: CustomStringConvertible {
    var server: String
    var path: String
    var version: NFSVersion

    init(server: String, path: String, version: NFSVersion) {
        self.server = server
        self.path = path
        self.version = version
    }

    init(parsing text: String) throws(CLIError) {
        throw CLIError("\(text): NFS sources are not supported by this build yet")
    }

    var description: String { "nfs://\(server)\(path)?version=\(version.rawValue)" }
}

func openNFSExport(_ source: NFSSource, policy: ExportPolicy, logger: Logger) throws(CLIError) -> any ServedExport {
    throw CLIError("\(source): NFS exports are not supported by this build yet")
}
