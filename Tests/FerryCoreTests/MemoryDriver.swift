import FerryCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A tiny in-memory driver for unit tests of the server core: directories and empty
/// files only. It records what reached it, so tests can show what the core refused
/// before any driver saw it. The real backends are tested against real file systems.
/// @unchecked Sendable: its vars (and every node's children) are touched only with `lock` held;
/// `beforeLookup` is set by a test before any request runs.
final class MemoryDriver: FileSystemDriver, @unchecked Sendable {
    /// @unchecked Sendable: `children` is touched only with the driver's `lock` held.
    final class Node: @unchecked Sendable {
        let number: UInt64
        let mode: UInt32
        var children: [String: Node] = [:]
        let released: ReleaseCounter
        init(number: UInt64, mode: UInt32, released: ReleaseCounter) { self.number = number; self.mode = mode; self.released = released }
        deinit { released.count.add(1, ordering: .relaxed) }
    }
    final class Handle: Sendable { let node: Node; init(_ node: Node) { self.node = node } }

    typealias Inode = Node
    typealias InodeKey = UInt64
    typealias File = Handle
    typealias Directory = Handle

    final class ReleaseCounter: Sendable { let count = Atomic<Int>(0) }
    /// Counts inodes whose last reference went away.
    let released = ReleaseCounter()
    var releasedInodes: Int { released.count.load(ordering: .relaxed) }
    private let lock = Mutex(())
    private var nextNumber: UInt64 = 2
    private(set) var rootNode: Node!
    /// Every (operation, uid, gid, pid) the driver saw.
    private(set) var calls: [(String, UInt32, UInt32, UInt32)] = []
    /// Called with the name at the start of every LOOKUP, on the request's thread: a test
    /// can hold a request inside the driver while others run.
    var beforeLookup: (@Sendable (String) -> Void)?

    init() { rootNode = Node(number: 1, mode: UInt32(S_IFDIR) | 0o755, released: released) }

    private func record(_ op: String, _ c: Credentials) { lock.withLock { _ in calls.append((op, c.uid, c.gid, c.pid)) } }
    func attributes(_ n: Node) -> Attributes { Attributes(inode: n.number, mode: n.mode, linkCount: 1) }
    func entry(_ n: Node) -> Entry { Entry(key: n.number, inode: n, attributes: attributes(n)) }

    func root() throws(Errno) -> Entry { entry(rootNode) }

    func lookup(_ parent: Node, _ name: FileName, _ caller: Credentials) throws(Errno) -> Entry {
        record("lookup", caller)
        beforeLookup?(name.string)
        guard let child = lock.withLock({ _ in parent.children[name.string] }) else { throw .noEntry }
        return entry(child)
    }

    func getattr(_ inode: Node, _ file: Handle?, _ caller: Credentials) throws(Errno) -> Attributes {
        attributes(inode)
    }

    private func make(_ parent: Node, _ name: FileName, mode: UInt32) throws(Errno) -> Node {
        let result: Result<Node, Errno> = lock.withLock { _ in
            if parent.children[name.string] != nil { return .failure(.exists) }
            let node = Node(number: nextNumber, mode: mode, released: released)
            nextNumber += 1
            parent.children[name.string] = node
            return .success(node)
        }
        return try result.get()
    }

    func mkdir(_ parent: Node, _ name: FileName, mode: UInt32, _ caller: Credentials) throws(Errno) -> Entry {
        record("mkdir", caller)
        return entry(try make(parent, name, mode: mode))
    }

    func mknod(_ parent: Node, _ name: FileName, mode: UInt32, rdev: UInt32, _ caller: Credentials) throws(Errno) -> Entry {
        record("mknod", caller)
        return entry(try make(parent, name, mode: mode))
    }

    func unlink(_ parent: Node, _ name: FileName, _ caller: Credentials) throws(Errno) {
        record("unlink", caller)
        let removed: Node? = lock.withLock { _ in parent.children.removeValue(forKey: name.string) }
        if removed == nil { throw .noEntry }
    }

    func create(_ parent: Node, _ name: FileName, mode: UInt32, flags: Int32, _ caller: Credentials) throws(Errno) -> (Entry, OpenedFile<Handle>) {
        record("create", caller)
        let node = try make(parent, name, mode: mode)
        return (entry(node), OpenedFile(file: Handle(node)))
    }

    func open(_ inode: Node, flags: Int32, killSuidGid: Bool, _ caller: Credentials) throws(Errno) -> OpenedFile<Handle> {
        record("open", caller)
        return OpenedFile(file: Handle(inode))
    }

    func read(_ file: Handle, offset: UInt64, into buffers: IOVectors, _ caller: Credentials) throws(Errno) -> Int { 0 }

    func opendir(_ inode: Node, flags: Int32, _ caller: Credentials) throws(Errno) -> Handle { Handle(inode) }

    func readdir(_ directory: Handle, at offset: UInt64, _ caller: Credentials, _ emit: (DirectoryEntry) -> Bool) throws(Errno) {
        let names = lock.withLock { _ in directory.node.children.sorted { $0.key < $1.key } }
        var index = Int(offset)
        while index < names.count {
            let (name, node) = names[index]
            var bytes = Array(name.utf8) + [0]
            let keepGoing = bytes.withUnsafeMutableBytes { raw in
                emit(DirectoryEntry(name: UnsafeRawBufferPointer(rebasing: raw[0..<(raw.count - 1)]),
                                    inode: node.number, type: node.mode >> 12, nextOffset: UInt64(index + 1)))
            }
            if !keepGoing { return }
            index += 1
        }
    }
}
