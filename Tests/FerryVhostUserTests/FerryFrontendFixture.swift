import CFerry
import FerryCore
import FerryFUSE
import FerryPOSIX
import FerryVhostFrontend
import FerryVhostUser
import FerryTestSupport
import FerryVirtio
import Foundation
import Glibc
import Logging
import Testing

/// Ferry's own back-end, in process, on a temporary socket over a temporary POSIX
/// export: what the FerryFrontend and Hostile suites drive through the Swift front-end.
/// @unchecked Sendable: `finished` is touched only by the test's own thread (`isAlive`, `stop`); the
/// serving thread signals `done`, a semaphore.
final class FerryDaemon: @unchecked Sendable {
    let top: String
    /// The exported directory: `top/export`, or the one given (two daemons over one
    /// directory, as a migration's source and destination).
    let export: String
    var socketPath: String { top + "/vhost.sock" }
    let server: FUSEServer<POSIXDriver>
    let backend: VhostUserFSBackend
    private let done = DispatchSemaphore(value: 0)
    private var finished = false

    init(policy: ExportPolicy = ExportPolicy(), options: VhostUserFSOptions = .init(), exporting directory: String? = nil,
         posix: POSIXOptions = .init()) throws {
        var template = Array("/tmp/ferry-hostile-XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw POSIXError(.EIO) }
        top = String(nulTerminated: template)
        export = directory ?? top + "/export"
        if directory == nil { try FileManager.default.createDirectory(atPath: export, withIntermediateDirectories: false) }
        var logger = Logger(label: "ferry-hostile-test")
        logger.logLevel = ProcessInfo.processInfo.environment["FERRY_TEST_LOG"] == nil ? .critical : .debug
        server = try FUSEServer(driver: POSIXDriver(root: export, options: posix), policy: policy, logger: logger)
        backend = try VhostUserFSBackend(socketPath: top + "/vhost.sock", handler: server, options: options, logger: logger)
        let b = backend, d = done
        Thread { b.run(); d.signal() }.start()
    }

    deinit {
        _ = stop()
        try? FileManager.default.removeItem(atPath: top)
    }

    /// Whether `run()` is still going (it never returns for a front-end's misbehaviour).
    var isAlive: Bool {
        guard !finished else { return false }
        if done.wait(timeout: .now()) == .success { finished = true; return false }
        return backend.state != .stopped
    }

    @discardableResult
    func stop() -> Bool {
        guard !finished else { return true }
        backend.stop()
        finished = done.wait(timeout: .now() + 10) == .success
        return finished
    }

    /// Waits (polling) until `condition` holds, up to `seconds`.
    static func eventually(_ seconds: Double = 30, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while !condition() {
            if Date() >= deadline { return false }
            usleep(2_000)
        }
        return true
    }

    /// Waits until the back-end has dropped the previous front-end and listens again.
    func waitUntilListening(seconds: Double = 30) -> Bool {
        Self.eventually(seconds) { backend.state == .listening }
    }

    var isBroken: Bool { if case .broken = backend.state { return true } else { return false } }
    var brokenReason: String? { if case .broken(let r) = backend.state { return r } else { return nil } }

    /// The check every hostile test ends with: the daemon is still running and a brand
    /// new front-end gets a clean, working device (INIT, GETATTR of the root, LOOKUP of
    /// a host file, CREATE + WRITE + READ).
    func newConnectionWorks(_ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(isAlive, "daemon died", sourceLocation: sourceLocation)
        #expect(waitUntilListening(), "back-end did not return to listening: \(backend.state)", sourceLocation: sourceLocation)
        let servedBefore = backend.connectionsServed
        do {
            let session = try FUSESession(socketPath: socketPath)
            #expect(backend.connectionsServed == servedBefore + 1, sourceLocation: sourceLocation)
            #expect(backend.state == .connected, "a fresh connection is not clean: \(backend.state)", sourceLocation: sourceLocation)
            let q = session.queue
            let attr = try q.getattr(nodeID: FUSESession.rootNodeID)
            #expect(attr.attr.mode & 0o170000 == 0o040000, sourceLocation: sourceLocation)
            let name = "probe-\(servedBefore)"
            let (entry, open) = try q.create(parent: FUSESession.rootNodeID, name: name, flags: O_RDWR, mode: 0o644)
            #expect(try q.write(nodeID: entry.nodeID, fh: open.fh, offset: 0, data: Array("alive".utf8)) == 5, sourceLocation: sourceLocation)
            #expect(try q.read(nodeID: entry.nodeID, fh: open.fh, offset: 0, size: 64) == Array("alive".utf8), sourceLocation: sourceLocation)
            try q.release(nodeID: entry.nodeID, fh: open.fh)
            #expect(try q.lookup(parent: FUSESession.rootNodeID, name: name).attr.size == 5, sourceLocation: sourceLocation)
            try q.unlink(parent: FUSESession.rootNodeID, name: name)
        } catch {
            Issue.record("a new connection after the hostile one failed: \(error)", sourceLocation: sourceLocation)
        }
        #expect(waitUntilListening(), sourceLocation: sourceLocation)
        #expect(isAlive, sourceLocation: sourceLocation)
    }
}

/// Open descriptors of this process.
///
/// A count of the whole process: every test that compares counts (or resident memory) runs
/// its body as an exit test, in a process of its own, so the suites running beside it in
/// this one cannot move the numbers.
func openFDCount() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
}

/// What an open descriptor of this process refers to: its /proc/self/fd link, and for an
/// eventfd its id too (every eventfd links to the same "anon_inode:[eventfd]"). Nil when the
/// descriptor is not open.
func openFileIdentity(_ fd: Int32) -> String? {
    guard let link = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)") else { return nil }
    return identity(fd, link: link)
}

/// `link` (the /proc/self/fd link of `fd`), with the id of an eventfd added.
private func identity(_ fd: Int32, link: String) -> String {
    guard link == "anon_inode:[eventfd]",
          let info = try? String(contentsOfFile: "/proc/self/fdinfo/\(fd)", encoding: .utf8),
          let id = info.split(separator: "\n").first(where: { $0.hasPrefix("eventfd-id:") }) else { return link }
    return link + " " + id.dropFirst("eventfd-id:".count).trimmingCharacters(in: .whitespaces)
}

/// The descriptors of this process that refer to what a test handed the back-end (memory
/// files, eventfds) or to a socket (the back-end's connections), by what they refer to.
///
/// A test that checks the back-end closed what it was given compares these, not the whole
/// count: the runtime opens descriptors of its own when it pleases (libdispatch makes its
/// event loop's epoll, eventfd and timerfd on first use, after a test's first count when the
/// machine is loaded: once seen as "fds 218 -> 219" with nothing of the back-end's left open).
struct GivenDescriptors: CustomStringConvertible {
    private(set) var identities: Set<String> = []

    /// Counts `fd`'s file as one handed over (call while `fd` is open).
    mutating func add(_ fd: Int32) {
        if let identity = openFileIdentity(fd) { identities.insert(identity) }
    }

    /// The open descriptors that refer to a given file or to a socket, by fd number.
    func open() -> [Int32: String] {
        var found: [Int32: String] = [:]
        for (fd, link) in openDescriptorLinks() {
            let identity = identity(fd, link: link)
            if identities.contains(identity) || identity.hasPrefix("socket:") { found[fd] = identity }
        }
        return found
    }

    /// Whether no more such descriptors are open than in `before` (what a test saw at its
    /// start) and the `held` ones the test itself still has open. (A test keeps what it gave
    /// open to the end: a closed eventfd's id is given to the next eventfd made.)
    func noMoreOpen(than before: [Int32: String], held: Int = 0) -> Bool { open().count <= before.count + held }

    /// The descriptors open now that `before` did not have, for a failure's message.
    func added(since before: [Int32: String]) -> String {
        let now = open().filter { before[$0.key] != $0.value }.sorted { $0.key < $1.key }
        guard !now.isEmpty else { return "none" }
        let shown = now.prefix(12).map { "\($0.key): \($0.value)" }.joined(separator: ", ")
        return now.count > 12 ? shown + " and \(now.count - 12) more" : shown
    }

    var description: String { identities.sorted().joined(separator: ", ") }
}

/// Passes on what an exit test's child printed (the numbers a test measured).
func relay(_ result: ExitTest.Result?) {
    guard let output = result?.standardOutputContent, !output.isEmpty else { return }
    FileHandle.standardOutput.write(Data(output))
}

/// FUSE request bytes built by hand, for raw and malformed requests.
struct RawFUSE {
    var bytes: [UInt8] = []

    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func zeros(_ n: Int) { bytes += [UInt8](repeating: 0, count: n) }
    mutating func raw(_ b: [UInt8]) { bytes += b }
    mutating func name(_ s: String) { bytes += Array(s.utf8) + [0] }

    /// A whole request: header (with `length` if given, else the true length) + body.
    static func request(_ opcode: UInt32, unique: UInt64, nodeID: UInt64 = 1, body: [UInt8] = [],
                        length: UInt32? = nil, extraLength: Int = 0) -> [UInt8] {
        var r = RawFUSE()
        r.u32(length ?? UInt32(40 + body.count + extraLength)); r.u32(opcode); r.u64(unique); r.u64(nodeID)
        r.u32(0); r.u32(0); r.u32(1); r.u16(0); r.u16(0)
        r.raw(body)
        return r.bytes
    }

    static func request(_ opcode: FUSEOpcode, unique: UInt64, nodeID: UInt64 = 1, body: [UInt8] = [], length: UInt32? = nil) -> [UInt8] {
        request(opcode.rawValue, unique: unique, nodeID: nodeID, body: body, length: length)
    }

    /// fuse_read_in / fuse_write_in (same layout).
    static func readWriteIn(fh: UInt64, offset: UInt64, size: UInt32) -> [UInt8] {
        var r = RawFUSE()
        r.u64(fh); r.u64(offset); r.u32(size); r.u32(0); r.u64(0); r.u32(0); r.u32(0)
        return r.bytes
    }
}

/// One raw request posted straight on a request queue's ring, with every buffer (readable
/// and writable) carved out of the front-end's scratch memory between guard zones, so a
/// write by the device anywhere outside the writable buffers is seen.
struct GuardedRequest {
    static let guardSize = 256
    static let guardByte: UInt8 = 0x5A
    static let fillByte: UInt8 = 0xC3

    let memory: GuestMemory
    /// (offset, length, writable) of every buffer, in chain order.
    var buffers: [(offset: Int, length: Int, writable: Bool)] = []
    /// Offsets of the guard zones (each `guardSize` bytes).
    var guards: [Int] = []
    var readableCopies: [[UInt8]] = []

    init(memory: GuestMemory, readable: [[UInt8]], writableSizes: [Int]) throws {
        self.memory = memory
        func zone(_ n: Int) throws -> Int {
            let g = try memory.allocate(Self.guardSize, alignment: 64)
            memory.pointer(g).initializeMemory(as: UInt8.self, repeating: Self.guardByte, count: Self.guardSize)
            guards.append(g)
            let b = try memory.allocate(max(n, 1), alignment: 1)
            return b
        }
        for segment in readable {
            let b = try zone(segment.count)
            segment.withUnsafeBytes { if $0.count > 0 { memory.pointer(b).copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
            buffers.append((b, segment.count, false))
            readableCopies.append(segment)
        }
        for size in writableSizes {
            let b = try zone(size)
            memory.pointer(b).initializeMemory(as: UInt8.self, repeating: Self.fillByte, count: size)
            buffers.append((b, size, true))
        }
        // The final guard after the last buffer.
        let g = try memory.allocate(Self.guardSize, alignment: 1)
        memory.pointer(g).initializeMemory(as: UInt8.self, repeating: Self.guardByte, count: Self.guardSize)
        guards.append(g)
    }

    var descriptors: [VirtqueueDescriptor] {
        buffers.map { b in
            VirtqueueDescriptor(address: memory.guestAddress(b.offset), length: UInt32(b.length),
                                flags: b.writable ? SplitVirtqueue.Descriptor.write : 0, next: 0)
        }
    }

    var writableCapacity: Int { buffers.filter(\.writable).reduce(0) { $0 + $1.length } }

    /// Whether every guard byte is intact and every readable buffer unchanged.
    var untouchedOutsideWritable: Bool {
        for g in guards {
            let p = memory.pointer(g).assumingMemoryBound(to: UInt8.self)
            for i in 0..<Self.guardSize where p[i] != Self.guardByte { return false }
        }
        var r = 0
        for b in buffers where !b.writable {
            if Array(UnsafeRawBufferPointer(start: memory.pointer(b.offset), count: b.length)) != readableCopies[r] { return false }
            r += 1
        }
        return true
    }

    /// The first `count` bytes written into the writable buffers, gathered.
    func reply(_ count: Int) -> [UInt8] {
        var out: [UInt8] = []
        var left = count
        for b in buffers where b.writable && left > 0 {
            let n = min(b.length, left)
            out += UnsafeRawBufferPointer(start: memory.pointer(b.offset), count: n)
            left -= n
        }
        return out
    }
}

/// What came back for a raw request.
struct RawOutcome: CustomStringConvertible {
    var usedLength: UInt32
    var reply: [UInt8]
    var guardsIntact: Bool
    var capacity: Int

    var header: FUSEOutHeader? {
        reply.count >= 16 ? reply.withUnsafeBytes { FUSEClientDecoder.outHeader($0) } : nil
    }
    var error: Int32? { header?.error }

    /// What a sound device does with garbage: no used bytes, or a well-formed error reply
    /// to the request's unique; in either case nothing written outside the writable buffers.
    func isErrorOrDropped(unique: UInt64) -> Bool {
        guard guardsIntact, Int(usedLength) <= capacity else { return false }
        if usedLength == 0 { return true }
        guard let h = header else { return false }
        return h.unique == unique && h.length == usedLength && h.error < 0 && usedLength == 16
    }

    var description: String {
        "used \(usedLength) of \(capacity), guards \(guardsIntact ? "intact" : "DAMAGED"), header \(String(describing: header))"
    }
}

extension VhostUserFrontend {
    /// Posts `readable` then writable buffers of `writableSizes` directly (no indirect
    /// table) on request queue `queueIndex`, kicks, and waits for the used entry. The
    /// FUSEQueueClient of that queue must have nothing in flight.
    func guardedRoundTrip(queueIndex: Int = 1, readable: [[UInt8]], writableSizes: [Int],
                          timeoutMilliseconds: Int32 = 30_000) throws -> RawOutcome {
        let request = try GuardedRequest(memory: memory, readable: readable, writableSizes: writableSizes)
        let queue = queues[queueIndex]
        guard let head = queue.postRaw(linked(request.descriptors)) else { throw FrontendError.unsupported("no free descriptors") }
        queue.forceKick()
        var used: UInt32?
        let deadline = Date().addingTimeInterval(Double(timeoutMilliseconds) / 1000)
        while used == nil {
            guard queue.waitForUsed(timeoutMilliseconds: timeoutMilliseconds), Date() < deadline else {
                throw FrontendError.timeout("no used entry for raw head \(head)")
            }
            queue.reap { h, length in if h == head { used = length } }
        }
        return RawOutcome(usedLength: used!, reply: request.reply(min(Int(used!), request.writableCapacity)),
                          guardsIntact: request.untouchedOutsideWritable, capacity: request.writableCapacity)
    }

    /// Links descriptors in order for `postRaw` (which maps small `next` values to the
    /// chain's own positions).
    func linked(_ chain: [VirtqueueDescriptor]) -> [VirtqueueDescriptor] {
        chain.enumerated().map { i, d in
            var d = d
            if i + 1 < chain.count { d.flags |= SplitVirtqueue.Descriptor.next; d.next = UInt16(i + 1) }
            return d
        }
    }
}

/// The parent of the FerryFrontend and Hostile suites: one at a time, since several
/// count this process's open descriptors, which concurrent suites would disturb.
@Suite(.serialized) enum FerryFrontendAndHostileTests {}
