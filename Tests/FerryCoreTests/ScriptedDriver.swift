import FerryCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A driver for core tests that need what the real backends cannot be made to do on
/// demand: it counts RELEASE and RELEASEDIR (the core's duty to pay back every open),
/// lists whatever names a test gives it, even ones no file system would hold, and
/// migrates, optionally failing to find open directories again at the destination.
final class ScriptedDriver: FileSystemDriver, Sendable {
    final class Node: Sendable {
        let number: UInt64
        let mode: UInt32
        init(number: UInt64, mode: UInt32) { self.number = number; self.mode = mode }
    }
    final class Handle: Sendable { let node: Node; init(_ node: Node) { self.node = node } }

    typealias Inode = Node
    typealias InodeKey = UInt64
    typealias File = Handle
    typealias Directory = Handle

    private struct State {
        var next: UInt64 = 2
        var children: [String: Node] = [:]
        var opened = 0, released = 0, openedDirectories = 0, releasedDirectories = 0
    }
    private let state = Mutex(State())
    private let rootNode = Node(number: 1, mode: UInt32(S_IFDIR) | 0o755)
    /// The names READDIR reports, in order, each as raw bytes (no NUL: one is added).
    let listing: [[UInt8]]
    /// At a migration's destination: open directories cannot be found again.
    let losesDirectories: Bool

    init(listing: [[UInt8]] = [], losesDirectories: Bool = false) {
        self.listing = listing
        self.losesDirectories = losesDirectories
    }

    /// Files opened (OPEN, CREATE) and not yet released.
    var openFiles: Int { state.withLock { $0.opened - $0.released } }
    /// Directories opened and not yet released.
    var openDirectories: Int { state.withLock { $0.openedDirectories - $0.releasedDirectories } }

    private func entry(_ n: Node) -> Entry {
        Entry(key: n.number, inode: n, attributes: Attributes(inode: n.number, mode: n.mode, linkCount: 1))
    }

    func root() throws(Errno) -> Entry { entry(rootNode) }

    func lookup(_ parent: Node, _ name: FileName, _ caller: Credentials) throws(Errno) -> Entry {
        if let child = state.withLock({ $0.children[name.string] }) { return entry(child) }
        // A listed name (READDIRPLUS looks each one up) is a regular file.
        guard let index = listing.firstIndex(of: Array(name.bytes)) else { throw .noEntry }
        return entry(Node(number: UInt64(100 + index), mode: UInt32(S_IFREG) | 0o644))
    }

    func getattr(_ inode: Node, _ file: Handle?, _ caller: Credentials) throws(Errno) -> Attributes {
        entry(inode).attributes
    }

    func create(_ parent: Node, _ name: FileName, mode: UInt32, flags: Int32, _ caller: Credentials) throws(Errno) -> (Entry, OpenedFile<Handle>) {
        let node: Node = state.withLock { s in
            if let existing = s.children[name.string] { s.opened += 1; return existing }
            let node = Node(number: s.next, mode: mode)
            s.next += 1
            s.children[name.string] = node
            s.opened += 1
            return node
        }
        return (entry(node), OpenedFile(file: Handle(node)))
    }

    func open(_ inode: Node, flags: Int32, killSuidGid: Bool, _ caller: Credentials) throws(Errno) -> OpenedFile<Handle> {
        state.withLock { $0.opened += 1 }
        return OpenedFile(file: Handle(inode))
    }

    func release(_ file: Handle, flags: Int32, _ caller: Credentials) {
        state.withLock { $0.released += 1 }
    }

    func opendir(_ inode: Node, flags: Int32, _ caller: Credentials) throws(Errno) -> Handle {
        state.withLock { $0.openedDirectories += 1 }
        return Handle(inode)
    }

    func releasedir(_ directory: Handle) {
        state.withLock { $0.releasedDirectories += 1 }
    }

    func readdir(_ directory: Handle, at offset: UInt64, _ caller: Credentials, _ emit: (DirectoryEntry) -> Bool) throws(Errno) {
        var index = Int(min(offset, UInt64(listing.count)))
        while index < listing.count {
            var bytes = listing[index] + [0]
            let more = bytes.withUnsafeMutableBytes { raw in
                emit(DirectoryEntry(name: UnsafeRawBufferPointer(rebasing: raw[0..<(raw.count - 1)]),
                                    inode: UInt64(100 + index), type: 8, nextOffset: UInt64(index + 1)))
            }
            if !more { return }
            index += 1
        }
    }

    func fsyncdir(_ directory: Handle, dataOnly: Bool, _ caller: Credentials) throws(Errno) {}

    // Passthrough: each file's "descriptor" is 1000 plus its node number, for the fake device.
    var supportsPassthrough: Bool { true }
    func withBackingDescriptor<R>(of file: Handle, _ register: (Int32) throws(Errno) -> R) throws(Errno) -> R? {
        try register(Int32(1000 + file.node.number))
    }

    // Migration: nodes by number; the root only, which is all these tests open.
    var supportsMigration: Bool { true }
    func migrationIdentity(ofNode inode: Node, _ options: MigrationOptions) throws(Errno) -> [UInt8] { [UInt8(truncatingIfNeeded: inode.number)] }
    func migratedNode(_ identity: [UInt8], _ options: MigrationOptions) throws(Errno) -> Entry {
        guard identity == [1] else { throw .noEntry }
        return entry(rootNode)
    }
    func migrationIdentity(ofDirectory directory: Handle, _ options: MigrationOptions) throws(Errno) -> [UInt8] {
        [UInt8(truncatingIfNeeded: directory.node.number)]
    }
    func migratedDirectory(_ identity: [UInt8], _ options: MigrationOptions) throws(Errno) -> Handle {
        if losesDirectories { throw .noEntry }
        return Handle(rootNode)
    }
}
