import CFerry
import FerryFUSE
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What INIT agreed, in one atomic word so every request can read it without a lock:
/// zero before INIT (and after DESTROY or a lost connection), otherwise the agreed
/// FUSE_* flags with the top bit set.
struct FUSESessionWord {
    private static let initializedBit: UInt64 = 1 << 63
    let raw: UInt64

    static let uninitialized = FUSESessionWord(raw: 0)
    init(raw: UInt64) { self.raw = raw }
    init(agreed: FUSEInitFlags) { raw = Self.initializedBit | (agreed.rawValue & ~Self.initializedBit) }

    var initialized: Bool { raw & Self.initializedBit != 0 }
    var agreed: FUSEInitFlags { FUSEInitFlags(rawValue: raw & ~Self.initializedBit) }
    var decodeOptions: FUSEDecodeOptions { FUSEDecodeOptions(agreed: agreed) }
}

/// The server core for one export: decodes each FUSE request, checks it, hands it to
/// the export's driver in Swift terms and encodes the reply.
///
/// Everything every backend would otherwise repeat lives here: INIT negotiation, node
/// ids and lookup counts, open-file handle numbers, validation of guest names, the
/// caller's credentials, the export's cache policy, read-only and device policy.
///
/// Generic over the driver so the request path is specialised (no existential calls);
/// a transport sees it only as a `FUSERequestHandler`.
public final class FUSEServer<Driver: FileSystemDriver>: FUSERequestHandler, Sendable {
    public let driver: Driver
    public let policy: ExportPolicy
    let logger: Logger

    let nodes: NodeTable<Driver.InodeKey, Driver.Inode>
    let files: HandleTable<Driver.File>
    let directories: HandleTable<OpenDirectory>

    /// An open directory keeps its inode, which READDIRPLUS looks names up in.
    struct OpenDirectory {
        let directory: Driver.Directory
        let inode: Driver.Inode
    }

    let session: Atomic<UInt64>
    /// Requests of the current session being served, on every queue: DESTROY waits for
    /// them before it drops the nodes and handles they may still be using or creating.
    private let inFlight: Atomic<Int>
    /// Malformed requests seen; only some are logged, so a hostile client cannot flood the log.
    private let malformedCount: Atomic<UInt64>
    /// Whether a directory entry name the kernel cannot take was logged yet (once per export).
    private let invalidNameLogged: Atomic<Bool>

    /// Counters and latencies by operation, read by the daemon's reports and metrics.
    public let statistics: ExportStatistics
    /// nil: no quota on this export.
    public let quota: QuotaLedger?
    /// nil: no QoS limits on this export.
    let throttle: Throttle?
    /// Set by `enablePassthrough` before the session starts (`ferry mount`); nil otherwise.
    let passthroughSlot: Mutex<PassthroughFiles?>
    /// F_SETLKW requests waiting for a lock held elsewhere.
    public let lockWaits: LockWaits

    public init(driver: Driver, policy: ExportPolicy = ExportPolicy(), logger: Logger) throws(Errno) {
        // Everything that can fail comes before the first stored property is set (none has a
        // default value): a throw out of a partly initialised class with atomic members
        // crashes the Swift 6.3 optimiser when it specialises this initialiser.
        let root = try driver.root()
        let used = policy.quota.isUnlimited ? nil : try QuotaScan.usage(of: driver)
        session = Atomic(FUSESessionWord.uninitialized.raw)
        inFlight = Atomic(0)
        malformedCount = Atomic(0)
        invalidNameLogged = Atomic(false)
        statistics = ExportStatistics()
        lockWaits = LockWaits(limit: policy.maxLockWaiters)
        self.driver = driver
        self.policy = policy
        self.logger = logger
        self.nodes = NodeTable(limit: policy.maxNodes)
        self.files = HandleTable(limit: policy.maxOpenHandles)
        self.directories = HandleTable(limit: policy.maxOpenHandles)
        quota = used.map { QuotaLedger(limits: policy.quota, bytes: $0.bytes, inodes: $0.inodes) }
        throttle = policy.qos.isUnlimited ? nil : Throttle(limits: policy.qos)
        passthroughSlot = Mutex(nil)
        nodes.setRoot(key: root.key, inode: root.inode)
    }

    /// Nodes the kernel currently holds (root included), for statistics and tests.
    public var nodeCount: Int { nodes.count }
    /// Open files and directories.
    public var openHandleCount: Int { files.count + directories.count }
    /// Malformed requests refused so far.
    public var malformedRequests: UInt64 { malformedCount.load(ordering: .relaxed) }
    /// The lookup count the kernel owes on `nodeID`, or nil for an unknown node.
    public func lookupCount(of nodeID: UInt64) -> UInt64? { nodes.lookupCount(nodeID) }

    /// The front-end is gone (or reset the device): its session ends, as with DESTROY.
    /// The transport calls this once its queue threads have stopped.
    public func connectionLost() {
        endSession()
    }

    /// Ends the session: every later request but INIT gets EIO, and every node (but the
    /// root) and every handle is dropped, so the next INIT starts a fresh session.
    func endSession() {
        session.store(FUSESessionWord.uninitialized.raw, ordering: .sequentiallyConsistent)
        // Before the files go: a waiter holds its open file, and must not be granted a lock
        // the next session would never release.
        lockWaits.cancelAll()
        driver.sessionEnded()
        passthrough?.reset()
        files.removeAll()
        directories.removeAll()
        nodes.reset()
    }

    /// DESTROY: the guest unmounted and may mount the same tag again in this boot. Other
    /// queues may still be running requests that passed the session check before it
    /// ended (a well-behaved kernel has drained them; a hostile one need not have): wait
    /// for them, so none interns a node or opens a handle into the next session's tables.
    /// Requests arriving after the session ended are not counted (they get EIO), so a
    /// guest flooding other queues cannot hold DESTROY back.
    func destroySession() {
        session.store(FUSESessionWord.uninitialized.raw, ordering: .sequentiallyConsistent)
        // Not counting itself while it waits, so two DESTROYs racing on two queues do not
        // wait for each other; counted again afterwards for `handle`'s decrement.
        inFlight.wrappingSubtract(1, ordering: .sequentiallyConsistent)
        var spins = 0
        while inFlight.load(ordering: .sequentiallyConsistent) > 0 {
            spins += 1
            if spins < 100 { sched_yield() } else { usleep(100) }
        }
        inFlight.wrappingAdd(1, ordering: .sequentiallyConsistent)
        endSession()
    }

    /// Stops serving for good: drops every node and handle and tells the driver.
    public func shutdown() {
        lockWaits.stop()
        connectionLost()
        driver.destroy()
    }

    public func handle(request bytes: UnsafeRawBufferPointer, reply: inout ReplyArea) -> ReplyDisposition {
        handle(bytes, payload: nil, reply: &reply)
    }

    public func handle(request bytes: UnsafeRawBufferPointer, payload: IOVectors, reply: inout ReplyArea) -> ReplyDisposition {
        handle(bytes, payload: payload, reply: &reply)
    }

    private func handle(_ bytes: UnsafeRawBufferPointer, payload: IOVectors?, reply: inout ReplyArea) -> ReplyDisposition {
        let started = ferry_monotonic_ns()
        // Counted before the session is read, both sequentially consistent, against
        // DESTROY's store then count (`destroySession`): either DESTROY sees this request
        // and waits for it, or this request sees the session ended.
        inFlight.wrappingAdd(1, ordering: .sequentiallyConsistent)
        let current = FUSESessionWord(raw: session.load(ordering: .sequentiallyConsistent))
        guard current.initialized else {
            inFlight.wrappingSubtract(1, ordering: .sequentiallyConsistent)
            return handleOutsideSession(bytes, payload: payload, reply: reply)
        }
        defer { inFlight.wrappingSubtract(1, ordering: .sequentiallyConsistent) }
        let decoded: FUSEDecodedRequest
        do {
            decoded = try FUSEDecoder.decode(bytes, externalPayloadLength: payload?.totalLength ?? 0,
                                             options: current.decodeOptions)
        } catch {
            statistics.addMalformed()
            return refuseMalformed(bytes, error, reply: reply)
        }
        let header = decoded.header
        if let throttle {
            let waited = throttle.admit(bytes: Self.payloadSize(decoded.request, payload))
            if waited > 0 { statistics.addThrottle(nanoseconds: waited) }
        }
        var caller = Credentials(uid: header.uid, gid: header.gid, pid: header.pid)
        let idMap = policy.idMap
        let mapped = !idMap.isIdentity
        if mapped {
            caller.uid = idMap.hostUID(caller.uid)
            caller.gid = idMap.hostGID(caller.gid)
        }
        var disposition: ReplyDisposition
        var failed = false
        if let groups = FUSEExtensions.supplementaryGroups(decoded.extensions), groups.count >= 4 {
            // The kernel sends one group (FUSE_CREATE_SUPP_GROUP); a long list is a hostile
            // client, and would make the backend's setgroups fail.
            let count = groups.count / 4
            guard count <= Credentials.maximumGroups else { return errorReply(.invalid, header.unique, reply) }
            // Copied out (at most 32 words, on the stack): the extension record follows the
            // last name directly, so it need not be aligned for UInt32.
            disposition = withUnsafeTemporaryAllocation(of: UInt32.self, capacity: Credentials.maximumGroups) { copied in
                for i in 0..<count {
                    let gid = UInt32(littleEndian: groups.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))
                    copied[i] = mapped ? idMap.hostGID(gid) : gid
                }
                caller.groups = UnsafeBufferPointer(rebasing: copied[..<count])
                return run(decoded, header, caller, payload, &reply, &failed)
            }
        } else {
            disposition = run(decoded, header, caller, payload, &reply, &failed)
        }
        statistics.record(opcode: header.opcode, nanoseconds: ferry_monotonic_ns() &- started, failed: failed)
        return disposition
    }

    /// Before INIT, or after DESTROY or a lost connection: INIT starts a session, anything
    /// else gets EIO.
    private func handleOutsideSession(_ bytes: UnsafeRawBufferPointer, payload: IOVectors?, reply: ReplyArea) -> ReplyDisposition {
        let decoded: FUSEDecodedRequest
        do {
            decoded = try FUSEDecoder.decode(bytes, externalPayloadLength: payload?.totalLength ?? 0,
                                             options: FUSESessionWord.uninitialized.decodeOptions)
        } catch {
            statistics.addMalformed()
            return refuseMalformed(bytes, error, reply: reply)
        }
        switch decoded.request {
        case .initialize(let initIn):
            return initialize(initIn, unique: decoded.header.unique, canDefer: reply.deferral != nil, reply: reply)
        // No reply, ever; a FORGET of the ended session may still be on its way.
        case .forget, .batchForget, .interrupt: return .none
        default: return errorReply(.io, decoded.header.unique, reply)
        }
    }

    @inline(__always)
    private func run(_ decoded: FUSEDecodedRequest, _ header: FUSEInHeader, _ caller: Credentials, _ payload: IOVectors?,
                     _ reply: inout ReplyArea, _ failed: inout Bool) -> ReplyDisposition {
        do {
            return try dispatch(decoded.request, header: header, caller: caller, payload: payload, reply: &reply)
        } catch {
            failed = true
            if error == .quotaExceeded { statistics.addQuotaRefusal() }
            return errorReply(error, header.unique, reply)
        }
    }

    /// The bytes a request moves, for bandwidth limits.
    private static func payloadSize(_ request: FUSERequest, _ payload: IOVectors?) -> Int {
        switch request {
        case .read(let r): return Int(r.size)
        case .write(_, let data): return payload?.totalLength ?? data.count
        default: return 0
        }
    }

    /// A request that did not decode: answer EINVAL when it has a header (and wants a
    /// reply), drop it otherwise. Never trusted further.
    private func refuseMalformed(_ bytes: UnsafeRawBufferPointer, _ error: FUSEDecodeError, reply: ReplyArea) -> ReplyDisposition {
        // The first few, then one in a thousand, with the running total.
        let seen = malformedCount.wrappingAdd(1, ordering: .relaxed).newValue
        let shouldLog = seen <= 10 || seen % 1000 == 0
        guard let header = try? FUSEDecoder.decodeHeader(bytes) else {
            if shouldLog {
                logger.warning("dropped a request without a readable header", metadata: ["reason": "\(error)", "malformed": "\(seen)"])
            }
            return .none
        }
        if shouldLog {
            logger.warning("malformed request refused", metadata: [
                "opcode": "\(header.opcode)", "unique": "\(header.unique)", "reason": "\(error)", "malformed": "\(seen)",
            ])
        }
        switch FUSEOpcode(rawValue: header.opcode) {
        case .forget?, .batchForget?, .interrupt?, .notifyReply?: return .none
        default: return errorReply(.invalid, header.unique, reply)
        }
    }

    private func initialize(_ initIn: FUSEInitIn, unique: UInt64, canDefer: Bool, reply: ReplyArea) -> ReplyDisposition {
        var wanted: FUSEInitFlags = [
            .asyncRead, .atomicOTrunc, .bigWrites, .autoInvalData, .asyncDio, .parallelDirops,
            .maxPages, .cacheSymlinks, .setxattrExt, .initExt, .createSuppGroup,
        ]
        if policy.readdirplus { wanted.formUnion([.doReaddirplus, .readdirplusAuto]) }
        // The server clears set-id bits (and the host, security.capability) on write, chown
        // and truncation when the kernel asks (the *_KILL_SUIDGID flags), so the kernel need
        // not send a GETXATTR and a SETATTR around every write.
        if policy.killPrivV2 { wanted.insert(.handleKillprivV2) }
        // With POSIX ACLs the umask must not be applied where a default ACL is: the kernel
        // leaves it to us (FUSE_DONT_MASK) and sends it with each creating request.
        if policy.posixACL { wanted.formUnion([.posixACL, .dontMask]) }
        if policy.writeback { wanted.insert(.writebackCache) }
        if policy.announceSubmounts { wanted.insert(.submounts) }
        if policy.allowMmap { wanted.insert(.directIOAllowMmap) }
        // Stack depth 1: backing files on ordinary file systems only. The kernel refuses one
        // on an overlay or another passthrough FUSE mount (ELOOP), and the export falls back.
        if passthrough != nil { wanted.insert(.passthrough) }
        // Locks kept where every client of the storage sees them, and a transport that can
        // answer a waiting lock once it is granted (a queue thread never waits for one).
        if driver.supportsRecordLocks && canDefer {
            if policy.posixLocks { wanted.insert(.posixLocks) }
            if policy.flockLocks { wanted.insert(.flockLocks) }
        }
        let config = FUSEInitConfig(wanted: wanted, maxWrite: policy.maxWrite, maxStackDepth: 1)
        switch FUSEInitNegotiation.negotiate(initIn, config: config) {
        case .accepted(let out, let agreed, let minor):
            session.store(FUSESessionWord(agreed: agreed).raw, ordering: .releasing)
            logger.info("session started", metadata: [
                "kernel": "\(initIn.major).\(initIn.minor)", "minor": "\(minor)",
                "maxWrite": "\(out.maxWrite)", "flags": "0x\(String(agreed.rawValue, radix: 16))",
                "passthrough": "\(agreed.contains(.passthrough))",
            ])
            return .inline(length: FUSEReply.encode(out, unique: unique, into: reply.scratch))
        case .retryWithVersion(let out):
            return .inline(length: FUSEReply.encode(out, unique: unique, into: reply.scratch))
        case .refused(let errno):
            logger.error("kernel FUSE version refused", metadata: ["kernel": "\(initIn.major).\(initIn.minor)"])
            return errorReply(Errno(errno), unique, reply)
        }
    }

    // MARK: Reply helpers

    func errorReply(_ error: Errno, _ unique: UInt64, _ reply: ReplyArea) -> ReplyDisposition {
        .inline(length: FUSEReply.error(error.rawValue, unique: unique, into: reply.scratch))
    }

    func emptyReply(_ unique: UInt64, _ reply: ReplyArea) -> ReplyDisposition {
        FUSEReply.writeHeader(to: reply.scratch.baseAddress!, length: FUSEOutHeader.size, error: 0, unique: unique)
        return .inline(length: FUSEOutHeader.size)
    }

    func encode<T: FUSEEncodable>(_ value: T, _ unique: UInt64, _ reply: ReplyArea) -> ReplyDisposition {
        .inline(length: FUSEReply.encode(value, unique: unique, into: reply.scratch))
    }

    /// The inode behind a node id the kernel sent; EBADF for ids it was never given.
    @inline(__always)
    func inode(_ nodeID: UInt64) throws(Errno) -> Driver.Inode {
        guard let inode = nodes.inode(nodeID) else { throw nodes.isFailed(nodeID) ? .io : .badHandle }
        return inode
    }

    @inline(__always)
    func file(_ fh: UInt64) throws(Errno) -> Driver.File {
        guard let file = files.get(fh) else { throw files.isFailed(fh) ? .io : .badHandle }
        return file
    }

    /// The open directory behind `fh`: EIO for one a migration could not restore, as for
    /// files and nodes; EBADF for a handle never given.
    @inline(__always)
    func directory(_ fh: UInt64) throws(Errno) -> OpenDirectory {
        guard let open = directories.get(fh) else { throw directories.isFailed(fh) ? .io : .badHandle }
        return open
    }

    /// A driver listed a name no client can take (empty, with '/' or NUL, over 255 bytes):
    /// it is skipped; said once per export, so a directory full of them cannot flood the log.
    func invalidEntryName(_ name: UnsafeRawBufferPointer, in directory: Driver.Inode) {
        guard !invalidNameLogged.exchange(true, ordering: .relaxed) else { return }
        logger.warning("skipping a directory entry whose name a client cannot take (logged once)", metadata: [
            "bytes": "\(name.count)", "name": "\(String(decoding: name.prefix(64), as: UTF8.self).debugDescription)",
        ])
    }

    @inline(__always)
    func name(_ bytes: UnsafeRawBufferPointer) throws(Errno) -> FileName {
        try FileName.validated(bytes).get()
    }

    @inline(__always)
    func writable() throws(Errno) {
        if policy.readOnly { throw .readOnly }
    }

    /// Gives the kernel one more reference to the entry's node and builds its entry.
    func entryOut(_ entry: Driver.Entry) throws(Errno) -> FUSEEntryOut {
        let (nodeID, generation) = try nodes.intern(key: entry.key, inode: entry.inode)
        var out = FUSEEntryOut()
        out.nodeID = nodeID
        out.generation = generation
        out.entryValid = policy.cache.timeout
        out.attrValid = policy.cache.timeout
        out.attr = fuseAttr(entry.attributes)
        return out
    }

    func entryReply(_ entry: Driver.Entry, _ unique: UInt64, _ reply: ReplyArea) throws(Errno) -> ReplyDisposition {
        encode(try entryOut(entry), unique, reply)
    }

    func attrReply(_ attributes: Attributes, _ unique: UInt64, _ reply: ReplyArea) -> ReplyDisposition {
        var out = FUSEAttrOut()
        out.attrValid = policy.cache.timeout
        out.attr = fuseAttr(attributes)
        return encode(out, unique, reply)
    }

    func fuseAttr(_ a: Attributes) -> FUSEAttr {
        var out = FUSEAttr()
        out.ino = a.inode
        out.size = a.size
        out.blocks = a.blocks
        out.atime = UInt64(bitPattern: a.accessTime.seconds)
        out.atimensec = a.accessTime.nanoseconds
        out.mtime = UInt64(bitPattern: a.modificationTime.seconds)
        out.mtimensec = a.modificationTime.nanoseconds
        out.ctime = UInt64(bitPattern: a.changeTime.seconds)
        out.ctimensec = a.changeTime.nanoseconds
        out.mode = a.mode
        out.nlink = a.linkCount
        if policy.idMap.isIdentity {
            out.uid = a.uid
            out.gid = a.gid
        } else {
            out.uid = policy.idMap.guestUID(a.uid)
            out.gid = policy.idMap.guestGID(a.gid)
        }
        out.rdev = a.rdev
        out.blksize = a.blockSize
        return out
    }

    /// The caller's umask for a creating request: the request's own under FUSE_DONT_MASK;
    /// otherwise 0, the kernel having applied it to the mode already.
    @inline(__always)
    func creationUmask(_ umask: UInt32) -> UInt32 {
        FUSESessionWord(raw: session.load(ordering: .relaxed)).agreed.contains(.dontMask) ? umask & 0o777 : 0
    }

    /// What INIT agreed on the current session (empty outside one).
    var agreedFlags: FUSEInitFlags {
        FUSESessionWord(raw: session.load(ordering: .relaxed)).agreed
    }

    /// CREATE and TMPFILE flags for the driver: as for OPEN, but O_EXCL stays. The kernel
    /// sends CREATE after its own negative LOOKUP, so another client may have made the name
    /// meanwhile; only the backend can then tell O_CREAT|O_EXCL to fail (EEXIST) instead of
    /// opening, and with O_TRUNC emptying, the other's file. On TMPFILE it means "never
    /// linkable".
    func driverCreateFlags(_ raw: UInt32) -> Int32 {
        driverOpenFlags(raw) | (Int32(bitPattern: raw) & O_EXCL)
    }

    /// Open flags as the driver should see them: creation bits are the server's business,
    /// and with the writeback cache the kernel may read through a write-only open and
    /// handles O_APPEND itself.
    func driverOpenFlags(_ raw: UInt32) -> Int32 {
        var flags = Int32(bitPattern: raw) & ~(O_CREAT | O_EXCL | O_NOCTTY)
        if !policy.allowDirectIO { flags &= ~ferry_o_direct }
        if policy.writeback {
            if flags & O_ACCMODE == O_WRONLY { flags = (flags & ~O_ACCMODE) | O_RDWR }
            flags &= ~O_APPEND
        }
        return flags
    }
}
