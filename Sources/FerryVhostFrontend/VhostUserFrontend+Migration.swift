import FerrySystem
import FerryVirtio
import Glibc

/// What QEMU does with a vhost-user-fs back-end in a live migration, for tests: stop the
/// rings at switch-over, take the back-end's state through a pipe (source), and hand it to
/// another back-end before its rings start (destination).
extension VhostUserFrontend {
    /// GET_VRING_BASE on every queue: the back-end stops each ring once the requests in
    /// flight are done. Returns where each ring stopped.
    @discardableResult
    public func stopQueues() throws -> [UInt32] {
        try queues.map { queue in
            var state = [UInt8](repeating: 0, count: VringState.size)
            state.withUnsafeMutableBytes { VringState(index: queue.index, num: 0).encode(to: $0.baseAddress!) }
            let reply = try channel.call(.getVringBase, payload: state)
            guard reply.count == VringState.size else { throw FrontendError.protocolViolation("GET_VRING_BASE reply of \(reply.count) bytes") }
            return reply.withUnsafeBytes { VringState.decode($0).num }
        }
    }

    /// What QEMU does when a migration fails after the rings were stopped: starts them
    /// again where they stopped (`bases`, from `stopQueues()`), in the same session.
    public func resumeQueues(_ bases: [UInt32]) throws {
        for (queue, base) in zip(queues, bases) {
            func state(_ num: UInt32) -> [UInt8] {
                var b = [UInt8](repeating: 0, count: VringState.size)
                b.withUnsafeMutableBytes { VringState(index: queue.index, num: num).encode(to: $0.baseAddress!) }
                return b
            }
            try channel.call(.setVringNum, payload: state(UInt32(queue.size)))
            try channel.call(.setVringBase, payload: state(base))
            var address = [UInt8](repeating: 0, count: VringAddress.size)
            address.withUnsafeMutableBytes { queue.address.encode(to: $0.baseAddress!) }
            try channel.call(.setVringAddr, payload: address)
            try channel.call(.setVringCall, payload: .u64(UInt64(queue.index)), fds: [queue.call.fd])
            try channel.call(.setVringKick, payload: .u64(UInt64(queue.index)), fds: [queue.kick.fd])
            if features & VirtioFeature.protocolFeatures != 0 { try channel.call(.setVringEnable, payload: state(1)) }
        }
    }

    /// The source's side: SET_DEVICE_STATE_FD (save) with a pipe, everything read from it,
    /// then CHECK_DEVICE_STATE. Throws if the back-end refuses or reports a failure.
    public func saveBackendState() throws -> [UInt8] {
        let (readEnd, writeEnd) = try Self.pipe()
        defer { close(readEnd) }
        do {
            defer { close(writeEnd) }
            try beginTransfer(.save, fd: writeEnd)
        }
        var state: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n: Int
            do { n = try systemCall { chunk.withUnsafeMutableBytes { read(readEnd, $0.baseAddress!, $0.count) } } } catch {
                throw FrontendError.system("read(device state)", errno: error.rawValue)
            }
            if n == 0 { break }
            state += chunk[0..<n]
        }
        try checkTransfer()
        return state
    }

    /// The destination's side: SET_DEVICE_STATE_FD (load) with a pipe, `state` written
    /// into it and closed, then CHECK_DEVICE_STATE.
    public func loadBackendState(_ state: [UInt8]) throws {
        try Self.loadBackendState(state, channel: channel)
    }

    static func loadBackendState(_ state: [UInt8], channel: VhostUserChannel,
                                 holdOpen: (@Sendable (Int32) -> Void)? = nil) throws {
        let (readEnd, writeFD) = try pipe()
        let writeEnd = OwnedFD(writeFD)
        do {
            defer { close(readEnd) }
            try beginTransfer(.load, fd: readEnd, channel: channel)
        }
        var sent = 0
        while sent < state.count {
            let n: Int
            do { n = try systemCall { state.withUnsafeBytes { write(writeEnd.raw, $0.baseAddress! + sent, $0.count - sent) } } } catch {
                throw FrontendError.system("write(device state)", errno: error.rawValue)
            }
            guard n > 0 else { throw FrontendError.system("write(device state)", errno: errno) }
            sent += n
        }
        if let holdOpen { holdOpen(dup(writeEnd.raw)) }
        writeEnd.close()    // the back-end reads the state until EOF
        try checkTransfer(channel: channel)
    }

    private func beginTransfer(_ direction: DeviceStateTransfer.Direction, fd: Int32) throws {
        try Self.beginTransfer(direction, fd: fd, channel: channel)
    }

    private func checkTransfer() throws { try Self.checkTransfer(channel: channel) }

    private static func beginTransfer(_ direction: DeviceStateTransfer.Direction, fd: Int32, channel: VhostUserChannel) throws {
        var payload = [UInt8](repeating: 0, count: DeviceStateTransfer.size)
        payload.withUnsafeMutableBytes {
            DeviceStateTransfer(direction: direction.rawValue, phase: DeviceStateTransfer.phaseStopped).encode(to: $0.baseAddress!)
        }
        let reply = try channel.call(.setDeviceStateFD, payload: payload, fds: [fd])
        guard reply.count == 8 else { throw FrontendError.protocolViolation("SET_DEVICE_STATE_FD reply of \(reply.count) bytes") }
        let value = reply.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard value & 0xff == 0 else { throw FrontendError.protocolViolation("back-end refused SET_DEVICE_STATE_FD (\(value))") }
        guard value & DeviceStateTransfer.replyNoFD != 0 else {
            throw FrontendError.unsupported("a back-end-provided state channel")
        }
    }

    private static func checkTransfer(channel: VhostUserChannel) throws {
        let status = try channel.callU64(.checkDeviceState)
        guard status == 0 else { throw FrontendError.protocolViolation("CHECK_DEVICE_STATE reported failure (\(status))") }
    }

    private static func pipe() throws -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        guard Glibc.pipe(&fds) == 0 else { throw FrontendError.system("pipe", errno: errno) }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return (fds[0], fds[1])
    }
}
