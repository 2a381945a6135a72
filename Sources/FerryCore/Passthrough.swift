import Synchronization

/// What a transport that can hand the kernel backing files offers the server core (FUSE
/// passthrough: `ferry mount` on a kernel with FUSE_PASSTHROUGH). The `/dev/fuse` layer
/// implements it with FUSE_DEV_IOC_BACKING_OPEN and _CLOSE; the core never sees the device.
public protocol FUSEBackingFiles: AnyObject, Sendable {
    /// Registers the open regular file `descriptor` as a backing file and answers its id
    /// for an OPEN or CREATE reply. The kernel keeps its own reference to the file and the
    /// calling thread's credentials, with which it later opens the file for each client open.
    func open(descriptor: Int32) throws(Errno) -> Int32
    /// Drops a backing id `open` gave (files the kernel opened with it stay open).
    func close(backingID: Int32)
}

/// Whether an export's open files can be served by the kernel from their backing files,
/// and if not, why (for the operator: `ferry mount --passthrough on` refuses with it).
public enum PassthroughSupport: Sendable, Equatable {
    case available
    case unavailable(reason: String)
}

/// The backing files of one session's passthrough opens, one per node.
///
/// The kernel ties a node's backing file to its inode for as long as any file of that inode
/// is open through it, refuses (EIO to the opener) a second, different backing id meanwhile,
/// and refuses an open without passthrough of an inode open with it. So every open of a node
/// shares one backing id, counted here and closed at the last RELEASE; and once the kernel
/// refused a backing file (a stacked file system, a missing privilege) no new node gets one
/// for the rest of the session, while nodes that already have one keep using it.
final class PassthroughFiles: Sendable {
    private struct Backing {
        var id: Int32
        var opens: Int
    }
    private struct State {
        var byNode: [UInt64: Backing] = [:]
        /// The node of each passthrough open, for its RELEASE.
        var nodeOfHandle: [UInt64: UInt64] = [:]
        /// Set when the kernel refused a backing file: the error it gave.
        var refused: Errno?
    }

    let device: any FUSEBackingFiles
    private let state = Mutex(State())

    init(device: any FUSEBackingFiles) { self.device = device }

    /// What happened to one open.
    enum Outcome {
        /// Reply with FOPEN_PASSTHROUGH and this backing id.
        case passthrough(Int32)
        /// Served by the daemon; `refused` is the kernel's error when this open was the one
        /// that found passthrough impossible (to be logged once).
        case fallback(refused: Errno?)
    }

    /// Gives the open `handle` of `node` the node's backing id, registering one through
    /// `register` (the driver's descriptor, passed to `device.open`) when it has none.
    /// `register` answers nil when the driver has no descriptor for this file. Runs under
    /// the lock, so two first opens of a node cannot register two backing files.
    func attach(node: UInt64, handle: UInt64, register: () throws(Errno) -> Int32?) -> Outcome {
        state.withLock { s -> Outcome in
            if var backing = s.byNode[node] {
                backing.opens += 1
                s.byNode[node] = backing
                s.nodeOfHandle[handle] = node
                return .passthrough(backing.id)
            }
            if s.refused != nil { return .fallback(refused: nil) }
            let id: Int32?
            do throws(Errno) {
                id = try register()
            } catch {
                s.refused = error
                return .fallback(refused: error)
            }
            guard let id else { return .fallback(refused: nil) }
            s.byNode[node] = Backing(id: id, opens: 1)
            s.nodeOfHandle[handle] = node
            return .passthrough(id)
        }
    }

    /// RELEASE of `handle`: the node's last passthrough open gives its backing id back.
    func detach(handle: UInt64) {
        state.withLock { s in
            guard let node = s.nodeOfHandle.removeValue(forKey: handle), var backing = s.byNode[node] else { return }
            backing.opens -= 1
            if backing.opens > 0 {
                s.byNode[node] = backing
            } else {
                s.byNode[node] = nil
                device.close(backingID: backing.id)
            }
        }
    }

    /// The session ended: every backing id goes back (the kernel drops them anyway when the
    /// connection ends; a new session on the same connection starts clean).
    func reset() {
        state.withLock { s in
            for backing in s.byNode.values { device.close(backingID: backing.id) }
            s = State()
        }
    }

    /// Nodes with a backing file now, for tests.
    var backedNodes: Int { state.withLock { $0.byNode.count } }
}
