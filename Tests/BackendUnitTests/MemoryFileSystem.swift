import FerryCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A file system kept in memory: directories and regular files, enough for a guest to
/// make a directory, write a file, read it back, list, rename and remove. It exists to show
/// that a backend defined outside Ferry's sources is one unit (`MemoryBackend`).
final class MemoryFileSystem: FileSystemDriver {
    typealias Inode = Node
    typealias InodeKey = UInt64
    typealias File = Node
    typealias Directory = Listing

    /// A node the kernel knows: its number in `state.nodes`.
    final class Node: Sendable {
        let id: UInt64
        init(_ id: UInt64) { self.id = id }
    }

    /// An open directory: its entries when it was opened (`.` and `..` first).
    final class Listing: Sendable {
        let entries: [(name: String, id: UInt64, type: UInt32)]
        init(_ entries: [(name: String, id: UInt64, type: UInt32)]) { self.entries = entries }
    }

    private struct Contents {
        var attributes: Attributes
        var data: [UInt8] = []
        /// A directory's entries by name.
        var children: [String: UInt64] = [:]
        var parent: UInt64
    }

    private struct State {
        var nodes: [UInt64: Contents] = [:]
        var nextID: UInt64 = 2
    }

    private let state: Mutex<State>
    static let rootID: UInt64 = 1

    init() {
        let now = MemoryFileSystem.now()
        let root = Attributes(inode: Self.rootID, accessTime: now, modificationTime: now, changeTime: now,
                              mode: UInt32(S_IFDIR) | 0o777, linkCount: 2)
        state = Mutex(State(nodes: [Self.rootID: Contents(attributes: root, parent: Self.rootID)]))
    }

    private static func now() -> Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Timestamp(seconds: Int64(ts.tv_sec), nanoseconds: UInt32(ts.tv_nsec))
    }

    private func entry(_ id: UInt64, _ s: State) -> Entry {
        Entry(key: id, inode: Node(id), attributes: s.nodes[id]!.attributes)
    }

    private static func isDirectory(_ c: Contents) -> Bool { c.attributes.isDirectory }

    func root() throws(Errno) -> Entry { state.withLock { entry(Self.rootID, $0) } }

    func lookup(_ parent: Node, _ name: FileName, _ caller: Credentials) throws(Errno) -> Entry {
        try state.withLock { s throws(Errno) in
            guard let dir = s.nodes[parent.id] else { throw .stale }
            guard Self.isDirectory(dir) else { throw .notDirectory }
            guard let id = dir.children[name.string] else { throw .noEntry }
            return entry(id, s)
        }
    }

    func getattr(_ inode: Node, _ file: Node?, _ caller: Credentials) throws(Errno) -> Attributes {
        try state.withLock { s throws(Errno) in
            guard let c = s.nodes[inode.id] else { throw .stale }
            return c.attributes
        }
    }

    func setattr(_ inode: Node, _ file: Node?, _ changes: AttributeChanges, _ caller: Credentials) throws(Errno) -> Attributes {
        try state.withLock { s throws(Errno) in
            guard var c = s.nodes[inode.id] else { throw .stale }
            let now = Self.now()
            if let mode = changes.mode { c.attributes.mode = c.attributes.fileType | (mode & 0o7777) }
            if let uid = changes.uid { c.attributes.uid = uid }
            if let gid = changes.gid { c.attributes.gid = gid }
            if let size = changes.size {
                guard !Self.isDirectory(c) else { throw .isDirectory }
                guard size <= 1 << 30 else { throw .fileTooBig }
                c.data = Array(c.data.prefix(Int(size))) + [UInt8](repeating: 0, count: max(0, Int(size) - c.data.count))
                c.attributes.size = size
                c.attributes.modificationTime = now
            }
            func time(_ change: AttributeChanges.TimeChange?) -> Timestamp? {
                switch change {
                case .now?: return now
                case .set(let t)?: return t
                case nil: return nil
                }
            }
            if let t = time(changes.accessTime) { c.attributes.accessTime = t }
            if let t = time(changes.modificationTime) { c.attributes.modificationTime = t }
            c.attributes.changeTime = now
            s.nodes[inode.id] = c
            return c.attributes
        }
    }

    /// A new node named `name` in `parent`, owned by the caller.
    private func make(_ parent: UInt64, _ name: FileName, type: mode_t, mode: UInt32, _ caller: Credentials) throws(Errno) -> Entry {
        try state.withLock { s throws(Errno) in
            guard var dir = s.nodes[parent] else { throw .stale }
            guard Self.isDirectory(dir) else { throw .notDirectory }
            guard dir.children[name.string] == nil else { throw .exists }
            let id = s.nextID
            s.nextID += 1
            let now = Self.now()
            let directory = type == S_IFDIR
            let attributes = Attributes(inode: id, accessTime: now, modificationTime: now, changeTime: now,
                                        mode: UInt32(type) | (mode & 0o7777), linkCount: directory ? 2 : 1,
                                        uid: caller.uid, gid: caller.gid)
            s.nodes[id] = Contents(attributes: attributes, parent: parent)
            dir.children[name.string] = id
            if directory { dir.attributes.linkCount += 1 }
            dir.attributes.modificationTime = now
            dir.attributes.changeTime = now
            s.nodes[parent] = dir
            return entry(id, s)
        }
    }

    func mkdir(_ parent: Node, _ name: FileName, mode: UInt32, _ caller: Credentials) throws(Errno) -> Entry {
        try make(parent.id, name, type: S_IFDIR, mode: mode, caller)
    }

    func create(_ parent: Node, _ name: FileName, mode: UInt32, flags: Int32, _ caller: Credentials) throws(Errno) -> (Entry, OpenedFile<Node>) {
        let made = try make(parent.id, name, type: S_IFREG, mode: mode, caller)
        return (made, OpenedFile(file: made.inode))
    }

    /// Takes `name` out of `parent`; `directory`: RMDIR (only an empty directory), else UNLINK.
    private func remove(_ parent: UInt64, _ name: String, directory: Bool) throws(Errno) {
        try state.withLock { s throws(Errno) in
            guard var dir = s.nodes[parent] else { throw .stale }
            guard let id = dir.children[name], var c = s.nodes[id] else { throw .noEntry }
            if directory {
                guard Self.isDirectory(c) else { throw .notDirectory }
                guard c.children.isEmpty else { throw .notEmpty }
                dir.attributes.linkCount -= 1
            } else {
                guard !Self.isDirectory(c) else { throw .isDirectory }
            }
            dir.children[name] = nil
            dir.attributes.modificationTime = Self.now()
            s.nodes[parent] = dir
            // An open file stays readable through its handle: the node stays, with no links.
            c.attributes.linkCount = 0
            s.nodes[id] = c
        }
    }

    func unlink(_ parent: Node, _ name: FileName, _ caller: Credentials) throws(Errno) {
        try remove(parent.id, name.string, directory: false)
    }

    func rmdir(_ parent: Node, _ name: FileName, _ caller: Credentials) throws(Errno) {
        try remove(parent.id, name.string, directory: true)
    }

    func rename(_ parent: Node, _ name: FileName, to newParent: Node, _ newName: FileName, flags: UInt32, _ caller: Credentials) throws(Errno) {
        guard flags == 0 else { throw .invalid }
        let (from, to) = (name.string, newName.string)
        let replaced: (id: UInt64, directory: Bool)? = try state.withLock { s throws(Errno) in
            guard let source = s.nodes[parent.id], let id = source.children[from] else { throw .noEntry }
            guard let target = s.nodes[newParent.id], Self.isDirectory(target) else { throw .notDirectory }
            guard let existing = target.children[to], existing != id else { return nil }
            return (existing, Self.isDirectory(s.nodes[existing]!))
        }
        if let replaced { try remove(newParent.id, to, directory: replaced.directory) }
        try state.withLock { s throws(Errno) in
            guard let id = s.nodes[parent.id]?.children[from] else { throw .noEntry }
            let isDirectory = Self.isDirectory(s.nodes[id]!)
            s.nodes[parent.id]!.children[from] = nil
            s.nodes[newParent.id]!.children[to] = id
            s.nodes[id]!.parent = newParent.id
            if isDirectory && parent.id != newParent.id {
                s.nodes[parent.id]!.attributes.linkCount -= 1
                s.nodes[newParent.id]!.attributes.linkCount += 1
            }
        }
    }

    func open(_ inode: Node, flags: Int32, killSuidGid: Bool, _ caller: Credentials) throws(Errno) -> OpenedFile<Node> {
        if flags & O_TRUNC != 0 { _ = try setattr(inode, nil, AttributeChanges(size: 0), caller) }
        return OpenedFile(file: inode)
    }

    func read(_ file: Node, offset: UInt64, into buffers: IOVectors, _ caller: Credentials) throws(Errno) -> Int {
        try state.withLock { s throws(Errno) in
            guard let c = s.nodes[file.id] else { throw .stale }
            guard offset < UInt64(c.data.count) else { return 0 }
            return c.data[Int(offset)...].withUnsafeBytes { buffers.copyIn($0) }
        }
    }

    func write(_ file: Node, offset: UInt64, from buffers: IOVectors, killSuidGid: Bool, _ caller: Credentials) throws(Errno) -> Int {
        let count = buffers.totalLength
        guard offset + UInt64(count) <= 1 << 30 else { throw .fileTooBig }
        var bytes = [UInt8](repeating: 0, count: count)
        let copied = bytes.withUnsafeMutableBytes { buffers.copyOut(into: $0) }
        return try state.withLock { s throws(Errno) in
            guard var c = s.nodes[file.id] else { throw .stale }
            let end = Int(offset) + copied
            if c.data.count < end { c.data += [UInt8](repeating: 0, count: end - c.data.count) }
            c.data.replaceSubrange(Int(offset)..<end, with: bytes[..<copied])
            c.attributes.size = UInt64(c.data.count)
            c.attributes.blocks = (c.attributes.size + 511) / 512
            c.attributes.modificationTime = Self.now()
            s.nodes[file.id] = c
            return copied
        }
    }

    func flush(_ file: Node, lockOwner: UInt64, _ caller: Credentials) throws(Errno) {}
    func release(_ file: Node, flags: Int32, _ caller: Credentials) {}
    func fsync(_ file: Node, dataOnly: Bool, _ caller: Credentials) throws(Errno) {}

    func opendir(_ inode: Node, flags: Int32, _ caller: Credentials) throws(Errno) -> Listing {
        try state.withLock { s throws(Errno) in
            guard let dir = s.nodes[inode.id] else { throw .stale }
            guard Self.isDirectory(dir) else { throw .notDirectory }
            let nodes = s.nodes
            let children = dir.children.sorted { $0.key < $1.key }.map { child in
                (name: child.key, id: child.value, type: Self.isDirectory(nodes[child.value]!) ? UInt32(DT_DIR) : UInt32(DT_REG))
            }
            return Listing([(".", inode.id, UInt32(DT_DIR)), ("..", dir.parent, UInt32(DT_DIR))] + children)
        }
    }

    func readdir(_ directory: Listing, at offset: UInt64, _ caller: Credentials, _ emit: (DirectoryEntry) -> Bool) throws(Errno) {
        guard offset < UInt64(directory.entries.count) else { return }
        for index in Int(offset)..<directory.entries.count {
            let e = directory.entries[index]
            var name = Array(e.name.utf8)
            let more = name.withUnsafeMutableBytes { raw in
                emit(DirectoryEntry(name: UnsafeRawBufferPointer(raw), inode: e.id, type: e.type, nextOffset: UInt64(index + 1)))
            }
            if !more { return }
        }
    }

    func releasedir(_ directory: Listing) {}

    func statfs(_ inode: Node, _ caller: Credentials) throws(Errno) -> FileSystemStatistics {
        let files = state.withLock { UInt64($0.nodes.count) }
        return FileSystemStatistics(blocks: 1 << 18, freeBlocks: 1 << 17, availableBlocks: 1 << 17, files: files + 1 << 16,
                                    freeFiles: 1 << 16, blockSize: 4096, fragmentSize: 4096, maximumNameLength: 255)
    }
}
