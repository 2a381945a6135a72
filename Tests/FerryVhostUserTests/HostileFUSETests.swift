import FerryCore
import FerryFUSE
import FerryVhostFrontend
import FerryVhostUser
import FerryVirtio
import Foundation
import Glibc
import Testing

/// FUSE-level garbage in valid descriptor chains: Ferry answers with an error reply (or
/// a used length of 0), never writes outside the guest's writable buffers (guard bytes
/// around every buffer stay intact), and keeps serving the same connection.
extension FerryFrontendAndHostileTests {
@Suite(.serialized) struct HostileFUSETests {
    final class Context {
        let daemon: FerryDaemon
        var session: FUSESession!
        var unique: UInt64 = 0x1000

        init() throws {
            daemon = try FerryDaemon(policy: ExportPolicy(xattr: true))
            session = try FUSESession(socketPath: daemon.socketPath)
        }

        func nextUnique() -> UInt64 { unique += 1; return unique }

        /// Sends `readable` with writable buffers of `writableSizes` on `queue`.
        func send(_ readable: [[UInt8]], writable: [Int] = [16, 4096], queue: Int = 1) throws -> RawOutcome {
            try session.frontend.guardedRoundTrip(queueIndex: queue, readable: readable, writableSizes: writable)
        }

        /// The connection still serves normal requests, and the device is not broken.
        func stillServes(sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(daemon.backend.state == .connected, "\(daemon.backend.state)", sourceLocation: sourceLocation)
            #expect((try? session.queue.getattr(nodeID: FUSESession.rootNodeID).attr.mode) .map { $0 & 0o170000 } == 0o040000,
                    sourceLocation: sourceLocation)
        }

        /// Ends the test: drop this connection, then a new one must work.
        func finish(sourceLocation: SourceLocation = #_sourceLocation) {
            stillServes(sourceLocation: sourceLocation)
            session = nil
            daemon.newConnectionWorks(sourceLocation: sourceLocation)
        }
    }

    func getattrBody() -> [UInt8] { var b = RawFUSE(); b.u32(0); b.u32(0); b.u64(0); return b.bytes }

    @Test func requestsShorterThanTheHeaderGetNoReply() throws {
        let c = try Context()
        for n in [1, 8, 20, 39] {
            let bytes = [UInt8](repeating: 0xEE, count: n)
            let r = try c.send([bytes])
            #expect(r.usedLength == 0 && r.guardsIntact, "\(n) bytes: \(r)")
        }
        // 39 bytes split over several descriptors.
        let r = try c.send([[UInt8](repeating: 1, count: 13), [UInt8](repeating: 2, count: 13), [UInt8](repeating: 3, count: 13)])
        #expect(r.usedLength == 0 && r.guardsIntact, "\(r)")
        c.finish()
    }

    @Test func headerLengthBiggerOrSmallerThanTheChainIsEINVAL() throws {
        let c = try Context()
        for lie: UInt32 in [40, 41, 55, 57, 200, 4096, 1 << 20, UInt32.max] {
            let u = c.nextUnique()
            let bytes = RawFUSE.request(.getattr, unique: u, body: getattrBody(), length: lie)
            let r = try c.send([bytes])
            #expect(r.isErrorOrDropped(unique: u), "length \(lie): \(r)")
            #expect(r.error == -EINVAL, "length \(lie): \(r)")
        }
        // The true length (56) is served.
        let u = c.nextUnique()
        let r = try c.send([RawFUSE.request(.getattr, unique: u, body: getattrBody())], writable: [16, 104])
        #expect(r.usedLength == 120 && r.header?.error == 0 && r.guardsIntact, "\(r)")
        c.finish()
    }

    @Test func unknownOpcodesGetENOSYS() throws {
        let c = try Context()
        for opcode: UInt32 in [0, 7, 19, 52, 99, 4096, 9999, 0x7FFF_FFFF, UInt32.max] {
            let u = c.nextUnique()
            let r = try c.send([RawFUSE.request(opcode, unique: u, body: [1, 2, 3, 4, 5, 6, 7, 8])])
            #expect(r.isErrorOrDropped(unique: u), "opcode \(opcode): \(r)")
            #expect(r.error == -ENOSYS, "opcode \(opcode): \(r)")
        }
        c.finish()
    }

    @Test func truncatedArgumentsGetEINVAL() throws {
        let c = try Context()
        let cases: [(FUSEOpcode, Int)] = [(.read, 3), (.read, 39), (.write, 10), (.getattr, 8), (.setattr, 50), (.open, 4),
                                         (.create, 7), (.mkdir, 4), (.rename, 4), (.link, 6), (.getxattr, 4), (.fsync, 2),
                                         (.lseek, 10), (.fallocate, 20), (.copyFileRange, 30), (.getlk, 12), (.release, 10)]
        for (opcode, n) in cases {
            let u = c.nextUnique()
            let r = try c.send([RawFUSE.request(opcode, unique: u, body: [UInt8](repeating: 0x11, count: n))])
            #expect(r.isErrorOrDropped(unique: u), "\(opcode) with \(n) bytes: \(r)")
            #expect(r.error == -EINVAL, "\(opcode) with \(n) bytes: \(r)")
        }
        c.finish()
    }

    @Test func namesWithoutNULAreRefused() throws {
        let c = try Context()
        FileManager.default.createFile(atPath: c.daemon.export + "/abc", contents: Data())
        var mkdirBody = RawFUSE(); mkdirBody.u32(0o755); mkdirBody.u32(0); mkdirBody.raw(Array("newdir".utf8))
        var renameBody = RawFUSE(); renameBody.u64(1); renameBody.name("abc"); renameBody.raw(Array("xyz".utf8))
        var symlinkBody = RawFUSE(); symlinkBody.name("link"); symlinkBody.raw(Array("target".utf8))
        let cases: [(FUSEOpcode, [UInt8])] = [
            (.lookup, Array("abc".utf8)), (.unlink, Array("abc".utf8)), (.rmdir, Array("abc".utf8)),
            (.mkdir, mkdirBody.bytes), (.rename, renameBody.bytes), (.symlink, symlinkBody.bytes),
            (.lookup, [UInt8](repeating: 0x61, count: 3000)),
        ]
        for (opcode, body) in cases {
            let u = c.nextUnique()
            let r = try c.send([RawFUSE.request(opcode, unique: u, body: body)], writable: [16, 128])
            #expect(r.isErrorOrDropped(unique: u), "\(opcode): \(r)")
            #expect(r.error == -EINVAL, "\(opcode): \(r)")
        }
        // Nothing was changed on the host.
        #expect(FileManager.default.fileExists(atPath: c.daemon.export + "/abc"))
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: c.daemon.export)) == ["abc"])
        #expect(c.daemon.server.nodeCount == 1)
        c.finish()
    }

    @Test func batchForgetWithAHugeCountIsDroppedWithoutHarm() throws {
        let c = try Context()
        FileManager.default.createFile(atPath: c.daemon.export + "/f", contents: Data())
        let node = try c.session.queue.lookup(parent: FUSESession.rootNodeID, name: "f").nodeID
        for count: UInt32 in [0xFFFF_FFFF, 0x1000_0001, 2] {
            var b = RawFUSE(); b.u32(count); b.u32(0); b.u64(node); b.u64(1)      // one entry present
            let r = try c.send([RawFUSE.request(.batchForget, unique: 0, nodeID: 0, body: b.bytes)], writable: [], queue: 0)
            #expect(r.usedLength == 0 && r.guardsIntact, "count \(count): \(r)")
        }
        // The malformed forgets did not forget anything.
        #expect(c.daemon.server.lookupCount(of: node) == 1)
        #expect(try c.session.queue.getattr(nodeID: node).attr.size == 0)
        // A huge FORGET nlookup on one node only drops that node.
        var f = RawFUSE(); f.u64(UInt64.max)
        let r = try c.send([RawFUSE.request(.forget, unique: 0, nodeID: node, body: f.bytes)], writable: [], queue: 0)
        #expect(r.usedLength == 0 && r.guardsIntact)
        #expect(FerryDaemon.eventually { c.daemon.server.lookupCount(of: node) == nil })
        c.finish()
    }

    @Test func setxattrSizeBeyondTheRequestIsRefused() throws {
        let c = try Context()
        FileManager.default.createFile(atPath: c.daemon.export + "/f", contents: Data())
        let node = try c.session.queue.lookup(parent: FUSESession.rootNodeID, name: "f").nodeID
        for size: UInt32 in [5, 100, 65_536, 1 << 20, UInt32.max] {
            for extended in [false, true] {
                var b = RawFUSE(); b.u32(size); b.u32(0)
                if extended { b.u32(0); b.u32(0) }
                b.name("user.test"); b.raw([1, 2, 3, 4])
                let u = c.nextUnique()
                let r = try c.send([RawFUSE.request(.setxattr, unique: u, nodeID: node, body: b.bytes)])
                #expect(r.isErrorOrDropped(unique: u), "size \(size): \(r)")
                #expect(r.error != nil && r.error! < 0, "size \(size): \(r)")
            }
        }
        // Nothing was set: GETXATTR finds no such attribute.
        var g = RawFUSE(); g.u32(0); g.u32(0); g.name("user.test")
        let u = c.nextUnique()
        let r = try c.send([RawFUSE.request(.getxattr, unique: u, nodeID: node, body: g.bytes)])
        #expect(r.error == -ENODATA, "\(r)")
        c.finish()
    }

    @Test func writeWhoseSizeDisagreesWithItsDataIsRefused() throws {
        let c = try Context()
        let (entry, open) = try c.session.queue.create(parent: FUSESession.rootNodeID, name: "w", flags: O_RDWR, mode: 0o644)
        let data = [UInt8](repeating: 0xAB, count: 100)
        // Claimed size larger and smaller than the data, with the data in the same buffer
        // (copied whole) or in its own descriptor (passed in place).
        for claimed: UInt32 in [0, 10, 99, 101, 4096, UInt32.max] {
            for split in [false, true] {
                let u = c.nextUnique()
                let fixed = RawFUSE.readWriteIn(fh: open.fh, offset: 0, size: claimed)
                let whole = RawFUSE.request(.write, unique: u, nodeID: entry.nodeID, body: fixed + data)
                let readable = split ? [Array(whole[..<80]), Array(whole[80...])] : [whole]
                let r = try c.send(readable, writable: [16, 8])
                #expect(r.isErrorOrDropped(unique: u), "claimed \(claimed) split \(split): \(r)")
                #expect(r.error == -EINVAL, "claimed \(claimed) split \(split): \(r)")
            }
        }
        // Data shorter than the fuse_write_in itself (a header and a partial write_in).
        let u = c.nextUnique()
        let r = try c.send([Array(RawFUSE.request(.write, unique: u, nodeID: entry.nodeID, body: RawFUSE.readWriteIn(fh: open.fh, offset: 0, size: 100))[..<60])])
        #expect(r.isErrorOrDropped(unique: u), "\(r)")
        #expect(try FileManager.default.attributesOfItem(atPath: c.daemon.export + "/w")[.size] as? Int == 0)
        try c.session.queue.release(nodeID: entry.nodeID, fh: open.fh)
        c.finish()
    }

    @Test func repliesThatDoNotFitTheWritableBuffersAreNotWrittenOutsideThem() throws {
        let c = try Context()
        let content = (0..<(2 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        FileManager.default.createFile(atPath: c.daemon.export + "/big", contents: Data(content))
        let q = c.session.queue
        let entry = try q.lookup(parent: FUSESession.rootNodeID, name: "big")
        let open = try q.open(nodeID: entry.nodeID, flags: O_RDONLY)
        let dir = try q.opendir(nodeID: FUSESession.rootNodeID)

        // READ asking 1 MiB with a 100-byte writable buffer: at most 84 data bytes, or nothing.
        for writable in [[100], [16, 84], [10], [16], [8, 8], [16, 1, 1, 1]] {
            let u = c.nextUnique()
            let r = try c.send([RawFUSE.request(.read, unique: u, nodeID: entry.nodeID,
                                                body: RawFUSE.readWriteIn(fh: open.fh, offset: 0, size: 1 << 20))], writable: writable)
            #expect(r.guardsIntact, "READ into \(writable): \(r)")
            #expect(Int(r.usedLength) <= r.capacity, "READ into \(writable): \(r)")
            if r.usedLength > 0 {
                #expect(r.header?.unique == u && r.header?.length == r.usedLength, "READ into \(writable): \(r)")
                if r.header?.error == 0 { #expect(Array(r.reply[16...]) == Array(content[..<(Int(r.usedLength) - 16)])) }
            }
        }
        // GETATTR with a 10-byte writable buffer (its reply is 120 bytes).
        for writable in [[10], [16], [16, 50], [119], [0]] {
            let u = c.nextUnique()
            let r = try c.send([RawFUSE.request(.getattr, unique: u, nodeID: entry.nodeID, body: getattrBody())], writable: writable)
            #expect(r.guardsIntact && Int(r.usedLength) <= r.capacity, "GETATTR into \(writable): \(r)")
            #expect(r.usedLength == 0 || r.header?.error != 0, "GETATTR into \(writable): \(r)")
        }
        // An error reply needs 16 bytes: with fewer, nothing is written.
        do {
            let u = c.nextUnique()
            let r = try c.send([RawFUSE.request(9999, unique: u)], writable: [15])
            #expect(r.usedLength == 0 && r.guardsIntact, "\(r)")
        }
        // No writable buffer at all.
        do {
            let u = c.nextUnique()
            let r = try c.send([RawFUSE.request(.getattr, unique: u, nodeID: entry.nodeID, body: getattrBody())], writable: [])
            #expect(r.usedLength == 0 && r.guardsIntact, "\(r)")
        }
        // READDIR and LOOKUP with little room.
        for writable in [[20], [16, 10], [40]] {
            let u = c.nextUnique()
            let r = try c.send([RawFUSE.request(.readdir, unique: u, nodeID: FUSESession.rootNodeID,
                                                body: RawFUSE.readWriteIn(fh: dir.fh, offset: 0, size: 1 << 16))], writable: writable)
            #expect(r.guardsIntact && Int(r.usedLength) <= r.capacity, "READDIR into \(writable): \(r)")
            var name = RawFUSE(); name.name("big")
            let u2 = c.nextUnique()
            let r2 = try c.send([RawFUSE.request(.lookup, unique: u2, body: name.bytes)], writable: writable)
            #expect(r2.guardsIntact && Int(r2.usedLength) <= r2.capacity, "LOOKUP into \(writable): \(r2)")
        }
        // A READ that fits exactly still works, spread over odd buffers.
        let u = c.nextUnique()
        let r = try c.send([RawFUSE.request(.read, unique: u, nodeID: entry.nodeID,
                                            body: RawFUSE.readWriteIn(fh: open.fh, offset: 0, size: 1000))], writable: [16, 7, 993])
        #expect(r.usedLength == 1016 && r.guardsIntact && r.header?.error == 0, "\(r)")
        #expect(Array(r.reply[16...]) == Array(content[..<1000]))
        try q.release(nodeID: entry.nodeID, fh: open.fh)
        try q.release(nodeID: FUSESession.rootNodeID, fh: dir.fh, directory: true)
        c.finish()
    }

    @Test func randomGarbageBehindValidHeadersNeverEscapesTheBuffers() throws {
        let c = try Context()
        var seed: UInt64 = 0x2545_F491_4F6C_DD1D
        func next() -> UInt64 { seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17; return seed }
        for _ in 0..<300 {
            var opcode = UInt32(next() % 53)
            if opcode == FUSEOpcode.`init`.rawValue || opcode == FUSEOpcode.destroy.rawValue || opcode == FUSEOpcode.forget.rawValue
                || opcode == FUSEOpcode.batchForget.rawValue { opcode = 9999 }
            let body = (0..<Int(next() % 300)).map { _ in UInt8(truncatingIfNeeded: next()) }
            let u = c.nextUnique()
            var bytes = RawFUSE.request(opcode, unique: u, nodeID: next() % 3, body: body)
            if next() % 4 == 0 { withUnsafeBytes(of: UInt32(truncatingIfNeeded: next()).littleEndian) { bytes.replaceSubrange(0..<4, with: $0) } }
            let writable = [Int(next() % 64), Int(next() % 200)]
            let r = try c.send([bytes], writable: writable)
            #expect(r.guardsIntact && Int(r.usedLength) <= r.capacity, "opcode \(opcode): \(r)")
            if r.usedLength > 0 { #expect(r.header?.unique == u && r.header?.length == r.usedLength, "opcode \(opcode): \(r)") }
        }
        c.finish()
    }
}
}
