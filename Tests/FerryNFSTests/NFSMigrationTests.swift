import FerryCore
import FerryFUSE
import FerryFUSETestClient
import FerryNFS
import FerryTestSupport
import Foundation
import Logging
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Live migration of an NFS export between two daemons over one nfs-ganesha export: the
/// server core's state saved by one FUSEServer over an NFSDriver and loaded by another, as
/// the vhost-user transport does at switch-over (docs/migration.md). The guest is a FUSE
/// client speaking to the servers directly; nothing is found by path.
@Suite("NFS exports migrate between two daemons", .serialized, .requires(.root, .ganesha))
struct NFSMigrationTests {
    typealias Server = FUSEServer<NFSDriver>

    static func server(_ export: String, version: NFSTestVersion) throws -> Server {
        var logger = Logger(label: "ferry.nfs.migration.test")
        logger.logLevel = .error
        return try FUSEServer(driver: try NFSDriverTests.driver(export, version: version), logger: logger)
    }

    /// The destination: another daemon over the same export, which takes `state`; the guest
    /// goes on with it, without INIT.
    static func destination(_ export: String, version: NFSTestVersion, state: [UInt8],
                            _ options: MigrationOptions = MigrationOptions()) throws -> (Server, FUSEClient) {
        let server = try Self.server(export, version: version)
        _ = try server.loadMigrationState(state, options)
        return (server, try FUSEClient(server, initialize: false))
    }

    static func line(_ n: Int) -> [UInt8] { Array("line \(n)\n".utf8) }
    static func lines(_ range: ClosedRange<Int>) -> [UInt8] { range.flatMap(line) }

    static func hiddenNames(in directory: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasPrefix(".ferry-unlinked-") }
    }

    static func errno(_ body: () throws -> Void) -> Int32? {
        do { try body(); return nil } catch let failure as FUSEFailure { return failure.errno } catch { return -1 }
    }

    @Test(arguments: NFSTestVersion.allCases) func theGuestKeepsItsNodesOpenFilesAndDirectoriesOnTheDestination(version: NFSTestVersion) async throws {
        let nfs = try NFSTestServer.shared()
        try await nfs.shared {
            let export = try nfs.makeExport("migrate-v\(version)")
            let source = try Self.server(export, version: version)
            let guest = try FUSEClient(source)
            let sub = try guest.mkdir(1, "sub")
            _ = try guest.lookup(1, "sub")
            let (log, fh) = try guest.create(sub.nodeID, "log", flags: O_WRONLY)
            let subDir = try guest.opendir(sub.nodeID)
            var offset: UInt64 = 0
            for n in 1...50 { offset += UInt64(try guest.write(log.nodeID, fh, at: offset, Self.line(n))) }

            let state = try source.saveMigrationState(MigrationOptions())
            let (destination, moved) = try Self.destination(export, version: version, state: state)
            // The source's QEMU leaves once the destination runs the guest.
            source.connectionLost()

            #expect(destination.lookupCount(of: sub.nodeID) == 2)
            for n in 51...100 { offset += UInt64(try moved.write(log.nodeID, fh, at: offset, Self.line(n))) }
            // The node and the open file are one file here too: its size counts every write
            // answered through the handle, even those still behind.
            #expect(try moved.getattr(log.nodeID).size == offset)
            try moved.fsync(log.nodeID, fh)
            #expect(try moved.readdir(sub.nodeID, subDir).contains("log"))
            let again = try moved.lookup(sub.nodeID, "log")
            #expect(again.nodeID == log.nodeID && again.generation == log.generation)
            let reader = try moved.open(log.nodeID, flags: O_RDONLY)
            #expect(try moved.read(log.nodeID, reader, at: 0, 64 << 10) == Self.lines(1...100))
            // New nodes never take an id the guest holds.
            let fresh = try moved.mkdir(1, "after")
            #expect(![1, sub.nodeID, log.nodeID].contains(fresh.nodeID))
            try moved.release(log.nodeID, reader)
            try moved.release(log.nodeID, fh)
            try moved.release(sub.nodeID, subDir, directory: true)
            #expect(FileManager.default.contents(atPath: export + "/sub/log") == Data(Self.lines(1...100)))
        }
    }

    /// A file unlinked while open lives on under a hidden name on the server: the source's
    /// session end leaves it to the destination, whose last release removes it.
    @Test(arguments: NFSTestVersion.allCases) func anUnlinkedOpenFileMovesAndGoesAtTheDestinationsLastRelease(version: NFSTestVersion) async throws {
        let nfs = try NFSTestServer.shared()
        try await nfs.shared {
            let export = try nfs.makeExport("migrate-unlinked-v\(version)")
            let source = try Self.server(export, version: version)
            let guest = try FUSEClient(source)
            let (tmp, fh) = try guest.create(1, "tmp", flags: O_RDWR)
            try guest.write(tmp.nodeID, fh, at: 0, Array("still here".utf8))
            try guest.unlink(1, "tmp")
            #expect(try Self.hiddenNames(in: export).count == 1)

            let state = try source.saveMigrationState(MigrationOptions())
            let (destination, moved) = try Self.destination(export, version: version, state: state)
            source.connectionLost()
            #expect(try Self.hiddenNames(in: export).count == 1, "the source removed a file the destination still has open")

            #expect(try moved.read(tmp.nodeID, fh, at: 0, 64) == Array("still here".utf8))
            try moved.write(tmp.nodeID, fh, at: 10, Array(", moved".utf8))
            #expect(try moved.read(tmp.nodeID, fh, at: 0, 64) == Array("still here, moved".utf8))
            #expect(try moved.getattr(tmp.nodeID).nlink == 0)
            // The destination hides files of its own too, never over the names it took over
            // (two daemons of one host, or of one PID number in their sandboxes, count alike).
            let (other, otherFH) = try moved.create(1, "other", flags: O_RDWR)
            try moved.write(other.nodeID, otherFH, at: 0, Array("other".utf8))
            try moved.unlink(1, "other")
            #expect(try Self.hiddenNames(in: export).count == 2)
            #expect(try moved.read(tmp.nodeID, fh, at: 0, 64) == Array("still here, moved".utf8))
            try moved.release(other.nodeID, otherFH)
            // Listing the directory keeps it too (it is this daemon's now, not a leftover).
            let root = try moved.opendir(1)
            #expect(try moved.readdir(1, root).allSatisfy { !$0.hasPrefix(".ferry-unlinked-") })
            try moved.release(1, root, directory: true)
            #expect(try Self.hiddenNames(in: export).count == 1)
            try moved.release(tmp.nodeID, fh)
            #expect(try Self.hiddenNames(in: export).isEmpty, "the destination's last release leaves the hidden name behind")
            withExtendedLifetime(destination) {}
        }
    }

    /// A migration that fails after the save leaves the guest at the source: its session's
    /// end is an ordinary one again, and removes what it hid.
    @Test(arguments: NFSTestVersion.allCases) func aSourceThatResumesRemovesItsHiddenNamesAsBefore(version: NFSTestVersion) async throws {
        let nfs = try NFSTestServer.shared()
        try await nfs.shared {
            let export = try nfs.makeExport("migrate-resume-v\(version)")
            let source = try Self.server(export, version: version)
            let guest = try FUSEClient(source)
            let (tmp, fh) = try guest.create(1, "tmp", flags: O_RDWR)
            try guest.unlink(1, "tmp")
            _ = try source.saveMigrationState(MigrationOptions())
            // The destination refused the state; QEMU runs the guest here again (the device
            // tells the server when a ring starts after the save).
            source.migrationResumedAtSource()
            #expect(try guest.read(tmp.nodeID, fh, at: 0, 8).isEmpty)
            source.connectionLost()
            #expect(try Self.hiddenNames(in: export).isEmpty)
        }
    }

    /// A destination that refuses the state (here: another node is gone) and is then shut
    /// down leaves the source's hidden names alone: the guest still uses them there.
    @Test(arguments: NFSTestVersion.allCases) func aRefusedLoadTakesOverNothing(version: NFSTestVersion) async throws {
        let nfs = try NFSTestServer.shared()
        try await nfs.shared {
            let export = try nfs.makeExport("migrate-refused-v\(version)")
            let source = try Self.server(export, version: version)
            let guest = try FUSEClient(source)
            let (tmp, fh) = try guest.create(1, "tmp", flags: O_RDWR)
            try guest.write(tmp.nodeID, fh, at: 0, Array("at the source".utf8))
            try guest.unlink(1, "tmp")
            // Gone by the time the load reaches it, after the open files: an open directory
            // whose node the guest forgot.
            let gone = try guest.mkdir(1, "gone")
            _ = try guest.opendir(gone.nodeID)
            try guest.forget(gone.nodeID, 1)
            let state = try source.saveMigrationState(MigrationOptions())
            try FileManager.default.removeItem(atPath: export + "/gone")
            let destination = try Self.server(export, version: version)
            #expect(throws: MigrationError.self) { _ = try destination.loadMigrationState(state, MigrationOptions()) }
            // The destination's QEMU exits; its daemon's session ends.
            destination.connectionLost()
            #expect(try Self.hiddenNames(in: export).count == 1)
            #expect(try guest.read(tmp.nodeID, fh, at: 0, 64) == Array("at the source".utf8))
            try guest.release(tmp.nodeID, fh)
            #expect(try Self.hiddenNames(in: export).isEmpty)
        }
    }

    /// A node whose file is gone from the server (a directory removed there: ganesha may
    /// go on serving a removed regular file it still holds open) has a stale handle.
    @Test(arguments: [(NFSTestVersion.v3, MigrationOptions.OnError.abort), (.v3, .guestError), (.v4_1, .abort), (.v4_1, .guestError)])
    func aNodeRemovedOnTheServerFailsTheLoadOrAnswersEIO(version: NFSTestVersion, onError: MigrationOptions.OnError) async throws {
        let nfs = try NFSTestServer.shared()
        try await nfs.shared {
            let export = try nfs.makeExport("migrate-stale-v\(version)")
            let source = try Self.server(export, version: version)
            let guest = try FUSEClient(source)
            let gone = try guest.mkdir(1, "gone")
            let goneDir = try guest.opendir(gone.nodeID)
            let (kept, keptFH) = try guest.create(1, "kept", flags: O_RDWR)
            let state = try source.saveMigrationState(MigrationOptions())
            // Removed on the server between save and load: its handle is stale now.
            try FileManager.default.removeItem(atPath: export + "/gone")

            let options = MigrationOptions(onError: onError)
            switch onError {
            case .abort:
                #expect(throws: MigrationError.self) { _ = try Self.destination(export, version: version, state: state, options) }
                // The guest runs on at the source, whose session is untouched.
                try guest.write(kept.nodeID, keptFH, at: 0, [1, 2, 3])
                try guest.fsync(kept.nodeID, keptFH)
                #expect(FileManager.default.contents(atPath: export + "/kept") == Data([1, 2, 3]))
            case .guestError:
                let (destination, moved) = try Self.destination(export, version: version, state: state, options)
                #expect(Self.errno { _ = try moved.getattr(gone.nodeID) } == EIO)
                // A directory handle that could not be reopened answers EIO, as files do.
                #expect(Self.errno { _ = try moved.readdir(gone.nodeID, goneDir) } == EIO)
                try moved.write(kept.nodeID, keptFH, at: 0, [4, 5, 6])
                try moved.fsync(kept.nodeID, keptFH)
                #expect(FileManager.default.contents(atPath: export + "/kept") == Data([4, 5, 6]))
                // What failed can still be let go of.
                try moved.release(gone.nodeID, goneDir, directory: true)
                try moved.forget(gone.nodeID, 1)
                #expect(destination.lookupCount(of: gone.nodeID) == nil)
            }
        }
    }

    /// An open file whose file is gone from the server (NFSv4: ganesha answers its handle
    /// ESTALE once removed) fails the load, or answers EIO.
    @Test(arguments: MigrationOptions.OnError.allCases)
    func anOpenFileRemovedOnTheServerFailsTheLoadOrAnswersEIO(onError: MigrationOptions.OnError) async throws {
        let nfs = try NFSTestServer.shared()
        try await nfs.shared {
            let export = try nfs.makeExport("migrate-stale-file")
            let source = try Self.server(export, version: 4)
            let guest = try FUSEClient(source)
            let (gone, goneFH) = try guest.create(1, "gone", flags: O_RDWR)
            let state = try source.saveMigrationState(MigrationOptions())
            try FileManager.default.removeItem(atPath: export + "/gone")
            let options = MigrationOptions(onError: onError)
            if onError == .abort {
                #expect(throws: MigrationError.self) { _ = try Self.destination(export, version: 4, state: state, options) }
                return
            }
            let (_, moved) = try Self.destination(export, version: 4, state: state, options)
            #expect(Self.errno { _ = try moved.getattr(gone.nodeID) } == EIO)
            #expect(Self.errno { try moved.write(gone.nodeID, goneFH, at: 0, [1]) } == EIO)
            try moved.release(gone.nodeID, goneFH)
        }
    }

    /// At switch-over nothing the guest was answered for may stay only in the source's
    /// memory: once the state is saved, the source may die without flushing anything.
    @Test(arguments: NFSTestVersion.allCases) func writesBehindAreCommittedWhenTheStateIsSaved(version: NFSTestVersion) async throws {
        let nfs = try NFSTestServer.shared()
        try await nfs.exclusive {
            let export = try nfs.makeExport("migrate-commit-v\(version)")
            var source: Server? = try Self.server(export, version: version)
            let guest = try FUSEClient(source!)
            let (f, fh) = try guest.create(1, "f", flags: O_WRONLY)
            let data = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) }
            for start in stride(from: 0, to: data.count, by: 64 << 10) {
                try guest.write(f.nodeID, fh, at: UInt64(start), Array(data[start..<start + (64 << 10)]))
            }
            #expect(source!.driver.bytesNotYetStable > 0, "the writes were all stable already: this test shows nothing")
            let state = try source!.saveMigrationState(MigrationOptions())
            #expect(source!.driver.bytesNotYetStable == 0, "answered writes left only in the source's memory at switch-over")
            // The source host dies: no release, no session end, nothing sent again.
            source = nil
            try nfs.stop()
            try nfs.start()
            let (_, moved) = try Self.destination(export, version: version, state: state)
            let reader = try moved.open(f.nodeID, flags: O_RDONLY)
            var back: [UInt8] = []
            while back.count < data.count {
                let piece = try moved.read(f.nodeID, reader, at: UInt64(back.count), 256 << 10)
                if piece.isEmpty { break }
                back += piece
            }
            #expect(back == data)
        }
    }

    /// A write behind that failed (here: the server refused a caller without write
    /// permission, after the WRITE was answered) fails the save: the guest stays at the
    /// source, where its next FSYNC still reports the error.
    @Test(arguments: NFSTestVersion.allCases) func aFailedWriteBehindFailsTheSave(version: NFSTestVersion) async throws {
        let nfs = try NFSTestServer.shared()
        try await nfs.shared {
            let export = try nfs.makeExport("migrate-write-error-v\(version)")
            let source = try Self.server(export, version: version)
            let guest = try FUSEClient(source)
            let (f, fh) = try guest.create(1, "f", flags: O_RDWR)
            #expect(try guest.write(f.nodeID, fh, at: 0, [1, 2, 3], uid: 12345) == 3, "answered before the server refused it")
            #expect(throws: MigrationError.self) { _ = try source.saveMigrationState(MigrationOptions()) }
            #expect(Self.errno { try guest.fsync(f.nodeID, fh) } == EACCES, "the failed write was never reported to the guest")
        }
    }

    /// An identity comes from another host: a hidden name that is not one of Ferry's own,
    /// one component, would have the destination REMOVE any file at its last release; an
    /// oversized handle or stray bytes are no identity either.
    @Test func forgedIdentitiesAreRefused() async throws {
        let nfs = try NFSTestServer.shared()
        try await nfs.shared {
            let export = try nfs.makeExport("migrate-forged")
            let source = try Self.server(export, version: 3)
            let guest = try FUSEClient(source)
            _ = try guest.create(1, "f", flags: O_RDWR)
            let entry = try withName("f") { try source.driver.lookup(try source.driver.root().inode, $0, .root) }
            let node = try source.driver.migrationIdentity(ofNode: entry.inode, MigrationOptions())
            let root = try source.driver.migrationIdentity(ofNode: try source.driver.root().inode, MigrationOptions())
            // After version, NFS version, type, file id and the handle's length.
            let rootHandle = Array(root.suffix(from: 18))
            func file(hidden name: String, directory: [UInt8] = rootHandle, trailing: [UInt8] = []) -> [UInt8] {
                var w = MigrationWriter()
                w.u8(1); w.u32(UInt32(O_RDWR)); w.u32(0); w.u32(0); w.blob(node)
                w.u32(1); w.blob(directory); w.blob(Array(name.utf8)); w.u32(0); w.u32(0)
                w.raw(trailing)
                return w.bytes
            }
            let destination = try Self.server(export, version: 3).driver
            _ = try destination.migratedFile(file(hidden: ".ferry-unlinked-0-1-2"), MigrationOptions())
            for forged in [file(hidden: "f"), file(hidden: ".ferry-unlinked-x/../f"), file(hidden: ".ferry-unlinked-0-1-2", trailing: [0]),
                           file(hidden: ".ferry-unlinked-0-1-2", directory: [UInt8](repeating: 1, count: 129)),
                           file(hidden: ".ferry-unlinked-0-1-2", directory: [])] {
                #expect(throws: Errno.protocolError) { _ = try destination.migratedFile(forged, MigrationOptions()) }
            }
            var long = MigrationWriter()
            long.u8(1); long.u8(3); long.u32(UInt32(S_IFREG)); long.u64(0); long.blob([UInt8](repeating: 1, count: 129))
            #expect(throws: Errno.protocolError) { _ = try destination.migratedNode(long.bytes, MigrationOptions()) }
            #expect(throws: Errno.protocolError) { _ = try destination.migratedNode(Array(node.dropLast()), MigrationOptions()) }
            // Another file type under the same handle is another node: refused.
            var retyped = node
            retyped[2] = UInt8(truncatingIfNeeded: S_IFDIR >> 0)
            retyped[3] = UInt8(truncatingIfNeeded: S_IFDIR >> 8)
            #expect(throws: Errno.stale) { _ = try destination.migratedNode(retyped, MigrationOptions()) }
            #expect(FileManager.default.fileExists(atPath: export + "/f"))
        }
    }

    @Test func aStateOfTheOtherNFSVersionIsRefused() async throws {
        let nfs = try NFSTestServer.shared()
        try await nfs.shared {
            let export = try nfs.makeExport("migrate-version")
            let source = try Self.server(export, version: 3)
            let guest = try FUSEClient(source)
            _ = try guest.mkdir(1, "d")
            let state = try source.saveMigrationState(MigrationOptions())
            #expect(throws: MigrationError.self) { _ = try Self.destination(export, version: 4, state: state) }
            _ = try Self.destination(export, version: 3, state: state)
        }
    }
}
