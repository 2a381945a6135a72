import CFerry
import FerryFUSE
import FerryTestSupport
import FerryVhostFrontend
import FerryVirtio
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

func u64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

/// A guest's export migrating inside a real `ferry serve`, driven over the export sockets
/// as QEMU drives them (the Swift front-end): `ferry exports list/show` and the metrics
/// show each phase, and `[export.migration]` changed by a reload applies to the next
/// migration without touching the guest's connection.
@Suite(.serialized, .requires(.root))
struct MigrationServeTests {
    /// Two exports of one directory: the source and the destination of a migration.
    func fixture(source: String = "", destination: String = "") throws -> (ServeFixture, String) {
        let f = try ServeFixture()
        let dir = try f.directory("data")
        try f.writeTenant("acme", f.posixExport("src", tenant: "acme", path: dir, extra: source)
                                  + f.posixExport("dst", tenant: "acme", path: dir, extra: destination))
        try f.start()
        return (f, dir)
    }

    func migration(_ f: ServeFixture, _ export: String) throws -> String? {
        try f.listJSON().first { $0["export"] as? String == export }?["migration"] as? String
    }

    func show(_ f: ServeFixture, _ export: String) throws -> String {
        try f.ferry(["exports", "show", "acme/\(export)", "--config", f.config]).output
    }

    /// What QEMU does when a migration starts: LOG_SHMFD, a log (SET_LOG_BASE), LOG_ALL.
    func startDirtyLogging(_ frontend: VhostUserFrontend) throws -> Int32 {
        let channel = frontend.channel
        try channel.call(.setProtocolFeatures, payload: u64(frontend.protocolFeatures | VhostUserProtocolFeature.logSharedMemory))
        let log = ferry_memfd_create("dirty-log", UInt32(FERRY_MFD_CLOEXEC))
        let bytes = 1 << 20    // a bit per page of 32 GiB of guest-physical addresses
        guard log >= 0, ftruncate(log, off_t(bytes)) == 0 else { throw ServeError("memfd: errno \(errno)") }
        var payload = [UInt8](repeating: 0, count: LogDescription.size)
        payload.withUnsafeMutableBytes { LogDescription(size: UInt64(bytes), offset: 0).encode(to: $0.baseAddress!) }
        _ = try channel.call(.setLogBase, payload: payload, fds: [log])
        try channel.call(.setFeatures, payload: u64(frontend.features | VirtioFeature.logAll))
        return log
    }

    /// A destination QEMU up to its state transfer: the handshake, then SET_DEVICE_STATE_FD
    /// (load) with a pipe whose write end is returned, for the caller to fill and close.
    func beginIncoming(_ socket: String) throws -> (VhostUserChannel, Int32) {
        let channel = try VhostUserChannel(path: socket)
        try channel.call(.setOwner)
        let features = try channel.callU64(.getFeatures) & VhostUserFrontend.wantedFeatures
        try channel.call(.setFeatures, payload: u64(features))
        let protocolFeatures = try channel.callU64(.getProtocolFeatures) & VhostUserFrontend.wantedProtocolFeatures
        try channel.call(.setProtocolFeatures, payload: u64(protocolFeatures))
        channel.replyAck = protocolFeatures & VhostUserProtocolFeature.replyAck != 0
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw ServeError("pipe: errno \(errno)") }
        var payload = [UInt8](repeating: 0, count: DeviceStateTransfer.size)
        payload.withUnsafeMutableBytes {
            DeviceStateTransfer(direction: DeviceStateTransfer.Direction.load.rawValue, phase: DeviceStateTransfer.phaseStopped)
                .encode(to: $0.baseAddress!)
        }
        let reply = try channel.call(.setDeviceStateFD, payload: payload, fds: [fds[0]])
        close(fds[0])
        #expect(reply == u64(DeviceStateTransfer.replyNoFD))
        return (channel, fds[1])
    }

    func finishIncoming(_ channel: VhostUserChannel, _ writeEnd: Int32, _ state: [UInt8]) throws -> UInt64 {
        let written = state.withUnsafeBytes { write(writeEnd, $0.baseAddress!, $0.count) }
        close(writeEnd)
        #expect(written == state.count)
        return try channel.callU64(.checkDeviceState)
    }

    @Test(.timeLimit(.minutes(5)))
    func exportsShowEachPhaseOfAMigrationAndTheGuestRunsOnWhenItFails() throws {
        let (f, dir) = try fixture()
        defer { _ = f.stop() }
        let guest = try FUSESession(socketPath: f.socket("acme-src"))
        let q = guest.queue
        let (file, open) = try q.create(parent: FUSESession.rootNodeID, name: "log", flags: O_WRONLY | O_APPEND, mode: 0o644)
        #expect(try q.write(nodeID: file.nodeID, fh: open.fh, offset: 0, data: Array("line 1\n".utf8)) == 7)
        #expect(try f.state("acme", "src") == "guest connected")
        #expect(try migration(f, "src") == nil)
        #expect(!(try show(f, "src")).contains("migrating "))

        let log = try startDirtyLogging(guest.frontend)
        defer { close(log) }
        #expect(try migration(f, "src") == "migrating-out")
        #expect(try f.ferry(["exports", "list", "--config", f.config]).output.contains("guest connected (migrating-out)"))
        #expect(try q.write(nodeID: file.nodeID, fh: open.fh, offset: 0, data: Array("line 2\n".utf8)) == 7)

        // Switch-over: the rings stop and the state leaves.
        let bases = try guest.frontend.stopQueues()
        let state = try guest.frontend.saveBackendState()
        #expect(try migration(f, "src") == "saved")
        let shown = try show(f, "src")
        #expect(shown.contains("saved (state sent, rings stopped: waiting for QEMU to quit or resume the guest)"), "\(shown)")
        #expect(try f.scrape().contains("ferry_export_migration_state{tenant=\"acme\",export=\"src\",state=\"saved\"} 1"))

        // The destination takes it: incoming while it reads, migrated-in once it took it.
        let (destination, writeEnd) = try beginIncoming(f.socket("acme-dst"))
        #expect(try migration(f, "dst") == "incoming")
        #expect(try finishIncoming(destination, writeEnd, state) == 0)
        #expect(try migration(f, "dst") == "migrated-in")
        #expect(try show(f, "dst").contains("migrated-in (state taken"))

        // The destination QEMU dies before its guest ran: QEMU resumes the guest at the
        // source, whose rings start where they stopped, in the same session.
        shutdown(destination.fd, Int32(SHUT_RDWR))
        #expect(FerryWait.until(30) { (try? f.state("acme", "dst")) == "listening" }, "\(f.log)")
        #expect(try migration(f, "dst") == nil)
        try guest.frontend.resumeQueues(bases)
        // Until QEMU's migration clean-up turns logging off, the pages are still logged.
        #expect(try migration(f, "src") == "migrating-out")
        try guest.frontend.channel.call(.setFeatures, payload: u64(guest.frontend.features))
        #expect(try migration(f, "src") == nil)
        #expect(try q.write(nodeID: file.nodeID, fh: open.fh, offset: 0, data: Array("line 3\n".utf8)) == 7)
        #expect(try String(contentsOfFile: dir + "/log", encoding: .utf8) == "line 1\nline 2\nline 3\n")
        #expect(try f.state("acme", "src") == "guest connected")
    }

    @Test(.timeLimit(.minutes(5)))
    func aDestinationThatRefusesTheStateShowsRefused() throws {
        let (f, _) = try fixture()
        defer { _ = f.stop() }
        let (destination, writeEnd) = try beginIncoming(f.socket("acme-dst"))
        defer { withExtendedLifetime(destination) {} }
        #expect(try finishIncoming(destination, writeEnd, Array("not a state".utf8)) == 1)
        #expect(try migration(f, "dst") == "refused")
        #expect(try show(f, "dst").contains("refused (the state could not be taken"))
    }

    @Test(.timeLimit(.minutes(5)))
    func aReloadChangesMigrationOptionsInPlaceForTheNextMigration() throws {
        let (f, dir) = try fixture()
        defer { _ = f.stop() }
        let guest = try FUSESession(socketPath: f.socket("acme-src"))
        let q = guest.queue
        let (gone, goneOpen) = try q.create(parent: FUSESession.rootNodeID, name: "gone", flags: O_RDWR, mode: 0o600)
        let (kept, keptOpen) = try q.create(parent: FUSESession.rootNodeID, name: "kept", flags: O_RDWR, mode: 0o600)
        #expect(try show(f, "dst").contains("find-paths, on error abort"))

        // The destination now answers EIO for what it cannot find instead of refusing.
        try f.writeTenant("acme", f.posixExport("src", tenant: "acme", path: dir, extra: "[export.migration]\nconfirm_paths = true")
                                  + f.posixExport("dst", tenant: "acme", path: dir, extra: "[export.migration]\non_error = \"guest-error\""))
        let reload = try f.ferry(["reload", "--config", f.config])
        #expect(reload.succeeded, "\(reload.output)")
        #expect(reload.output.contains("migration options updated (guest untouched): acme/src, acme/dst"), "\(reload.output)")
        #expect(!reload.output.contains("changed (restarted)"), "\(reload.output)")
        #expect(try show(f, "dst").contains("find-paths, on error guest-error"))
        #expect(try show(f, "src").contains("find-paths, on error abort, confirm paths"))
        // The guest's connection and session are the ones it had.
        #expect(try q.write(nodeID: kept.nodeID, fh: keptOpen.fh, offset: 0, data: [1, 2]) == 2)
        #expect(try f.state("acme", "src") == "guest connected")

        try guest.frontend.stopQueues()
        let state = try guest.frontend.saveBackendState()
        #expect(rename(dir + "/gone", f.top + "/moved-away") == 0)
        var c = FrontendConfiguration()
        c.incomingState = state
        let moved = try FUSESession(socketPath: f.socket("acme-dst"), configuration: c, sendInit: false)
        let d = moved.queue
        #expect(try d.write(nodeID: kept.nodeID, fh: keptOpen.fh, offset: 2, data: [3]) == 1)
        #expect(FileManager.default.contents(atPath: dir + "/kept") == Data([1, 2, 3]))
        do {
            _ = try d.write(nodeID: gone.nodeID, fh: goneOpen.fh, offset: 0, data: [1])
            Issue.record("a write to a file the destination could not find succeeded")
        } catch FrontendError.fuseError(_, let e) {
            #expect(e == EIO)
        }
    }
}
