import CFerry
import FerryCore
@testable import FerryVhostUser
import FerryVirtio
import Foundation
import Testing

/// Dirty-page logging for live migration, driven as QEMU drives it: the rings run, then
/// SET_LOG_BASE (a memfd bitmap), SET_FEATURES with VHOST_F_LOG_ALL and SET_VRING_ADDR
/// with VHOST_VRING_F_LOG arrive while they keep running. Every page the device writes
/// must be marked, and no other.
@Suite struct DirtyLogTests {
    static let logBytes = 4096

    /// Guest offsets of the READ's buffers, chosen so the reply data straddles a page
    /// boundary and its buffer's last page stays untouched.
    static let requestOffset = 0x1_0000
    static let headerOffset = 0x2_0000
    static let dataOffset = 0x3_0000 - 100
    static let dataRoom = 8192
    static let readLength = 200

    static func page(_ guestOffset: Int) -> UInt64 { (FakeGuest.guestBase + UInt64(guestOffset)) / LogDescription.pageSize }

    func makeLogFD(bytes: Int = logBytes) -> Int32 {
        let fd = ferry_memfd_create("dirty-log", UInt32(FERRY_MFD_CLOEXEC))
        precondition(fd >= 0 && ftruncate(fd, off_t(bytes)) == 0)
        return fd
    }

    /// The pages whose bits are set in the log.
    func markedPages(_ fd: Int32) -> Set<UInt64> {
        var bytes = [UInt8](repeating: 0, count: Self.logBytes)
        #expect(pread(fd, &bytes, bytes.count, 0) == bytes.count)
        var pages: Set<UInt64> = []
        for (i, b) in bytes.enumerated() where b != 0 {
            for bit in 0..<8 where b & (1 << bit) != 0 { pages.insert(UInt64(i * 8 + bit)) }
        }
        return pages
    }

    func setLogBase(_ t: DeviceTests, _ fd: Int32, size: Int = logBytes) -> ControlReply {
        var payload = [UInt8](repeating: 0, count: LogDescription.size)
        payload.withUnsafeMutableBytes { LogDescription(size: UInt64(size), offset: 0).encode(to: $0.baseAddress!) }
        return t.send(.setLogBase, payload, fds: [dup(fd)])
    }

    func setRingAddress(_ t: DeviceTests, logged: Bool) {
        var a = t.g.vringAddress
        a.index = 1
        if logged {
            a.flags = VringAddress.logFlag
            a.log = FakeGuest.guestBase + UInt64(t.g.usedOffset)
        }
        var bytes = [UInt8](repeating: 0, count: VringAddress.size)
        bytes.withUnsafeMutableBytes { a.encode(to: $0.baseAddress!) }
        #expect(t.send(.setVringAddr, bytes) == .none(succeeded: true))
    }

    /// A READ (opcode 15) whose reply is a 16-byte header buffer and a data buffer.
    /// One READ served on ring 0, then the ring stopped (GET_VRING_BASE): what the log
    /// holds afterwards is all the device will mark for it.
    func readOnceAndStop(_ t: DeviceTests) {
        postRead(t, unique: 1, slot: 0)
        #expect(t.kickAndWait(forUsed: 1))
        _ = t.send(.getVringBase, t.state(1, 0))
    }

    func postRead(_ t: DeviceTests, unique: UInt64, slot: Int) {
        let request = fuseRequest(opcode: 15, unique: unique, body: [UInt8](repeating: 0, count: 40))
        (t.g.host + Self.requestOffset).copyMemory(from: request, byteCount: request.count)
        let w = SplitVirtqueue.Descriptor.write, n = SplitVirtqueue.Descriptor.next
        let d = UInt16(3 * slot)
        t.g.setDescriptor(Int(d), address: FakeGuest.guestBase + UInt64(Self.requestOffset), length: UInt32(request.count), flags: n, next: d + 1)
        t.g.setDescriptor(Int(d) + 1, address: FakeGuest.guestBase + UInt64(Self.headerOffset), length: 16, flags: w | n, next: d + 2)
        t.g.setDescriptor(Int(d) + 2, address: FakeGuest.guestBase + UInt64(Self.dataOffset), length: UInt32(Self.dataRoom), flags: w)
        t.g.makeAvailable(d)
    }

    func start(threadPoolSize: Int, eventIndex: Bool) throws -> DeviceTests {
        let t = try DeviceTests(threadPoolSize: threadPoolSize)
        t.handler.readData = [UInt8](repeating: 0x5A, count: Self.readLength)
        #expect(t.send(.setProtocolFeatures, t.u64(VhostUserProtocolFeature.logSharedMemory | VhostUserProtocolFeature.replyAck))
                == .none(succeeded: true))
        t.start(eventIndex: eventIndex)
        return t
    }

    static let features = VirtioFeature.version1 | VirtioFeature.ringIndirectDescriptors | VirtioFeature.protocolFeatures

    @Test(arguments: [(0, false), (0, true), (2, true)])
    func everyPageTheDeviceWritesIsMarkedAndNoOther(threadPoolSize: Int, eventIndex: Bool) throws {
        let t = try start(threadPoolSize: threadPoolSize, eventIndex: eventIndex)
        let log = makeLogFD()
        defer { close(log) }
        // QEMU starts logging on running rings: the log, then LOG_ALL, then each ring's address.
        let reply = setLogBase(t, log)
        #expect(reply == .payload({ var b = [UInt8](repeating: 0, count: 16); b.withUnsafeMutableBytes {
            LogDescription(size: UInt64(Self.logBytes), offset: 0).encode(to: $0.baseAddress!) }; return b }()))
        let features = Self.features | (eventIndex ? VirtioFeature.ringEventIndex : 0)
        #expect(t.send(.setFeatures, t.u64(features | VirtioFeature.logAll)) == .none(succeeded: true))
        setRingAddress(t, logged: true)
        #expect(t.device.isLogging)
        // Nothing yet but the used ring's page: with EVENT_IDX a running worker writes
        // avail_event whenever it re-arms (a real write to guest memory, which the log must
        // show), and a pool's worker may do so as soon as the ring address is set.
        #expect(markedPages(log).isSubset(of: [Self.page(t.g.usedOffset)]))

        postRead(t, unique: 1, slot: 0)
        #expect(t.kickAndWait(forUsed: 1))
        #expect(t.g.usedElement(0).length == UInt32(16 + Self.readLength))
        #expect(t.g.bytes(at: FakeGuest.guestBase + UInt64(Self.dataOffset), count: Self.readLength) == t.handler.readData)
        _ = t.send(.getVringBase, t.state(1, 0))    // stops the ring: every write of the device is done

        // The used ring (element, idx and, with EVENT_IDX, avail_event: one page here), the
        // reply header, and the two pages the 200 data bytes straddle. Not the request's
        // page, not the descriptor table (the device never writes it; same page as the
        // rings here, so the request page is the check), not the data buffer's last page.
        let ringPage = Self.page(t.g.usedOffset)
        let expected: Set<UInt64> = [ringPage, Self.page(Self.headerOffset), Self.page(Self.dataOffset),
                                     Self.page(Self.dataOffset + Self.readLength - 1)]
        #expect(Self.page(Self.dataOffset) != Self.page(Self.dataOffset + Self.readLength - 1))
        #expect(markedPages(log) == expected)
        #expect(!markedPages(log).contains(Self.page(Self.requestOffset)))
        #expect(!markedPages(log).contains(Self.page(Self.dataOffset + Self.dataRoom - 1)))
    }

    @Test func withoutLogAllNothingIsMarked() throws {
        let t = try start(threadPoolSize: 0, eventIndex: true)
        let log = makeLogFD()
        defer { close(log) }
        #expect(setLogBase(t, log) != .close(""))
        setRingAddress(t, logged: true)
        #expect(!t.device.isLogging)
        readOnceAndStop(t)
        #expect(markedPages(log).isEmpty)
    }

    @Test func loggingStopsWhenLogAllIsDropped() throws {
        let t = try start(threadPoolSize: 0, eventIndex: false)
        let log = makeLogFD()
        defer { close(log) }
        _ = setLogBase(t, log)
        #expect(t.send(.setFeatures, t.u64(Self.features | VirtioFeature.logAll)) == .none(succeeded: true))
        setRingAddress(t, logged: true)
        // Migration cancelled: QEMU sends the features again without LOG_ALL.
        #expect(t.send(.setFeatures, t.u64(Self.features)) == .none(succeeded: true))
        setRingAddress(t, logged: false)
        #expect(!t.device.isLogging)
        readOnceAndStop(t)
        #expect(markedPages(log).isEmpty)
    }

    @Test func ringWithoutTheLogFlagLogsOnlyTheData() throws {
        let t = try start(threadPoolSize: 0, eventIndex: false)
        let log = makeLogFD()
        defer { close(log) }
        _ = setLogBase(t, log)
        #expect(t.send(.setFeatures, t.u64(Self.features | VirtioFeature.logAll)) == .none(succeeded: true))
        readOnceAndStop(t)
        #expect(markedPages(log) == [Self.page(Self.headerOffset), Self.page(Self.dataOffset),
                                     Self.page(Self.dataOffset + Self.readLength - 1)])
    }

    /// QEMU 10 negotiates protocol features once, then sends RESET_DEVICE (at every guest
    /// reset, and while it sets the device up) and never negotiates them again: the
    /// agreement must outlive the reset, or SET_LOG_BASE finds LOG_SHMFD "not agreed".
    @Test func protocolFeaturesSurviveAResetOfTheDevice() throws {
        let t = try DeviceTests(threadPoolSize: 0)
        #expect(t.send(.setProtocolFeatures, t.u64(VhostUserProtocolFeature.logSharedMemory | VhostUserProtocolFeature.replyAck))
                == .none(succeeded: true))
        #expect(t.send(.resetDevice) == .none(succeeded: true))
        let log = makeLogFD()
        defer { close(log) }
        #expect(setLogBase(t, log) != .close("SET_LOG_BASE without LOG_SHMFD"))
    }

    @Test func aLogOutsideItsFileOrWithoutTheFeatureEndsTheConnection() throws {
        let t = try DeviceTests(threadPoolSize: 0)
        let log = makeLogFD()
        defer { close(log) }
        // LOG_SHMFD not agreed.
        if case .close = setLogBase(t, log) {} else { Issue.record("SET_LOG_BASE without LOG_SHMFD was accepted") }
        #expect(t.send(.setProtocolFeatures, t.u64(VhostUserProtocolFeature.logSharedMemory)) == .none(succeeded: true))
        // Larger than the memfd: touching it would be SIGBUS.
        if case .close = setLogBase(t, log, size: 2 * Self.logBytes) {} else { Issue.record("a log past its file's end was accepted") }
        if case .close = t.send(.setLogBase, [UInt8](repeating: 0, count: 8), fds: [dup(log)]) {} else {
            Issue.record("a short SET_LOG_BASE was accepted")
        }
        #expect(setLogBase(t, log) != .close(""))
    }
}
