import FerryCore
import FerryFUSE
import FerryPOSIX
import FerryVhostFrontend
@testable import FerryVhostUser
import FerryVirtio
import Foundation
import Glibc
import Synchronization
import Testing

/// Live migration of a directory export between two daemons, end to end through the
/// vhost-user socket as QEMU drives it: the guest's session, node ids, lookup counts and
/// open files and directories move from a source daemon to a destination daemon over the
/// same directory, and the guest carries on without INIT.
@Suite struct MigrationTests {
    static func options(_ mode: MigrationOptions.Mode, onError: MigrationOptions.OnError = .abort,
                        verifyHandles: Bool = false, confirmPaths: Bool = false) -> VhostUserFSOptions {
        var o = VhostUserFSOptions()
        o.migration = MigrationOptions(mode: mode, onError: onError, verifyHandles: verifyHandles, confirmPaths: confirmPaths)
        return o
    }

    static let everyConfiguration: [MigrationOptions] = [
        MigrationOptions(mode: .findPaths), MigrationOptions(mode: .findPaths, verifyHandles: true, confirmPaths: true),
        MigrationOptions(mode: .fileHandles),
    ]

    /// The destination: a daemon over the source's directory, and a front-end that loads
    /// `state` before its rings start (no INIT: the guest's session goes on).
    static func destination(of source: FerryDaemon, state: [UInt8], options: VhostUserFSOptions) throws
        -> (FerryDaemon, FUSESession) {
        let daemon = try FerryDaemon(options: options, exporting: source.export)
        var c = FrontendConfiguration()
        c.incomingState = state
        return (daemon, try FUSESession(socketPath: daemon.socketPath, configuration: c, sendInit: false))
    }

    static func errno(of body: () throws -> Void) -> Int32? {
        do { try body(); return nil } catch FrontendError.fuseError(_, let e) { return e } catch { return -1 }
    }

    @Test(arguments: everyConfiguration)
    func theGuestKeepsItsNodeIDsAndOpenHandlesOnTheDestination(migration: MigrationOptions) throws {
        var options = VhostUserFSOptions()
        options.migration = migration
        let source = try FerryDaemon(options: options)
        let guest = try FUSESession(socketPath: source.socketPath)
        #expect(guest.frontend.protocolFeatures & VhostUserProtocolFeature.deviceState != 0)
        let q = guest.queue
        let (log, logOpen) = try q.create(parent: 1, name: "log.txt", flags: O_WRONLY | O_APPEND, mode: 0o644)
        #expect(try q.write(nodeID: log.nodeID, fh: logOpen.fh, offset: 0, data: Array("line 1\n".utf8)) == 7)
        let sub = try q.mkdir(parent: 1, name: "sub", mode: 0o755)
        _ = try q.lookup(parent: 1, name: "sub")      // two lookups on sub
        let (inner, innerOpen) = try q.create(parent: sub.nodeID, name: "inner", flags: O_RDWR, mode: 0o600)
        #expect(try q.write(nodeID: inner.nodeID, fh: innerOpen.fh, offset: 0, data: Array("inner bytes".utf8)) == 11)
        let subDir = try q.opendir(nodeID: sub.nodeID)
        // A handle released before the migration must stay dead.
        let (_, released) = try q.create(parent: 1, name: "closed", flags: O_RDWR, mode: 0o600)
        try q.release(nodeID: 1, fh: released.fh)
        let lookupsOnSub = source.server.lookupCount(of: sub.nodeID)

        // Switch-over: the rings stop, the state leaves through a pipe.
        try guest.frontend.stopQueues()
        let state = try guest.frontend.saveBackendState()
        let (destination, moved) = try Self.destination(of: source, state: state, options: options)
        let d = moved.queue

        // Same node ids, same handles, same lookup counts; no INIT on the destination.
        #expect(destination.server.lookupCount(of: sub.nodeID) == lookupsOnSub)
        #expect(destination.server.lookupCount(of: log.nodeID) == source.server.lookupCount(of: log.nodeID))
        #expect(try d.write(nodeID: log.nodeID, fh: logOpen.fh, offset: 7, data: Array("line 2\n".utf8)) == 7)
        #expect(try d.getattr(nodeID: log.nodeID).attr.size == 14)
        #expect(try d.read(nodeID: inner.nodeID, fh: innerOpen.fh, offset: 0, size: 64) == Array("inner bytes".utf8))
        let names = try d.readdir(nodeID: sub.nodeID, fh: subDir.fh, offset: 0).map { String(decoding: $0.name, as: UTF8.self) }
        #expect(names.contains("inner"))
        let again = try d.lookup(parent: sub.nodeID, name: "inner")
        #expect(again.nodeID == inner.nodeID && again.generation == inner.generation)
        #expect(Self.errno { _ = try d.read(nodeID: 1, fh: released.fh, offset: 0, size: 1) } == EBADF)
        // The append-only handle kept O_APPEND: a write "at 0" still lands at the end.
        #expect(try d.write(nodeID: log.nodeID, fh: logOpen.fh, offset: 0, data: Array("line 3\n".utf8)) == 7)
        #expect(try String(contentsOfFile: source.export + "/log.txt", encoding: .utf8) == "line 1\nline 2\nline 3\n")
        // New nodes get new ids, never one the guest holds.
        let fresh = try d.create(parent: 1, name: "after", flags: O_RDWR, mode: 0o600).entry
        #expect(![1, log.nodeID, sub.nodeID, inner.nodeID].contains(fresh.nodeID))
        try d.release(nodeID: sub.nodeID, fh: subDir.fh, directory: true)
        try d.release(nodeID: log.nodeID, fh: logOpen.fh)
    }

    @Test(arguments: MigrationOptions.OnError.allCases)
    func aFileGoneFromTheDestinationFailsTheMigrationOrAnswersEIO(onError: MigrationOptions.OnError) throws {
        let source = try FerryDaemon(options: Self.options(.findPaths))
        let guest = try FUSESession(socketPath: source.socketPath)
        let q = guest.queue
        let (gone, goneOpen) = try q.create(parent: 1, name: "gone", flags: O_RDWR, mode: 0o600)
        let (kept, keptOpen) = try q.create(parent: 1, name: "kept", flags: O_RDWR, mode: 0o600)
        let bases = try guest.frontend.stopQueues()
        let state = try guest.frontend.saveBackendState()
        // Between save and load the path stops leading anywhere.
        #expect(rename(source.export + "/gone", source.top + "/moved-away") == 0)

        let options = Self.options(.findPaths, onError: onError)
        switch onError {
        case .abort:
            // The destination refuses the state: QEMU fails the migration and the guest
            // runs on at the source, whose state is untouched.
            #expect(throws: (any Error).self) { _ = try Self.destination(of: source, state: state, options: options) }
            #expect(source.server.lookupCount(of: gone.nodeID) == 1)
            #expect(source.server.openHandleCount == 2)
            // QEMU starts the source's rings again: the same session goes on there.
            try guest.frontend.resumeQueues(bases)
            #expect(try q.write(nodeID: kept.nodeID, fh: keptOpen.fh, offset: 0, data: [7, 8]) == 2)
            #expect(try q.write(nodeID: gone.nodeID, fh: goneOpen.fh, offset: 0, data: [9]) == 1)
            #expect(FileManager.default.contents(atPath: source.top + "/moved-away") == Data([9]))
        case .guestError:
            let (destination, moved) = try Self.destination(of: source, state: state, options: options)
            defer { withExtendedLifetime(destination) {} }
            let d = moved.queue
            #expect(Self.errno { _ = try d.getattr(nodeID: gone.nodeID) } == EIO)
            #expect(Self.errno { _ = try d.write(nodeID: gone.nodeID, fh: goneOpen.fh, offset: 0, data: [1]) } == EIO)
            #expect(try d.write(nodeID: kept.nodeID, fh: keptOpen.fh, offset: 0, data: [1, 2, 3]) == 3)
            // The guest can still let go of what failed.
            try d.release(nodeID: gone.nodeID, fh: goneOpen.fh)
            #expect(Self.errno { _ = try d.write(nodeID: gone.nodeID, fh: goneOpen.fh, offset: 0, data: [1]) } == EBADF)
        }
    }

    @Test func verifyHandlesRefusesAPathThatNowLeadsToAnotherFile() throws {
        let source = try FerryDaemon(options: Self.options(.findPaths, verifyHandles: true))
        let guest = try FUSESession(socketPath: source.socketPath)
        _ = try guest.queue.create(parent: 1, name: "a", flags: O_RDWR, mode: 0o600)
        try guest.frontend.stopQueues()
        let state = try guest.frontend.saveBackendState()
        // Replaced by another file under the same name.
        #expect(unlink(source.export + "/a") == 0)
        #expect(FileManager.default.createFile(atPath: source.export + "/a", contents: Data("other".utf8)))
        #expect(throws: (any Error).self) {
            _ = try Self.destination(of: source, state: state, options: Self.options(.findPaths, verifyHandles: true))
        }
    }

    @Test func anUnlinkedOpenFileMovesByHandleButNotByPath() throws {
        for mode in MigrationOptions.Mode.allCases {
            let source = try FerryDaemon(options: Self.options(mode))
            let guest = try FUSESession(socketPath: source.socketPath)
            let q = guest.queue
            let (f, open) = try q.create(parent: 1, name: "tmp", flags: O_RDWR, mode: 0o600)
            #expect(try q.write(nodeID: f.nodeID, fh: open.fh, offset: 0, data: Array("still here".utf8)) == 10)
            try q.unlink(parent: 1, name: "tmp")
            try guest.frontend.stopQueues()
            let state = try guest.frontend.saveBackendState()
            if mode == .fileHandles {
                let (destination, moved) = try Self.destination(of: source, state: state, options: Self.options(mode))
                defer { withExtendedLifetime(destination) {} }
                #expect(try moved.queue.read(nodeID: f.nodeID, fh: open.fh, offset: 0, size: 32) == Array("still here".utf8))
            } else {
                #expect(throws: (any Error).self) { _ = try Self.destination(of: source, state: state, options: Self.options(mode)) }
            }
        }
    }

    @Test func aStateOfAnotherVersionOrTruncatedIsRefused() throws {
        let source = try FerryDaemon(options: Self.options(.findPaths))
        let guest = try FUSESession(socketPath: source.socketPath)
        _ = try guest.queue.mkdir(parent: 1, name: "d", mode: 0o755)
        try guest.frontend.stopQueues()
        let state = try guest.frontend.saveBackendState()
        var newer = state
        newer[8] = 2    // version, after the 8-byte magic
        #expect(throws: (any Error).self) { _ = try Self.destination(of: source, state: newer, options: Self.options(.findPaths)) }
        #expect(throws: (any Error).self) {
            _ = try Self.destination(of: source, state: Array(state.dropLast()), options: Self.options(.findPaths))
        }
        // A state that claims more nodes than the export allows (node count at byte 40).
        var huge = state
        for i in 40..<44 { huge[i] = 0xff }
        #expect(throws: (any Error).self) { _ = try Self.destination(of: source, state: huge, options: Self.options(.findPaths)) }
        // The intact state still loads.
        _ = try Self.destination(of: source, state: state, options: Self.options(.findPaths))
    }

    @Test func theStateIsRefusedWhileARingRuns() throws {
        let source = try FerryDaemon(options: Self.options(.findPaths))
        let guest = try FUSESession(socketPath: source.socketPath)
        #expect(throws: (any Error).self) { _ = try guest.frontend.saveBackendState() }
        // Refused cleanly: the guest goes on.
        _ = try guest.queue.getattr(nodeID: 1)
    }
}

/// Stopping a back-end while a migration's state transfer waits on the front-end.
@Suite struct MigrationStopTests {
    /// The destination got SET_DEVICE_STATE_FD and then CHECK_DEVICE_STATE, but the state
    /// pipe never ends (a stalled migration stream): stopping the back-end still stops it.
    /// Before, the control thread waited in CHECK_DEVICE_STATE for the transfer thread, which
    /// waited for the pipe, so stopping the export (and `ferry serve`'s SIGTERM) never returned.
    @Test func aDestinationStoppedWhileItsStateIsStillArrivingStops() throws {
        let daemon = try FerryDaemon(options: MigrationTests.options(.findPaths))
        let heldOpen = Mutex<Int32>(-1)
        // Whatever happens, the pipe is closed at the end, so no thread waits past the test.
        defer { heldOpen.withLock { if $0 >= 0 { close($0) } } }
        var configuration = FrontendConfiguration()
        configuration.incomingState = Array(repeating: 0x5a, count: 64)
        configuration.holdIncomingStateOpen = { fd in heldOpen.withLock { $0 = fd } }
        let frontendDone = DispatchSemaphore(value: 0)
        let socketPath = daemon.socketPath
        let frozen = configuration
        Thread {
            // Fails once the back-end drops the connection: CHECK_DEVICE_STATE gets no reply.
            _ = try? FUSESession(socketPath: socketPath, configuration: frozen, sendInit: false)
            frontendDone.signal()
        }.start()
        #expect(FerryDaemon.eventually { heldOpen.withLock { $0 } >= 0 && daemon.backend.migrationStatus.transfer?.outcome == .inProgress },
                "the state transfer never began")
        // CHECK_DEVICE_STATE follows at once; give it time to reach the control thread.
        usleep(300_000)
        #expect(daemon.stop(), "the back-end did not stop within 10 s while the state pipe stayed open")
        heldOpen.withLock { if $0 >= 0 { close($0); $0 = -1 } }
        #expect(frontendDone.wait(timeout: .now() + 30) == .success, "the front-end never heard back")
    }
}
