import CFerry
import FerryCore
import FerryFUSE
import FerryVirtio
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What the control thread sends back for one front-end message.
enum ControlReply: Equatable {
    /// Nothing (or a REPLY_ACK, decided by the caller from `succeeded`).
    case none(succeeded: Bool)
    /// An explicit reply payload (the message type has one).
    case payload([UInt8])
    /// Close the connection (a protocol violation).
    case close(String)
}

/// The vhost-user-fs device for one front-end connection: the protocol's state machine
/// (features, memory table, rings) and the queue workers. Independent of the socket, so
/// tests can drive it with messages directly.
/// @unchecked Sendable: the mutable protocol state (memory, features, log, transfer) is written only by the
/// control thread under `lock`'s write side and read by queue workers under its read side;
/// everything else is immutable, a Mutex or an Atomic.
final class VhostUserFSDevice: @unchecked Sendable {
    static let offeredFeatures: UInt64 = VirtioFeature.version1 | VirtioFeature.ringIndirectDescriptors
        | VirtioFeature.ringEventIndex | VirtioFeature.protocolFeatures | VirtioFeature.logAll
    static let offeredProtocolFeatures: UInt64 = VhostUserProtocolFeature.multiqueue | VhostUserProtocolFeature.replyAck
        | VhostUserProtocolFeature.configureMemSlots | VhostUserProtocolFeature.resetDevice
        | VhostUserProtocolFeature.logSharedMemory
    static let maxMemorySlots = 32

    let handler: any FUSERequestHandler
    /// The handler as a migratable export, when it is one (DEVICE_STATE is offered then).
    let migratable: (any MigratableHandler)?
    /// GET_PROTOCOL_FEATURES' answer: the static set, plus DEVICE_STATE for an export that migrates.
    let protocolFeatures: UInt64
    let options: VhostUserFSOptions
    let logger: Logger
    let queues: [Virtqueue]

    /// Held for reading by a worker while it processes a batch; for writing by the control
    /// thread while it changes the memory table or a running ring's configuration.
    private let lock: UnsafeMutablePointer<pthread_rwlock_t>
    /// Guarded by `lock`.
    private(set) var memory = GuestMemory.empty
    private var ackedFeatures: UInt64 = 0
    private(set) var ackedProtocolFeatures: UInt64 = 0
    /// Guarded by `lock` (workers read it during a batch).
    private var eventIndex = false
    private var indirect = false
    /// The front-end's dirty-page log (SET_LOG_BASE). Guarded by `lock`.
    private var log: DirtyLog?
    /// `log` while VHOST_F_LOG_ALL is agreed, else nil: what the workers look at, once per
    /// batch, so a device that is not migrating pays one branch per chain. Guarded by `lock`.
    private var activeLog: DirtyLog?
    /// SET_LOG_FD's eventfd (kept, never needed: QEMU reads the log when it syncs).
    private var logFD: Int32 = -1
    /// The state transfer SET_DEVICE_STATE_FD began; CHECK_DEVICE_STATE ends it.
    private var transfer: (StateTransfer, DeviceStateTransfer.Direction, MigrationOptions)?
    private let stopFD: Int32
    /// The state was saved and no ring ran since: a ring starting now means the migration
    /// failed and the guest resumes here (the handler takes back what the save gave up).
    private var savedSinceRingsRan = false
    /// What `migrationStatus` reports; read by the daemon's reporting thread.
    private let status = Mutex(VhostUserMigrationStatus())
    /// `options.migration`, changeable while a guest is served (a configuration reload);
    /// a transfer keeps the options it began with.
    private let currentMigrationOptions: Mutex<MigrationOptions>

    private let brokenFlag = Atomic<Bool>(false)
    private let reasonLock = Mutex<String?>(nil)

    /// `stopFD`: the back-end's stop eventfd, which also ends a state transfer's wait.
    init(handler: any FUSERequestHandler, options: VhostUserFSOptions, logger: Logger, stopFD: Int32 = -1) {
        self.handler = handler
        self.stopFD = stopFD
        let migratable = (handler as? any MigratableHandler).flatMap { $0.canMigrate ? $0 : nil }
        self.migratable = migratable
        protocolFeatures = Self.offeredProtocolFeatures | (migratable == nil ? 0 : VhostUserProtocolFeature.deviceState)
        self.options = options
        currentMigrationOptions = Mutex(options.migration)
        self.logger = logger
        queues = (0...max(1, options.maxRequestQueues)).map { Virtqueue(index: $0) }
        lock = .allocate(capacity: 1)
        var attr = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attr)
        // A busy queue must not starve SET_MEM_TABLE.
        pthread_rwlockattr_setkind_np(&attr, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
        pthread_rwlock_init(lock, &attr)
        pthread_rwlockattr_destroy(&attr)
    }

    deinit {
        reset(notifyHandler: false)
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    var brokenReason: String? { reasonLock.withLock { $0 } }
    var isBroken: Bool { brokenFlag.load(ordering: .acquiring) }

    /// Marks the device broken: every worker stops serving its ring until a reset.
    func markBroken(queue: Int, _ reason: String) {
        let first = reasonLock.withLock { r -> Bool in
            if r != nil { return false }
            r = "queue \(queue): \(reason)"
            return true
        }
        brokenFlag.store(true, ordering: .releasing)
        if first {
            logger.error("virtio-fs device broken; its queues are no longer served until the front-end resets it",
                         metadata: ["queue": "\(queue)", "reason": "\(reason)"])
            for q in queues { q.wake() }
        }
    }

    @inline(__always) private func writeLocked<T>(_ body: () throws -> T) rethrows -> T {
        pthread_rwlock_wrlock(lock); defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    // MARK: - Lifecycle

    /// Stops every worker, unmaps memory, closes every fd, forgets negotiation and the
    /// broken state; tells the handler the connection's state is gone.
    /// `keepProtocolFeatures`: RESET_DEVICE / RESET_OWNER, after which the front-end does
    /// not negotiate protocol features again (QEMU 10 sends RESET_DEVICE right after it
    /// negotiated them); only a new connection starts that over.
    func reset(notifyHandler: Bool = true, keepProtocolFeatures: Bool = false) {
        transfer?.0.cancel()
        transfer = nil
        for q in queues {
            stopWorker(q)
            settleDeferred(q, answering: false)
        }
        writeLocked {
            for q in queues { q.resetConfiguration() }
            memory = .empty
            ackedFeatures = 0; eventIndex = false; indirect = false
            if !keepProtocolFeatures { ackedProtocolFeatures = 0 }
            log = nil; activeLog = nil
            if logFD >= 0 { close(logFD); logFD = -1 }
        }
        status.withLock { $0 = VhostUserMigrationStatus() }
        // The connection's end: the front-end that saved is gone (the guest runs at the
        // destination, or nowhere), so the next connection's rings are a new guest's, not a
        // resumed one (which would take a RADOS lease back from the destination).
        if !keepProtocolFeatures { savedSinceRingsRan = false }
        brokenFlag.store(false, ordering: .releasing)
        reasonLock.withLock { $0 = nil }
        if notifyHandler { handler.connectionLost() }
    }

    // MARK: - Messages

    /// Handles one message. `fds` are the descriptors that came with it; those the
    /// handler keeps are removed, the caller closes the rest.
    func handle(request code: UInt32, flags: UInt32, payload: UnsafeRawBufferPointer, fds: inout [Int32]) -> ControlReply {
        guard let request = VhostUserRequest(rawValue: code) else {
            logger.warning("unknown vhost-user request; refused", metadata: ["request": "\(code)"])
            return .none(succeeded: false)
        }
        func need(_ n: Int) -> Bool { payload.count >= n }
        func u64() -> UInt64 { payload.loadUnaligned(as: UInt64.self).littleEndian }
        func fail(_ why: String) -> ControlReply {
            logger.warning("vhost-user request refused", metadata: ["request": "\(request)", "reason": "\(why)"])
            return .none(succeeded: false)
        }
        func short() -> ControlReply { .close("\(request) with a \(payload.count)-byte payload") }

        switch request {
        case .getFeatures:
            return .payload(Self.bytes(Self.offeredFeatures))
        case .setFeatures:
            guard need(8) else { return short() }
            let value = u64()
            let unknown = value & ~Self.offeredFeatures
            writeLocked {
                ackedFeatures = value & Self.offeredFeatures
                eventIndex = ackedFeatures & VirtioFeature.ringEventIndex != 0
                indirect = ackedFeatures & VirtioFeature.ringIndirectDescriptors != 0
                updateActiveLog()
            }
            if ackedFeatures & VirtioFeature.protocolFeatures == 0 {
                // Without protocol features, rings start enabled.
                for q in queues { q.enabled.store(true, ordering: .releasing); q.wake() }
            }
            return unknown == 0 ? .none(succeeded: true) : fail("features 0x\(String(unknown, radix: 16)) were never offered")
        case .getProtocolFeatures:
            return .payload(Self.bytes(protocolFeatures))
        case .setProtocolFeatures:
            guard need(8) else { return short() }
            let value = u64()
            ackedProtocolFeatures = value & protocolFeatures
            return value & ~protocolFeatures == 0 ? .none(succeeded: true)
                : fail("protocol features 0x\(String(value & ~protocolFeatures, radix: 16)) were never offered")
        case .setOwner:
            return .none(succeeded: true)
        case .resetOwner, .resetDevice:
            logger.info("front-end reset the device", metadata: ["request": "\(request)"])
            reset(keepProtocolFeatures: true)
            return .none(succeeded: true)
        case .getQueueNum:
            return .payload(Self.bytes(UInt64(queues.count)))
        case .getMaxMemSlots:
            return .payload(Self.bytes(UInt64(Self.maxMemorySlots)))
        case .setMemTable:
            let regions: [MemoryRegionDescription]
            do { regions = try MemoryTable.decode(payload) } catch { return .close("bad SET_MEM_TABLE: \(error)") }
            guard fds.count == regions.count else { return fail("SET_MEM_TABLE with \(regions.count) regions but \(fds.count) fds") }
            var mapped: [MappedRegion] = []
            for (i, d) in regions.enumerated() {
                do { mapped.append(try MappedRegion(fd: fds[i], description: d)) } catch { return fail(error.description) }
            }
            var table = GuestMemory.empty
            for m in mapped {
                do { table = try table.adding(m) } catch { return fail(error.description) }
            }
            for fd in fds { close(fd) }
            fds.removeAll()
            installMemory(table)
            return .none(succeeded: true)
        case .addMemReg:
            let d: MemoryRegionDescription
            do { d = try SingleMemoryRegion.decode(payload) } catch { return short() }
            guard fds.count == 1 else { return fail("ADD_MEM_REG with \(fds.count) fds") }
            guard memory.regions.count < Self.maxMemorySlots else { return fail("more than \(Self.maxMemorySlots) memory regions") }
            let table: GuestMemory
            do { table = try memory.adding(try MappedRegion(fd: fds[0], description: d)) } catch { return fail(error.description) }
            close(fds[0]); fds.removeAll()
            installMemory(table)
            return .none(succeeded: true)
        case .remMemReg:
            let d: MemoryRegionDescription
            do { d = try SingleMemoryRegion.decode(payload) } catch { return short() }
            guard let table = memory.removing(d) else { return fail("REM_MEM_REG of a region that is not mapped") }
            installMemory(table)
            return .none(succeeded: true)
        case .setVringNum:
            guard need(VringState.size) else { return short() }
            let s = VringState.decode(payload)
            guard let q = queue(s.index) else { return fail("queue index \(s.index) out of range") }
            guard SplitVirtqueue.isValidSize(s.num), s.num <= UInt32(options.maxQueueSize) else {
                return fail("queue size \(s.num) (must be a power of two up to \(options.maxQueueSize))")
            }
            guard !q.isRunning else { return fail("SET_VRING_NUM on running queue \(s.index)") }
            q.size = UInt16(s.num)
            if let a = q.address { q.ring = RingView.translate(a, size: q.size, memory: memory) }
            return .none(succeeded: true)
        case .setVringAddr:
            guard need(VringAddress.size) else { return short() }
            let a = VringAddress.decode(payload)
            guard let q = queue(a.index) else { return fail("queue index \(a.index) out of range") }
            guard q.size > 0 else { return fail("SET_VRING_ADDR before SET_VRING_NUM on queue \(a.index)") }
            guard let ring = RingView.translate(a, size: q.size, memory: memory) else {
                return fail("rings of queue \(a.index) are not inside guest memory (or misaligned)")
            }
            writeLocked {
                q.address = a; q.ring = ring
                q.usedLogAddress = a.flags & VringAddress.logFlag != 0 ? a.log : nil
            }
            return .none(succeeded: true)
        case .setVringBase:
            guard need(VringState.size) else { return short() }
            let s = VringState.decode(payload)
            guard let q = queue(s.index) else { return fail("queue index \(s.index) out of range") }
            guard !q.isRunning else { return fail("SET_VRING_BASE on running queue \(s.index)") }
            guard s.num <= 0xffff else { return fail("vring base \(s.num) does not fit 16 bits") }
            q.base = UInt16(s.num)
            return .none(succeeded: true)
        case .getVringBase:
            guard need(VringState.size) else { return short() }
            let s = VringState.decode(payload)
            guard let q = queue(s.index) else {
                logger.warning("GET_VRING_BASE for an unknown queue", metadata: ["index": "\(s.index)"])
                return .payload(Self.bytes(VringState(index: s.index, num: 0)))
            }
            stopWorker(q)       // waits for the chains in flight; q.base is then where the ring stopped
            // Requests still deferred (waiting locks) are answered now: the ring's state goes
            // elsewhere (a migration, a stopped VM) and must not hold a chain nobody will use.
            settleDeferred(q, answering: true)
            let last = q.base
            writeLocked {
                if q.kickFD >= 0 { close(q.kickFD); q.kickFD = -1 }
                if q.callFD >= 0 { close(q.callFD); q.callFD = -1 }
            }
            return .payload(Self.bytes(VringState(index: s.index, num: UInt32(last))))
        case .setVringKick, .setVringCall, .setVringErr:
            guard need(8) else { return short() }
            let value = u64()
            let index = UInt32(value & 0xff)
            let noFD = value & 0x100 != 0
            guard let q = queue(index) else { return fail("queue index \(index) out of range") }
            var fd: Int32 = -1
            if !noFD {
                guard fds.count == 1 else { return fail("\(request) without exactly one fd") }
                fd = fds.removeFirst()
            }
            switch request {
            case .setVringKick:
                stopWorker(q)
                if q.kickFD >= 0 { close(q.kickFD); q.kickFD = -1 }
                guard fd >= 0 else { return fail("polling mode (no kick fd) is not supported, queue \(index)") }
                q.kickFD = fd
                if savedSinceRingsRan, let migratable {
                    savedSinceRingsRan = false
                    migratable.migrationResumedAtSource()
                }
                return startWorker(q) ? .none(succeeded: true) : fail("queue \(index) has no rings in guest memory")
            case .setVringCall:
                writeLocked {
                    if q.callFD >= 0 { close(q.callFD) }
                    q.callFD = fd
                    q.signalledUsedValid = false
                }
                return .none(succeeded: true)
            default:
                writeLocked {
                    if q.errFD >= 0 { close(q.errFD) }
                    q.errFD = fd
                }
                return .none(succeeded: true)
            }
        case .setVringEnable:
            guard need(VringState.size) else { return short() }
            let s = VringState.decode(payload)
            guard let q = queue(s.index) else { return fail("queue index \(s.index) out of range") }
            guard s.num <= 1 else { return fail("SET_VRING_ENABLE \(s.num)") }
            q.enabled.store(s.num == 1, ordering: .releasing)
            q.wake()
            return .none(succeeded: true)
        case .setLogBase:
            // QEMU waits for the reply and cannot be told "no": a log we cannot keep ends
            // the connection, which fails the migration instead of losing pages silently.
            guard ackedProtocolFeatures & VhostUserProtocolFeature.logSharedMemory != 0 else {
                return .close("SET_LOG_BASE without LOG_SHMFD")
            }
            guard need(LogDescription.size) else { return short() }
            guard fds.count == 1 else { return .close("SET_LOG_BASE with \(fds.count) fds") }
            let d = LogDescription.decode(payload)
            let newLog: DirtyLog
            do { newLog = try DirtyLog(fd: fds[0], description: d) } catch { return .close(error.description) }
            close(fds[0]); fds.removeAll()
            // The old log is unmapped once the last worker batch holding it ends.
            writeLocked { log = newLog; updateActiveLog() }
            logger.info("dirty-page log set", metadata: ["bytes": "\(d.size)"])
            return .payload(Array(UnsafeRawBufferPointer(rebasing: payload[0..<LogDescription.size])))
        case .setLogFD:
            guard fds.count == 1 else { return fail("SET_LOG_FD with \(fds.count) fds") }
            let fd = fds.removeFirst()
            writeLocked {
                if logFD >= 0 { close(logFD) }
                logFD = fd
            }
            return .none(succeeded: true)
        case .setDeviceStateFD:
            return beginStateTransfer(payload, &fds)
        case .checkDeviceState:
            return .payload(Self.bytes(UInt64(endStateTransfer() ? 0 : 1)))
        case .getConfig:
            // CONFIG is not offered: an empty payload is the spec's error reply.
            return .payload([])
        case .setConfig:
            return fail("device config space is not supported")
        case .getInflightFD:
            // INFLIGHT_SHMFD is not offered: describe an empty area (no fd).
            var b = [UInt8](repeating: 0, count: InflightDescription.size)
            b.withUnsafeMutableBytes { InflightDescription(mmapSize: 0, mmapOffset: 0, queueCount: 0, queueSize: 0).encode(to: $0.baseAddress!) }
            return .payload(b)
        case .setInflightFD:
            return fail("inflight tracking is not supported")
        case .getStatus:
            return .payload(Self.bytes(UInt64(0)))
        case .postcopyAdvise, .postcopyEnd, .iotlbMessage:
            logger.warning("vhost-user request not supported", metadata: ["request": "\(request)"])
            return .payload(Self.bytes(UInt64(1)))
        case .createCryptoSession:
            // Answer with the same payload and session id -1 (failure) in its first 8 bytes.
            var b = Array(payload)
            if b.count >= 8 { for i in 0..<8 { b[i] = 0xff } }
            return .payload(b)
        default:
            return fail("not supported by a virtio-fs back-end")
        }
    }

    // MARK: - Device state (live migration)

    /// SET_DEVICE_STATE_FD: with every ring stopped (QEMU stops them with GET_VRING_BASE
    /// first, which waits for the requests in flight), the state is saved at once and
    /// written to the front-end's fd by a transfer thread, or read from it to be loaded at
    /// CHECK_DEVICE_STATE. The reply is u64: 0x100 (no fd of ours) or 0x101 (refused).
    private func beginStateTransfer(_ payload: UnsafeRawBufferPointer, _ fds: inout [Int32]) -> ControlReply {
        let refused = ControlReply.payload(Self.bytes(DeviceStateTransfer.replyNoFD | 1))
        func refuse(_ why: String) -> ControlReply {
            logger.error("device state transfer refused", metadata: ["reason": "\(why)"])
            return refused
        }
        guard let migratable, ackedProtocolFeatures & VhostUserProtocolFeature.deviceState != 0 else {
            return refuse("DEVICE_STATE was not agreed")
        }
        guard payload.count >= DeviceStateTransfer.size else { return .close("SET_DEVICE_STATE_FD with a \(payload.count)-byte payload") }
        guard fds.count == 1 else { return refuse("SET_DEVICE_STATE_FD with \(fds.count) fds") }
        let t = DeviceStateTransfer.decode(payload)
        guard t.phase == DeviceStateTransfer.phaseStopped else { return refuse("migration phase \(t.phase)") }
        guard let direction = DeviceStateTransfer.Direction(rawValue: t.direction) else { return refuse("direction \(t.direction)") }
        guard queues.allSatisfy({ !$0.isRunning }) else { return refuse("a ring is still running (the device must be stopped)") }
        if let (old, _, _) = transfer { old.cancel(); transfer = nil }
        let fd = fds.removeFirst()
        let migration = migrationOptions
        let started: StateTransfer?
        switch direction {
        case .save:
            let state: [UInt8]
            do { state = try migratable.saveMigrationState(migration) } catch {
                close(fd)
                record(direction, .failed)
                return refuse("saving the export's state failed: \(error)")
            }
            savedSinceRingsRan = true
            started = StateTransfer(fd: fd, .save(state), stopFD: stopFD)
        case .load:
            started = StateTransfer(fd: fd, .load, stopFD: stopFD)
        }
        guard let started else { return refuse("could not start the transfer thread") }
        transfer = (started, direction, migration)
        record(direction, .inProgress)
        logger.info("device state transfer started", metadata: ["direction": "\(direction)"])
        return .payload(Self.bytes(DeviceStateTransfer.replyNoFD))
    }

    /// CHECK_DEVICE_STATE: the transfer ended well (and, loading, the state was taken).
    private func endStateTransfer() -> Bool {
        guard let (t, direction, migration) = transfer, let migratable else {
            logger.error("CHECK_DEVICE_STATE without a state transfer")
            return false
        }
        transfer = nil
        let succeeded: Bool
        switch (t.finish(), direction) {
        case (.failure(let e), _):
            logger.error("device state transfer failed", metadata: ["reason": "\(e)"])
            succeeded = false
        case (.success, .save):
            succeeded = true
        case (.success(let state), .load):
            do {
                _ = try migratable.loadMigrationState(state, migration)
                succeeded = true
            } catch {
                logger.error("the migrated state was refused; the guest stays on the source", metadata: ["reason": "\(error)"])
                succeeded = false
            }
        }
        record(direction, succeeded ? .succeeded : .failed)
        return succeeded
    }

    private func record(_ direction: DeviceStateTransfer.Direction, _ outcome: VhostUserMigrationStatus.Transfer.Outcome) {
        status.withLock { $0.transfer = .init(direction: direction == .save ? .save : .load, outcome: outcome) }
    }

    /// Where the device is in a migration (any thread).
    var migrationStatus: VhostUserMigrationStatus { status.withLock { $0 } }

    /// The options the next state transfer uses (any thread).
    var migrationOptions: MigrationOptions {
        get { currentMigrationOptions.withLock { $0 } }
        set { currentMigrationOptions.withLock { $0 = newValue } }
    }

    /// Logging is on while LOG_ALL is agreed and a log is set. Under the write lock.
    private func updateActiveLog() {
        activeLog = ackedFeatures & VirtioFeature.logAll != 0 ? log : nil
        let logging = activeLog != nil
        status.withLock { $0.logging = logging }
    }

    /// Whether the workers currently log their writes (tests).
    var isLogging: Bool { pthread_rwlock_rdlock(lock); defer { pthread_rwlock_unlock(lock) }; return activeLog != nil }

    private func queue(_ index: UInt32) -> Virtqueue? {
        Int(index) < queues.count ? queues[Int(index)] : nil
    }

    /// Installs a new memory table: waits for every worker to finish its batch (write
    /// lock), swaps the table and re-translates the rings.
    private func installMemory(_ table: GuestMemory) {
        writeLocked {
            memory = table
            for q in queues {
                if let a = q.address, q.size > 0 {
                    q.ring = RingView.translate(a, size: q.size, memory: table)
                    if q.ring == nil {
                        logger.warning("rings no longer inside guest memory after a memory table change", metadata: ["queue": "\(q.index)"])
                    }
                }
            }
        }
    }

    static func bytes(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    static func bytes(_ s: VringState) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: VringState.size)
        b.withUnsafeMutableBytes { s.encode(to: $0.baseAddress!) }
        return b
    }

    // MARK: - Workers

    /// Starts `q`'s worker (and, in pool mode, its pool) if it has a kick fd and rings
    /// inside guest memory.
    private func startWorker(_ q: Virtqueue) -> Bool {
        guard q.kickFD >= 0, let ring = q.ring else { return false }
        q.stopRequested.store(false, ordering: .releasing)
        q.lastAvail = q.base
        q.usedIndex = ring.usedIndexInMemory
        q.signalledUsedValid = false
        if options.threadPoolSize > 0 {
            let work = HeadQueue(capacity: max(options.maxQueueSize, 1))
            q.work = work
            for _ in 0..<options.threadPoolSize {
                guard let t = spawn({ $0.device.poolServe($0.queue, work) }, q) else { break }
                q.poolThreads.append(t)
            }
            if q.poolThreads.isEmpty { q.work = nil; return false }
        }
        guard let t = spawn({ $0.device.serve($0.queue) }, q) else {
            stopPool(q)
            return false
        }
        q.thread = t
        status.withLock { $0.transfer = nil }
        return true
    }

    private func spawn(_ body: @escaping (WorkerContext) -> Void, _ q: Virtqueue) -> pthread_t? {
        let box = Unmanaged.passRetained(WorkerContext(device: self, queue: q, body: body))
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            let context = Unmanaged<WorkerContext>.fromOpaque(raw!).takeRetainedValue()
            context.body(context)
            return nil
        }, box.toOpaque())
        guard rc == 0 else {
            box.release()
            logger.error("pthread_create failed", metadata: ["errno": "\(rc)"])
            return nil
        }
        return thread
    }

    /// Stops `q`'s worker and pool, after the chains already handed out have completed;
    /// `q.base` then holds the next avail index to process.
    private func stopWorker(_ q: Virtqueue) {
        guard let t = q.thread else { return }
        q.stopRequested.store(true, ordering: .releasing)
        q.wake()
        pthread_join(t, nil)
        q.thread = nil
        stopPool(q)
        q.base = q.lastAvail
        // Drain the wake counter for the next start.
        var v: UInt64 = 0
        _ = read(q.wakeFD, &v, 8)
    }

    private func stopPool(_ q: Virtqueue) {
        q.work?.close()
        for t in q.poolThreads { pthread_join(t, nil) }
        q.poolThreads.removeAll()
        q.work = nil
    }

    private final class WorkerContext {
        let device: VhostUserFSDevice
        let queue: Virtqueue
        let body: (WorkerContext) -> Void
        init(device: VhostUserFSDevice, queue: Virtqueue, body: @escaping (WorkerContext) -> Void) {
            self.device = device; self.queue = queue; self.body = body
        }
    }

    /// A queue's thread: wait for a kick (or a wake-up), drain the ring (running the
    /// requests, or handing them to the pool), notify once per drained batch.
    private func serve(_ q: Virtqueue) {
        let processor: ChainProcessor? = q.work == nil
            ? ChainProcessor(handler: handler, maxWrite: Int(options.maxWrite), maxChain: 2 * max(options.maxQueueSize, 1), logger: logger)
            : nil
        processor?.queue = q
        let completionChain = ChainBuffers(capacity: 2 * max(options.maxQueueSize, 1))
        var fds = [pollfd(fd: q.kickFD, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: q.wakeFD, events: Int16(POLLIN), revents: 0)]
        var counter: UInt64 = 0
        logger.debug("queue started", metadata: ["queue": "\(q.index)"])
        while !q.stopRequested.load(ordering: .acquiring) {
            if q.enabled.load(ordering: .acquiring) && !isBroken {
                drain(q, processor, completionChain)
            }
            do { _ = try systemCall { poll(&fds, 2, -1) } } catch {
                markBroken(queue: q.index, "poll failed: errno \(error.rawValue)")
                break
            }
            if fds[0].revents & Int16(POLLIN) != 0 { _ = read(q.kickFD, &counter, 8) }
            if fds[0].revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0 {
                // A kick fd that went bad: wait for the control thread to stop us.
                fds[0].fd = -1
            }
            if fds[1].revents & Int16(POLLIN) != 0 { _ = read(q.wakeFD, &counter, 8) }
        }
        logger.debug("queue stopped", metadata: ["queue": "\(q.index)"])
    }

    /// Takes every available chain; with EVENT_IDX re-checks the ring after publishing
    /// avail_event, so no kick can be missed. `processor` nil: pool mode.
    private func drain(_ q: Virtqueue, _ processor: ChainProcessor?, _ completionChain: ChainBuffers) {
        pthread_rwlock_rdlock(lock); defer { pthread_rwlock_unlock(lock) }
        guard let ring = q.ring else { return }
        let memory = self.memory
        let eventIndex = self.eventIndex, indirect = self.indirect
        let log = self.activeLog
        if q.hasCompletions.load(ordering: .acquiring) {
            completeDeferred(q, ring, memory, completionChain)
        }
        while true {
            var processed = false
            while !q.stopRequested.load(ordering: .relaxed) && !isBroken {
                let available = ring.availableIndex
                if available == q.lastAvail { break }
                if available &- q.lastAvail > ring.size {
                    markBroken(queue: q.index, "avail index \(available) is more than the queue size ahead of \(q.lastAvail)")
                    return
                }
                while q.lastAvail != available {
                    let head = ring.availableHead(at: q.lastAvail)
                    q.lastAvail &+= 1
                    guard let processor else {
                        if !q.work!.push(head) {
                            markBroken(queue: q.index, "more chains in flight than the queue holds")
                            return
                        }
                        continue
                    }
                    do {
                        try DescriptorChain.walk(head: head, ring: ring, memory: memory, indirectAllowed: indirect, into: processor.chain)
                    } catch {
                        markBroken(queue: q.index, error.description)
                        signalEventFD(q.errFD)
                        // What completed before the bad chain is still reported.
                        if processed { notify(q, ring, eventIndex: eventIndex) }
                        return
                    }
                    processor.head = head
                    guard let length = processor.process(queue: q.index) else { continue }   // deferred
                    ring.putUsed(at: q.usedIndex, id: head, length: length)
                    q.usedIndex &+= 1
                    ring.publishUsedIndex(q.usedIndex)
                    if let log { logCompletion(log, q, ring, processor.chain, length, memory) }
                    processed = true
                    // With EVENT_IDX the driver says which completion it wants to hear about
                    // (used_event) and stops asking while it reaps: checking after each one
                    // interrupts it once per round of its own, as early as it can use it,
                    // instead of holding completions back until our whole batch is done
                    // (which makes client and server take turns instead of overlapping).
                    if eventIndex { notify(q, ring, eventIndex: true) }
                }
            }
            if processed && !eventIndex { notify(q, ring, eventIndex: false) }
            guard !isBroken, !q.stopRequested.load(ordering: .relaxed) else { return }
            // A driver that was just notified usually posts its next requests within
            // microseconds: watch the ring for a moment before going to sleep. avail_event
            // stays where it was, so the driver does not kick meanwhile, and neither side
            // pays for a wake-up.
            if processed && pollAvailable(q, ring) { continue }
            guard eventIndex else { return }
            ring.setAvailableEvent(q.lastAvail)
            if let log, let base = q.usedLogAddress {
                log.mark(base + UInt64(SplitVirtqueue.availableEventOffset(size: Int(ring.size))), length: 2)
            }
            ferry_fence_seq_cst()
            if ring.availableIndex == q.lastAvail { return }
        }
    }

    /// Busy-polls the avail ring for up to `options.pollNanoseconds`; true when new
    /// chains arrived. Gives up early when the queue is stopping or the device broke.
    @inline(__always)
    private func pollAvailable(_ q: Virtqueue, _ ring: RingView) -> Bool {
        let budget = options.pollNanoseconds
        guard budget > 0 else { return false }
        let deadline = ferry_monotonic_ns() &+ budget
        while true {
            for _ in 0..<64 {
                if ring.availableIndex != q.lastAvail { return true }
                ferry_cpu_relax()
            }
            if q.stopRequested.load(ordering: .relaxed) || isBroken { return false }
            if ferry_monotonic_ns() >= deadline { return false }
        }
    }

    /// A pool thread: runs the chains its queue's thread hands it; used-ring pushes and
    /// notifications are serialized by the queue's used lock.
    private func poolServe(_ q: Virtqueue, _ work: HeadQueue) {
        let processor = ChainProcessor(handler: handler, maxWrite: Int(options.maxWrite),
                                       maxChain: 2 * max(options.maxQueueSize, 1), logger: logger)
        processor.queue = q
        while let head = work.pop() {
            pthread_rwlock_rdlock(lock)
            defer { pthread_rwlock_unlock(lock) }
            guard let ring = q.ring, !isBroken else { continue }
            do {
                try DescriptorChain.walk(head: head, ring: ring, memory: memory, indirectAllowed: indirect, into: processor.chain)
            } catch {
                markBroken(queue: q.index, error.description)
                signalEventFD(q.errFD)
                continue
            }
            processor.head = head
            guard let length = processor.process(queue: q.index) else { continue }   // deferred
            q.usedLock.lock()
            ring.putUsed(at: q.usedIndex, id: head, length: length)
            q.usedIndex &+= 1
            ring.publishUsedIndex(q.usedIndex)
            if let log = activeLog { logCompletion(log, q, ring, processor.chain, length, memory) }
            notify(q, ring, eventIndex: eventIndex)
            q.usedLock.unlock()
        }
    }

    /// Logs what completing one chain wrote: the reply bytes in the guest's buffers (the
    /// used length counts them from the first writable byte), the used element and the
    /// used idx (at the ring's log address, when the front-end asked for ring logging).
    /// `putUsed(at: q.usedIndex - 1)` was the element.
    private func logCompletion(_ log: DirtyLog, _ q: Virtqueue, _ ring: RingView, _ chain: ChainBuffers,
                               _ length: UInt32, _ memory: GuestMemory) {
        log.mark(written: chain.writable, count: Int(length), memory: memory)
        guard let base = q.usedLogAddress else { return }
        let slot = Int((q.usedIndex &- 1) % ring.size)
        log.mark(base + UInt64(SplitVirtqueue.usedEntryOffset(slot)), length: 8)
        log.mark(base + UInt64(SplitVirtqueue.usedIndexOffset), length: 2)
    }

    /// Puts the chains whose deferred replies came (granted locks) in the used ring. The
    /// chain is walked again, through the same checks as a new request: the guest's
    /// buffers are only ever reached through a translated, bounds-checked walk. Under the
    /// read lock, on the queue's thread (with the used lock in pool mode); or on the control
    /// thread with the worker stopped (`settleDeferred`).
    private func completeDeferred(_ q: Virtqueue, _ ring: RingView, _ memory: GuestMemory, _ chain: ChainBuffers,
                                  generation: UInt64? = nil) {
        let ready = q.completions.withLock { list -> [DeferredCompletion] in
            q.hasCompletions.store(false, ordering: .releasing)
            defer { list.removeAll(keepingCapacity: true) }
            return list
        }
        let current = generation ?? q.generation.load(ordering: .acquiring)
        let pool = q.work != nil
        if pool { q.usedLock.lock() }
        defer { if pool { q.usedLock.unlock() } }
        var completed = false
        for c in ready where c.generation == current {
            q.deferredHeads.withLock { $0[c.head] = nil }
            guard putDeferredReply(q, ring, memory, chain, head: c.head, c.reply) else { return }
            completed = true
        }
        if completed { notify(q, ring, eventIndex: eventIndex) }
    }

    /// Completes deferred chain `head` with `reply`; false when the chain broke the device.
    private func putDeferredReply(_ q: Virtqueue, _ ring: RingView, _ memory: GuestMemory, _ chain: ChainBuffers,
                                  head: UInt16, _ reply: [UInt8]) -> Bool {
        do {
            try DescriptorChain.walk(head: head, ring: ring, memory: memory, indirectAllowed: indirect, into: chain)
        } catch {
            markBroken(queue: q.index, error.description)
            signalEventFD(q.errFD)
            return false
        }
        var length: UInt32 = 0
        if reply.count <= chain.writableBytes {
            _ = reply.withUnsafeBytes { IOVectors(base: chain.writable.base, count: chain.writable.count).copyIn($0) }
            length = UInt32(reply.count)
        } else {
            logger.warning("deferred reply does not fit the guest's buffers; dropped", metadata: ["queue": "\(q.index)"])
        }
        ring.putUsed(at: q.usedIndex, id: head, length: length)
        q.usedIndex &+= 1
        ring.publishUsedIndex(q.usedIndex)
        if let log = activeLog { logCompletion(log, q, ring, chain, length, memory) }
        return true
    }

    /// The ring stopped (its worker joined): replies deferred until now can no longer come
    /// (later ones are dropped). `answering`: the ring goes on elsewhere (GET_VRING_BASE),
    /// so every chain still deferred is used now: with its reply when the lock was granted
    /// meanwhile, else ENOLCK. Otherwise (a reset, a lost connection) they are forgotten.
    private func settleDeferred(_ q: Virtqueue, answering: Bool) {
        let ended = q.generation.wrappingAdd(1, ordering: .sequentiallyConsistent).oldValue
        if answering, let ring = q.ring, !isBroken, !q.deferredHeads.withLock({ $0.isEmpty }) {
            let chain = ChainBuffers(capacity: 2 * max(options.maxQueueSize, 1))
            completeDeferred(q, ring, memory, chain, generation: ended)
            var answered = false
            for (head, unique) in q.deferredHeads.withLock({ $0 }) {
                var reply = [UInt8](repeating: 0, count: FUSEOutHeader.size)
                reply.withUnsafeMutableBytes { FUSEReply.writeHeader(to: $0.baseAddress!, length: FUSEOutHeader.size, error: -ENOLCK, unique: unique) }
                guard putDeferredReply(q, ring, memory, chain, head: head, reply) else { break }
                answered = true
            }
            if answered { notify(q, ring, eventIndex: eventIndex) }
        }
        q.deferredHeads.withLock { $0.removeAll() }
        q.completions.withLock { $0.removeAll() }
        q.hasCompletions.store(false, ordering: .releasing)
    }

    private func notify(_ q: Virtqueue, _ ring: RingView, eventIndex: Bool) {
        ferry_fence_seq_cst()   // used idx before reading used_event / flags
        if eventIndex {
            let old = q.signalledUsed, valid = q.signalledUsedValid
            q.signalledUsed = q.usedIndex
            q.signalledUsedValid = true
            if valid && !SplitVirtqueue.needsEvent(event: ring.usedEvent, new: q.usedIndex, old: old) { return }
        } else if ring.availableFlags & SplitVirtqueue.availableNoInterrupt != 0 {
            return
        }
        signalEventFD(q.callFD)
    }
}
