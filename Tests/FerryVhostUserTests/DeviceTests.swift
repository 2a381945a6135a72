import CFerry
import FerryCore
@testable import FerryVhostUser
import FerryVirtio
import Foundation
import Logging
import Testing

/// The device's protocol state machine and queue workers, driven with messages directly
/// (no socket), over fake guest memory.
@Suite struct DeviceTests {
    let g: FakeGuest
    let handler = RecordingHandler()
    let device: VhostUserFSDevice
    let kick = ferry_eventfd(0, Int32(FERRY_EFD_CLOEXEC | FERRY_EFD_NONBLOCK))
    let call = ferry_eventfd(0, Int32(FERRY_EFD_CLOEXEC | FERRY_EFD_NONBLOCK))

    init() throws { try self.init(threadPoolSize: 0) }

    /// `serving`: the device's handler instead of `handler`.
    init(threadPoolSize: Int, serving: (any FUSERequestHandler)? = nil) throws {
        g = try FakeGuest(queueSize: 8)
        var logger = Logger(label: "test"); logger.logLevel = .critical
        device = VhostUserFSDevice(handler: serving ?? handler, options: .init(maxRequestQueues: 2, maxQueueSize: 256, threadPoolSize: threadPoolSize), logger: logger)
    }

    @discardableResult
    func send(_ request: VhostUserRequest, _ payload: [UInt8] = [], fds: [Int32] = []) -> ControlReply {
        var fds = fds
        let r = payload.withUnsafeBytes { device.handle(request: request.rawValue, flags: 1, payload: $0, fds: &fds) }
        for f in fds { close(f) }
        return r
    }
    func u64(_ v: UInt64) -> [UInt8] { VhostUserFSDevice.bytes(v) }
    func state(_ i: UInt32, _ n: UInt32) -> [UInt8] { VhostUserFSDevice.bytes(VringState(index: i, num: n)) }
    func payload(of r: ControlReply) -> UInt64? {
        if case .payload(let b) = r, b.count == 8 { return b.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) } }
        return nil
    }

    /// Features, memory, queue 1 configured and started (with EVENT_IDX or not).
    func start(eventIndex: Bool) {
        var features = VirtioFeature.version1 | VirtioFeature.ringIndirectDescriptors | VirtioFeature.protocolFeatures
        if eventIndex { features |= VirtioFeature.ringEventIndex }
        #expect(send(.setFeatures, u64(features)) == .none(succeeded: true))
        var table = [UInt8](repeating: 0, count: 8 + 32)
        table.withUnsafeMutableBytes {
            _ = MemoryTable.encode([MemoryRegionDescription(guestPhysicalAddress: FakeGuest.guestBase, size: UInt64(g.size),
                                                            userAddress: FakeGuest.userBase, mmapOffset: 0)], to: $0.baseAddress!)
        }
        #expect(send(.setMemTable, table, fds: [dup(g.fd)]) == .none(succeeded: true))
        #expect(send(.setVringNum, state(1, UInt32(g.queueSize))) == .none(succeeded: true))
        #expect(send(.setVringBase, state(1, 0)) == .none(succeeded: true))
        var a = g.vringAddress; a.index = 1
        var addr = [UInt8](repeating: 0, count: VringAddress.size)
        addr.withUnsafeMutableBytes { a.encode(to: $0.baseAddress!) }
        #expect(send(.setVringAddr, addr) == .none(succeeded: true))
        #expect(send(.setVringKick, u64(1), fds: [dup(kick)]) == .none(succeeded: true))
        #expect(send(.setVringCall, u64(1), fds: [dup(call)]) == .none(succeeded: true))
        #expect(send(.setVringEnable, state(1, 1)) == .none(succeeded: true))
    }

    func kickAndWait(forUsed n: UInt16) -> Bool {
        signalEventFD(kick)
        for _ in 0..<500 {
            if g.usedIndex == n { return true }
            usleep(2000)
        }
        return false
    }

    func callCount() -> UInt64 {
        var v: UInt64 = 0
        return read(call, &v, 8) == 8 ? v : 0
    }

    /// A GETATTR-like request at descriptors (2*slot, 2*slot+1).
    func post(unique: UInt64, slot: Int) {
        let req = fuseRequest(opcode: 3, unique: unique)
        let a = g.buffer(req), out = g.buffer(count: 64)
        g.setDescriptor(2 * slot, address: a, length: 40, flags: SplitVirtqueue.Descriptor.next, next: UInt16(2 * slot + 1))
        g.setDescriptor(2 * slot + 1, address: out, length: 64, flags: SplitVirtqueue.Descriptor.write)
        g.makeAvailable(UInt16(2 * slot))
    }

    @Test func negotiationAnswers() {
        #expect(payload(of: send(.getFeatures)) == VhostUserFSDevice.offeredFeatures)
        #expect(payload(of: send(.getProtocolFeatures)) == VhostUserFSDevice.offeredProtocolFeatures)
        #expect(payload(of: send(.getQueueNum)) == 3)
        #expect(payload(of: send(.getMaxMemSlots)) == 32)
        #expect(send(.setProtocolFeatures, u64(VhostUserProtocolFeature.replyAck | VhostUserProtocolFeature.multiqueue)) == .none(succeeded: true))
        #expect(send(.setProtocolFeatures, u64(VhostUserProtocolFeature.inflightSharedMemory)) == .none(succeeded: false))
        #expect(send(.setFeatures, u64(VirtioFeature.ringPacked)) == .none(succeeded: false))
        #expect(send(.setVringNum, state(1, 100)) == .none(succeeded: false))        // not a power of two
        #expect(send(.setVringNum, state(1, 512)) == .none(succeeded: false))        // above maxQueueSize
        #expect(send(.setVringNum, state(9, 8)) == .none(succeeded: false))          // no such queue
        #expect(send(.setVringKick, u64(1 | 0x100)) == .none(succeeded: false))      // polling
        #expect(send(.setLogBase, u64(0)) == .close("SET_LOG_BASE without LOG_SHMFD"))
        #expect(send(.getConfig, [UInt8](repeating: 0, count: 12 + 40)) == .payload([]))
        #expect(send(.setVringNum, [1, 2]) == .close("setVringNum with a 2-byte payload"))
        #expect(send(.setVringAddr, [UInt8](repeating: 0, count: VringAddress.size)) == .none(succeeded: false))  // before SET_VRING_NUM
        var fds: [Int32] = []
        #expect([UInt8]().withUnsafeBytes { device.handle(request: 999, flags: 1, payload: $0, fds: &fds) } == .none(succeeded: false))
    }

    @Test(arguments: [false, true]) func servesRequestsAndNotifies(eventIndex: Bool) {
        start(eventIndex: eventIndex)
        post(unique: 1, slot: 0)
        #expect(kickAndWait(forUsed: 1))
        #expect(g.usedElement(0).id == 0 && g.usedElement(0).length == 24)
        usleep(5000)
        #expect(callCount() == 1)
        // Several at once: one notification for the batch (the driver saw used entry 0: used_event 1).
        g.setUsedEvent(1)
        post(unique: 2, slot: 1); post(unique: 3, slot: 2); post(unique: 4, slot: 3)
        #expect(kickAndWait(forUsed: 4))
        usleep(5000)
        #expect(callCount() == 1)
        #expect(handler.seen.withLock { $0.map { $0.request[8] } } == [1, 2, 3, 4])
        if eventIndex {
            // The device asked to hear about avail index 4 (the next one it will look at).
            let availEvent = (g.host + g.usedOffset).loadUnaligned(fromByteOffset: SplitVirtqueue.availableEventOffset(size: 8), as: UInt16.self)
            #expect(availEvent == 4)
            // used_event far ahead: no interrupt.
            g.setUsedEvent(100)
            post(unique: 5, slot: 0)
            #expect(kickAndWait(forUsed: 5))
            usleep(5000)
            #expect(callCount() == 0)
        } else {
            // VRING_AVAIL_F_NO_INTERRUPT suppresses the call.
            (g.host + g.availOffset).storeBytes(of: SplitVirtqueue.availableNoInterrupt, as: UInt16.self)
            post(unique: 5, slot: 0)
            #expect(kickAndWait(forUsed: 5))
            usleep(5000)
            #expect(callCount() == 0)
        }
        // GET_VRING_BASE stops the ring and reports where it is.
        #expect(send(.getVringBase, state(1, 0)) == .payload(VhostUserFSDevice.bytes(VringState(index: 1, num: 5))))
        #expect(!device.queues[1].isRunning)
    }

    @Test func disabledRingIsNotServedUntilEnabled() {
        start(eventIndex: true)
        #expect(send(.setVringEnable, state(1, 0)) == .none(succeeded: true))
        post(unique: 1, slot: 0)
        signalEventFD(kick)
        usleep(50_000)
        #expect(g.usedIndex == 0)
        #expect(send(.setVringEnable, state(1, 1)) == .none(succeeded: true))
        #expect(kickAndWait(forUsed: 1))
    }

    @Test func badChainBreaksTheDeviceUntilReset() {
        start(eventIndex: false)
        g.setDescriptor(5, address: 0x10, length: 16)                       // outside guest memory
        g.makeAvailable(5)
        signalEventFD(kick)
        var broken = false
        for _ in 0..<500 where !broken { broken = device.isBroken; usleep(2000) }
        #expect(broken)
        #expect(device.brokenReason?.contains("queue 1") == true)
        // Later requests are not served…
        post(unique: 2, slot: 0)
        #expect(!kickAndWait(forUsed: 1))
        // …and the control plane still answers.
        #expect(payload(of: send(.getFeatures)) == VhostUserFSDevice.offeredFeatures)
        // RESET_DEVICE starts clean.
        #expect(send(.resetDevice) == .none(succeeded: true))
        #expect(!device.isBroken && device.brokenReason == nil)
        #expect(handler.lost.load(ordering: .relaxed) == 1)
        #expect(!device.queues[1].isRunning)
    }

    @Test func memoryTableReplacedWhileRunning() {
        start(eventIndex: true)
        post(unique: 1, slot: 0)
        #expect(kickAndWait(forUsed: 1))
        // The same memory again through ADD/REM: remove, then add back; the ring keeps working.
        var one = [UInt8](repeating: 0, count: SingleMemoryRegion.size)
        let d = MemoryRegionDescription(guestPhysicalAddress: FakeGuest.guestBase, size: UInt64(g.size), userAddress: FakeGuest.userBase, mmapOffset: 0)
        one.withUnsafeMutableBytes { _ = SingleMemoryRegion.encode(d, to: $0.baseAddress!) }
        #expect(send(.remMemReg, one) == .none(succeeded: true))
        #expect(device.queues[1].ring == nil)
        #expect(send(.addMemReg, one, fds: [dup(g.fd)]) == .none(succeeded: true))
        #expect(device.queues[1].ring != nil)
        post(unique: 2, slot: 1)
        #expect(kickAndWait(forUsed: 2))
        #expect(send(.addMemReg, one, fds: [dup(g.fd)]) == .none(succeeded: false))   // overlaps
    }

    @Test(arguments: [false, true]) func threadPoolServesEveryChain(eventIndex: Bool) throws {
        let t = try DeviceTests(threadPoolSize: 2)
        t.start(eventIndex: eventIndex)
        #expect(t.device.queues[1].poolThreads.count == 2)
        t.post(unique: 1, slot: 0); t.post(unique: 2, slot: 1); t.post(unique: 3, slot: 2); t.post(unique: 4, slot: 3)
        #expect(t.kickAndWait(forUsed: 4))
        let ids = Set((0..<4).map { t.g.usedElement(UInt16($0)).id })
        #expect(ids == [0, 2, 4, 6])
        #expect((0..<4).allSatisfy { t.g.usedElement(UInt16($0)).length == 24 })
        usleep(5000)
        #expect(t.callCount() >= 1)
        #expect(t.handler.seen.withLock { Set($0.map { $0.request[8] }) } == [1, 2, 3, 4])
        #expect(t.send(.getVringBase, t.state(1, 0)) == .payload(VhostUserFSDevice.bytes(VringState(index: 1, num: 4))))
        #expect(t.device.queues[1].poolThreads.isEmpty)
    }
}
