/// How an export's state moves to another daemon in a live migration, as virtiofsd's
/// options say it (docs/migration.md).
public struct MigrationOptions: Sendable, Equatable {
    /// How a local directory's nodes are identified in the state: by their path under the
    /// export root, found again by the destination (works across file systems with the
    /// same contents), or by kernel file handle (same file system only; the destination
    /// needs CAP_DAC_READ_SEARCH). Backends whose identities do not depend on the host (NFS
    /// file handles, RADOS inode numbers) ignore it.
    public enum Mode: String, Sendable, CaseIterable { case findPaths = "find-paths", fileHandles = "file-handles" }
    /// What the destination does with a node or open file it cannot find: fail the
    /// migration (the guest runs on at the source), or take the rest and answer EIO for
    /// that node.
    public enum OnError: String, Sendable, CaseIterable { case abort, guestError = "guest-error" }

    public var mode: Mode
    public var onError: OnError
    /// find-paths: the source sends each node's file handle too, and the destination
    /// refuses a path that leads to another file (same file system only).
    public var verifyHandles: Bool
    /// find-paths: the source checks, at switch-over, that each path it found still leads
    /// to its node, and sends none for one that does not.
    public var confirmPaths: Bool

    public init(mode: Mode = .findPaths, onError: OnError = .abort, verifyHandles: Bool = false, confirmPaths: Bool = false) {
        self.mode = mode; self.onError = onError; self.verifyHandles = verifyHandles; self.confirmPaths = confirmPaths
    }
}

/// Why a state could not be saved or loaded. The front-end's migration then fails and the
/// guest runs on where it was.
public struct MigrationError: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// What a load restored, for the log.
public struct MigrationLoadReport: Sendable, Equatable {
    public var nodes = 0
    public var files = 0
    public var directories = 0
    /// Nodes, files and directories that could not be found (`OnError.guestError`): EIO.
    public var failed = 0
    public init() {}
}

/// A server the transport can ask for its state (source) or give one to (destination),
/// with every queue stopped.
public protocol MigratableHandler: AnyObject, Sendable {
    /// Whether this export can migrate at all (its backend identifies nodes for another daemon).
    var canMigrate: Bool { get }
    func saveMigrationState(_ options: MigrationOptions) throws(MigrationError) -> [UInt8]
    func loadMigrationState(_ state: [UInt8], _ options: MigrationOptions) throws(MigrationError) -> MigrationLoadReport
    /// The rings start again after a save, without a load: the migration failed and the
    /// guest resumes on this (source) daemon.
    func migrationResumedAtSource()
}

/// The state's byte layout, little-endian throughout. docs/migration.md is its
/// specification; change it only with a new `version`.
enum MigrationFormat {
    static let magic: [UInt8] = Array("FERRYMIG".utf8)
    static let version: UInt32 = 1
    /// Largest identity a driver may write for one node or handle.
    static let maximumIdentity = 64 * 1024

    enum SlotKind: UInt8 { case empty = 0, present = 1, failed = 2 }
}

/// Appends little-endian fields (the state, and the identities drivers put in it).
public struct MigrationWriter {
    public private(set) var bytes: [UInt8] = []
    public init() {}
    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func blob(_ b: [UInt8]) { u32(UInt32(b.count)); bytes.append(contentsOf: b) }
    public mutating func raw(_ b: [UInt8]) { bytes.append(contentsOf: b) }
}

/// Reads what `MigrationWriter` wrote; every read is bounds-checked (the state comes
/// through the front-end, from another host).
public struct MigrationReader {
    public let bytes: [UInt8]
    public private(set) var offset = 0
    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var atEnd: Bool { offset == bytes.count }

    public mutating func take(_ n: Int) throws(MigrationError) -> ArraySlice<UInt8> {
        guard n >= 0, n <= bytes.count - offset else { throw MigrationError("state truncated at byte \(offset)") }
        defer { offset += n }
        return bytes[offset..<(offset + n)]
    }
    public mutating func u8() throws(MigrationError) -> UInt8 { try take(1).first! }
    public mutating func u32() throws(MigrationError) -> UInt32 {
        try take(4).reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    }
    public mutating func u64() throws(MigrationError) -> UInt64 {
        try take(8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }
    public mutating func blob() throws(MigrationError) -> [UInt8] {
        let n = Int(try u32())
        guard n <= MigrationFormat.maximumIdentity else { throw MigrationError("identity of \(n) bytes") }
        return Array(try take(n))
    }
    public mutating func count(limit: Int, _ what: String) throws(MigrationError) -> Int {
        let n = Int(try u32())
        guard n <= limit else { throw MigrationError("\(n) \(what) (this export allows \(limit))") }
        return n
    }
}
