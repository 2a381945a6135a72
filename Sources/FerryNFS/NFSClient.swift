#if canImport(Glibc)
import Glibc
#endif
import CNFS
import FerryCore
import Logging
import Synchronization

/// The NFS protocol version an export speaks: v3 through libnfs, v4.x through Ferry's own
/// client (NFS4Wire.swift, NFS4Session.swift, RPCSocket.swift).
public enum NFSProtocolVersion: Hashable, Sendable, CustomStringConvertible {
    case v3
    case nfs4(NFS4Minor)

    /// `v4` alone is v4.0, as mount.nfs's `vers=4` once meant.
    public static let v4 = NFSProtocolVersion.nfs4(.v0)
    public static let v4_1 = NFSProtocolVersion.nfs4(.v1)
    public static let v4_2 = NFSProtocolVersion.nfs4(.v2)

    /// "3", "4", "4.0", "4.1", "4.2".
    public init?(_ text: String) {
        switch text {
        case "3": self = .v3
        case "4", "4.0": self = .nfs4(.v0)
        case "4.1": self = .nfs4(.v1)
        case "4.2": self = .nfs4(.v2)
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .v3: return "3"
        case .nfs4(let minor): return "4.\(minor.rawValue)"
        }
    }

    public var major: Int { self == .v3 ? 3 : 4 }
    var minor: NFS4Minor? { if case .nfs4(let m) = self { return m } else { return nil } }
}

/// How an NFS export is reached and how patient Ferry is with it.
public struct NFSOptions: Sendable {
    /// Host name or address of the server.
    public var server: String
    /// The export's path on the server (the MOUNT path).
    public var path: String
    public var version: NFSProtocolVersion
    /// Seconds a request may wait for the server (connecting included) before it fails
    /// with EIO; nil waits for ever (a "hard" mount).
    public var timeout: Double?
    /// libnfs contexts (TCP connections) per export: how many requests reach the server at once.
    public var connections: Int
    /// Whether a group the kernel must have found the caller in (a directory's or file's
    /// group, when the server refuses a request the kernel allowed) may be added to the
    /// caller's AUTH_SYS groups (NFSDriver+Ownership.swift). Only when the guest's ids are
    /// the server's (no id mapping or squash): a mapped guest could not name such a group.
    public var trustClientGroups: Bool

    public init(server: String, path: String, version: NFSProtocolVersion = .v3, timeout: Double? = 30, connections: Int = 4,
                trustClientGroups: Bool = true) {
        self.server = server; self.path = path; self.version = version; self.timeout = timeout
        self.connections = max(1, connections)
        self.trustClientGroups = trustClientGroups
    }
}

/// The connections of one export. Each request takes a free connection (or waits for one),
/// sends its calls, and services that connection until they are answered; a broken
/// connection is made again on next use, so the export comes back by itself when the
/// server does. Exports never share connections, so one server's outage stalls only
/// the exports on it.
final class NFSClient: Sendable {
    /// Clients made in this process, so each has its own NFSv4 client owner.
    static let instances = Atomic<UInt64>(0)
    let options: NFSOptions
    let logger: Logger
    let connections: [NFSConnection]
    /// NFSv4 client state; nil for an NFSv3 export.
    let v4: NFS4Session?
    private let leaseKeeper = Mutex<pthread_t?>(nil)
    private let next = Atomic<UInt>(0)
    /// Connections made to the server's NFS program (the first ones, then every reconnect).
    let connectsMade = Atomic<UInt64>(0)
    /// Calls sent again after their connection broke.
    let callsRetried = Atomic<UInt64>(0)
    /// Requests that gave up with EIO: no answer, or no connection, within the timeout.
    let timeouts = Atomic<UInt64>(0)

    init(options: NFSOptions, logger: Logger) {
        self.options = options
        self.logger = logger
        connections = (0..<options.connections).map { _ in NFSConnection(server: options.server) }
        for connection in connections {
            connection.deniedLog = { [logger, server = options.server] replies in
                for words in replies {
                    logger.warning("NFS server \(server) did not accept a call (reply words after the xid: \(words)): reported as EIO")
                }
            }
        }
        // One client owner per instance: two exports (or two opens of one export) are two
        // clients to the server, whose locks conflict as any two clients' do. A shared owner
        // makes the server take the second for the first one rebooted and drop the first's
        // state, back and forth. The pid alone does not tell daemons apart: a sandboxed
        // daemon serves from a PID namespace of its own, where every daemon has the same
        // pid; hence a random part. (A daemon that crashed leaves its locks to the lease.)
        let instance = NFSClient.instances.wrappingAdd(1, ordering: .relaxed).oldValue
        let nonce = String(UInt64.random(in: 0...UInt64.max), radix: 16)
        v4 = options.version.minor.map { minor in
            NFS4Session(minor: minor, ownerID: Array("ferry-\(hostName())-\(getpid())-\(instance)-\(nonce)-\(options.server):\(options.path)".utf8))
        }
    }

    /// Starts the thread that keeps the NFSv4 lease (`keepLease`).
    func startLeaseKeeper() {
        guard v4 != nil else { return }
        // Weakly: an export dropped without `shutdown` ends the thread too.
        final class Box { weak var client: NFSClient?; init(_ c: NFSClient) { client = c } }
        let box = Unmanaged.passRetained(Box(self)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            // Sound: `box` is the +1 reference passed just above, released once here.
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            while true {
                usleep(250_000)
                guard let client = box.client, client.renewLeaseIfDue() else { return nil }
            }
        }, box)
        if rc != 0 {
            Unmanaged<Box>.fromOpaque(box).release()
            logger.warning("NFSv4: no thread to renew the lease (\(rc)): an idle export may lose its client id")
            return
        }
        leaseKeeper.withLock { $0 = thread }
    }

    var newDeadline: Deadline { options.timeout.map { .after(seconds: $0) } ?? .never }

    /// The root file handle from the server's MOUNT service.
    func mountRoot() throws(Errno) -> FileHandle {
        let connection = NFSConnection(server: options.server)
        let deadline = newDeadline
        var result: Result<FileHandle, Errno> = .failure(.io)
        while true {
            do {
                try connection.connect(program: ferry_nfs_mount_program, version: ferry_nfs_mount_v3, deadline: deadline)
                let path = options.path
                let call = try connection.send({ rpc, cb, data in
                    path.withCString { rpc_mount3_mnt_async(rpc, cb, UnsafeMutablePointer(mutating: $0), data) }
                }, onSuccess: { reply in
                    let res = reply.assumingMemoryBound(to: mountres3.self)
                    if res.pointee.fhs_status != MNT3_OK {
                        result = .failure(Errno(Int32(res.pointee.fhs_status.rawValue)))
                        return
                    }
                    let fh = res.pointee.mountres3_u.mountinfo.fhandle
                    result = .success(FileHandle(fh.fhandle3_val, Int(fh.fhandle3_len)))
                })
                try connection.wait(for: [call], deadline: deadline)
                connection.drop()
                return try result.get()
            } catch let failure as ConnectionFailure {
                if case .timedOut = failure { throw .io }
                if deadline.hasPassed { throw .io }
                logger.warning("NFS mount of \(options.server):\(options.path) failed (\(failure)); retrying")
                usleep(200_000)
            } catch {
                throw error as! Errno
            }
        }
    }

    /// Runs `body` on a connection as `caller`. If the connection breaks, it is made again
    /// and `body` runs again (NFSv3 calls are retried as a client's retransmission would be)
    /// until the export's timeout; then EIO.
    func perform<R>(_ caller: Credentials, _ body: (NFSConnection, Deadline) throws(ConnectionFailure) -> R) throws(Errno) -> R {
        // The timeout counts from here: waiting for a connection that another request holds
        // (perhaps stuck on a dead server itself) is part of it.
        let deadline = newDeadline
        guard let connection = acquire(until: deadline) else {
            logger.warning("NFS server \(options.server): no connection became free within the export's timeout")
            timeouts.add(1, ordering: .relaxed)
            throw .io
        }
        defer { connection.unlock() }
        var lastFailure = ""
        while true {
            do {
                if !connection.isConnected {
                    if v4 != nil {
                        try connection.connectOwn(port: 2049, replyLimit: NFSClient.largestReply + (64 << 10), deadline: deadline)
                    } else {
                        try connection.connect(program: ferry_nfs_program, version: ferry_nfs_v3, deadline: deadline)
                    }
                    connectsMade.add(1, ordering: .relaxed)
                    logger.debug("connected to NFS server \(options.server)")
                }
                connection.setCredentials(caller)
                return try body(connection, deadline)
            } catch {
                switch error {
                case .refused(let why):
                    logger.warning("NFS call to \(options.server) cannot be made: \(why)")
                    throw .io
                case .timedOut:
                    logger.warning("NFS server \(options.server) did not answer within the export's timeout (\(lastFailure))")
                    timeouts.add(1, ordering: .relaxed)
                    throw .io
                case .broken(let why):
                    lastFailure = why
                    if deadline.hasPassed {
                        logger.warning("NFS server \(options.server) unreachable: \(why)")
                        timeouts.add(1, ordering: .relaxed)
                        throw .io
                    }
                    callsRetried.add(1, ordering: .relaxed)
                    // Not a busy loop while the server is down: connection refused is immediate.
                    usleep(UInt32(min(100, max(1, deadline.millisecondsLeft))) * 1000)
                }
            }
        }
    }

    /// A free connection if there is one, else the next one in turn, waiting for it until
    /// `deadline` (nil once it has passed).
    private func acquire(until deadline: Deadline) -> NFSConnection? {
        let count = connections.count
        let start = Int(next.wrappingAdd(1, ordering: .relaxed).oldValue % UInt(count))
        for i in 0..<count {
            let connection = connections[(start + i) % count]
            if connection.tryLock() { return connection }
        }
        let connection = connections[start]
        return connection.lock(until: deadline) ? connection : nil
    }

    /// The errno for a server's NFSv4 status. A status with no nearer errno becomes EIO,
    /// and the server's own number is logged: EIO alone does not tell an operator (or a
    /// test log) what the server said.
    func failure(nfs4 status: UInt32) -> Errno {
        let errno = Errno(nfs4: status)
        if errno == .io { logger.warning("NFS server \(options.server) answered NFSv4 status \(status): reported as EIO") }
        return errno
    }

    /// As `failure(nfs4:)`, for an NFSv3 status.
    func failure(nfs3 status: nfsstat3) -> Errno {
        let errno = Errno(nfs: status)
        if errno == .io { logger.warning("NFS server \(options.server) answered NFSv3 status \(status.rawValue): reported as EIO") }
        return errno
    }

    func shutdown() {
        if let v4 {
            v4.stopping.store(true, ordering: .relaxed)
            if let thread = leaseKeeper.withLock({ t in defer { t = nil }; return t }) { pthread_join(thread, nil) }
            endSession()
        }
        for connection in connections {
            connection.lock_(); connection.drop(); connection.unlock()
        }
    }
}
