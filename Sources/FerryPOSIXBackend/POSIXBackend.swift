import FerryBackend
import FerryCore
import FerryPOSIX
import FerrySandbox

/// A local directory, served by `POSIXDriver`.
public enum POSIXBackend: BackendModule {
    public struct Options: Equatable, Sendable {
        public var path: String
        /// The driver's tuning when the command line sets it (`ferry virtiofsd`, `ferry
        /// mount`); nil: from the export (read-only, whose permissions to trust). Not part
        /// of what the configuration says, so not compared.
        public var driver: POSIXOptions?

        public init(path: String, driver: POSIXOptions? = nil) {
            self.path = path
            self.driver = driver
        }

        public static func == (a: Options, b: Options) -> Bool { a.path == b.path }
    }

    public static let kind = "posix"
    public static let tableKeys = ["path"]

    /// The file system calls of every FUSE operation, done as the caller (per-thread fsuid,
    /// fsgid and groups) on descriptors and file handles; and the capabilities to act as
    /// its callers: change owners, override permissions the guest kernel has checked, open
    /// by file handle, take on each caller's ids (virtiofsd's default set, plus
    /// DAC_READ_SEARCH for file handles).
    public static let sandbox = BackendSandboxNeeds(
        syscalls: [
            "openat2", "open_by_handle_at", "name_to_handle_at", "mknodat", "symlinkat", "linkat",
            "renameat", "renameat2", "fchmodat", "fchown", "fchownat", "utimensat", "fsync", "fdatasync",
            "syncfs", "fallocate", "ftruncate", "fsetxattr", "fgetxattr", "flistxattr", "fremovexattr",
            "faccessat2", "copy_file_range", "setfsuid", "setfsgid", "setgroups", "setresuid", "setresgid",
            "capget", "capset", "umask", "flock", "fchdir",
        ],
        capabilities: [.chown, .dacOverride, .dacReadSearch, .fowner, .fsetid, .setgid, .setuid, .mknod, .setfcap])

    public static func options(from table: BackendTable) -> Options? {
        let r = table.reader
        defer { r.finish(known: ["kind", "path"]) }
        guard let (path, at) = r.string("path", required: true) else { return nil }
        guard !path.isEmpty else { r.problem("path must not be empty", at: at); return nil }
        return table.existingDirectory(path, at: at, named: "export directory", "export path").map { Options(path: $0) }
    }

    /// A bare path on the command line is a directory to serve: read as a table whose
    /// `path` it is, so it gets the table's checks and messages (at column 1 of the path);
    /// relative to the working directory, as a table's is to the configuration directory.
    public static func options(fromSource text: String, settings: SourceSettings) throws(BackendError) -> Options {
        // The path is the whole source: a problem names it ("source PATH: ..."), without a column.
        try BackendTable.readingSource("source " + text, fields: [], settings: ["path": text]) { options(from: $0) }
    }

    public static func summary(_ options: Options) -> String { options.path }

    public static func listing(_ options: Options) -> BackendListing {
        BackendListing(kind: kind, location: options.path, path: options.path)
    }

    /// A local directory answers in microseconds: served on the queue's own thread, as
    /// virtiofsd does.
    public static func defaultRequestThreads(_ options: Options) -> Int { 0 }

    /// The directory itself (read-only for a read-only export); a process serving only it
    /// can make it its root.
    public static func rootNeeds(_ options: Options, readOnly: Bool) -> BackendRootNeeds {
        BackendRootNeeds(paths: [(options.path, !readOnly)], ownRoot: options.path)
    }

    public static func open(_ options: Options, _ context: BackendOpenContext) throws(BackendError) -> any ServedExport {
        let driverOptions = options.driver
            ?? POSIXOptions(readOnly: context.policy.readOnly, trustClientPermissions: context.trustClientPermissions)
        do {
            let driver = try POSIXDriver(root: options.path, options: driverOptions)
            return POSIXExportHandler(try FUSEServer(driver: driver, policy: context.policy, logger: context.logger))
        } catch {
            throw BackendError("cannot serve \(options.path): \(error)")
        }
    }
}

extension ConfiguredBackend {
    /// This backend with the POSIX driver's command-line tuning, if it is a directory.
    public func tuned(_ driver: POSIXOptions) -> ConfiguredBackend {
        guard var options = options(of: POSIXBackend.self) else { return self }
        options.driver = driver
        return ConfiguredBackend(POSIXBackend.self, options)
    }
}
