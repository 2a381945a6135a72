/// The defaults of the driver protocol's migration hooks: an export that cannot migrate
/// says so (`supportsMigration` false, so the transport does not offer DEVICE_STATE) and
/// any attempt fails loudly with ENOSYS.
extension FileSystemDriver {
    public var supportsMigration: Bool { false }
    public func migrationIdentity(ofNode inode: Inode, _ options: MigrationOptions) throws(Errno) -> [UInt8] { throw .notImplemented }
    public func migratedNode(_ identity: [UInt8], _ options: MigrationOptions) throws(Errno) -> Entry { throw .notImplemented }
    public func migrationIdentity(ofFile file: File, _ options: MigrationOptions) throws(Errno) -> [UInt8] { throw .notImplemented }
    public func migratedFile(_ identity: [UInt8], _ options: MigrationOptions) throws(Errno) -> File { throw .notImplemented }
    public func migrationIdentity(ofDirectory directory: Directory, _ options: MigrationOptions) throws(Errno) -> [UInt8] { throw .notImplemented }
    public func migratedDirectory(_ identity: [UInt8], _ options: MigrationOptions) throws(Errno) -> Directory { throw .notImplemented }
    public func migrationSaved() throws(Errno) {}
    public func migrationWillLoad() throws(Errno) {}
    public func migrationResumedAtSource() {}
}
