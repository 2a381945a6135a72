import CFerry
import FerryCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The back-end's side of one SET_DEVICE_STATE_FD channel: a thread that writes the saved
/// state into the front-end's fd (source) or reads the state to EOF from it (destination),
/// then closes it. It runs apart from the control thread because the front-end reads (or
/// writes) the pipe only after SET_DEVICE_STATE_FD's reply: done inline, a state larger
/// than the pipe's buffer would deadlock both. CHECK_DEVICE_STATE joins it.
/// @unchecked Sendable: `thread` and `joined` are touched only by the control thread that starts and joins
/// the transfer; the transfer thread reports through `outcome` (a Mutex).
final class StateTransfer: @unchecked Sendable {
    /// The most a destination reads: a state is a few hundred bytes per node and handle.
    static let maximumState = 512 << 20

    enum Direction { case save([UInt8]), load }

    private var thread = pthread_t()
    private let cancelFD: Int32
    /// The back-end's stop eventfd (once written, it stays readable), or -1. The control
    /// thread may be waiting in `finish()` (CHECK_DEVICE_STATE) for a front-end that never
    /// ends its side of the pipe; stopping the back-end must end that wait too, or the
    /// export (and `ferry serve`'s SIGTERM) would wait for ever.
    private let stopFD: Int32
    private let outcome = Mutex<Result<[UInt8], VhostUserError>?>(nil)
    private var joined = false

    /// Takes ownership of `fd`; `stopFD` is only watched.
    init?(fd: Int32, _ direction: Direction, stopFD: Int32 = -1) {
        self.stopFD = stopFD
        cancelFD = ferry_eventfd(0, Int32(FERRY_EFD_CLOEXEC | FERRY_EFD_NONBLOCK))
        // Failing from here on still runs deinit (every field is set): `joined` keeps it from
        // joining a thread that never started, and deinit alone closes `cancelFD`.
        guard cancelFD >= 0 else { close(fd); joined = true; return nil }
        let context = Unmanaged.passRetained(Context(transfer: self, fd: fd, direction: direction))
        let rc = pthread_create(&thread, nil, { raw in
            let c = Unmanaged<Context>.fromOpaque(raw!).takeRetainedValue()
            c.transfer.run(fd: c.fd, c.direction)
            return nil
        }, context.toOpaque())
        guard rc == 0 else {
            context.release()
            close(fd)
            joined = true
            return nil
        }
    }

    private final class Context {
        let transfer: StateTransfer, fd: Int32, direction: Direction
        init(transfer: StateTransfer, fd: Int32, direction: Direction) { self.transfer = transfer; self.fd = fd; self.direction = direction }
    }

    deinit {
        cancel()
        close(cancelFD)
    }

    /// Waits for the transfer: the bytes read (load), or an empty array (save).
    func finish() -> Result<[UInt8], VhostUserError> {
        if !joined { pthread_join(thread, nil); joined = true }
        return outcome.withLock { $0 } ?? .failure(VhostUserError("state transfer did not run"))
    }

    /// Stops a transfer whose front-end went away, and waits for it.
    func cancel() {
        signalEventFD(cancelFD)
        _ = finish()
    }

    private func run(fd: Int32, _ direction: Direction) {
        // A front-end that closed its end makes write(2) raise SIGPIPE: only EPIPE here.
        var set = sigset_t()
        sigemptyset(&set); sigaddset(&set, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &set, nil)
        _ = ferry_fcntl_int(fd, F_SETFL, ferry_fcntl_int(fd, F_GETFL, 0) | O_NONBLOCK)
        let result: Result<[UInt8], VhostUserError>
        switch direction {
        case .save(let bytes): result = write(bytes, to: fd).map { [] }
        case .load: result = readAll(fd)
        }
        close(fd)
        outcome.withLock { $0 = result }
    }

    /// Waits until `fd` is ready for `events` or the transfer is cancelled.
    private func wait(_ fd: Int32, _ events: Int32) -> Bool {
        var fds = [pollfd(fd: fd, events: Int16(events), revents: 0), pollfd(fd: cancelFD, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: stopFD, events: Int16(POLLIN), revents: 0)]
        guard (try? systemCall({ poll(&fds, 3, -1) })) != nil else { return false }
        return fds[1].revents == 0 && fds[2].revents == 0
    }

    private func write(_ bytes: [UInt8], to fd: Int32) -> Result<Void, VhostUserError> {
        var sent = 0
        while sent < bytes.count {
            do {
                let n = try systemCall { bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + sent, $0.count - sent) } }
                if n > 0 { sent += n; continue }
                return .failure(VhostUserError("writing the device state failed: errno \(errno)"))
            } catch .again {
                if !wait(fd, Int32(POLLOUT)) { return .failure(VhostUserError("state transfer cancelled")) }
            } catch {
                return .failure(VhostUserError("writing the device state failed: errno \(error.rawValue)"))
            }
        }
        return .success(())
    }

    private func readAll(_ fd: Int32) -> Result<[UInt8], VhostUserError> {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n: Int
            do {
                n = try systemCall { chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) } }
            } catch .again {
                if !wait(fd, Int32(POLLIN)) { return .failure(VhostUserError("state transfer cancelled")) }
                continue
            } catch {
                return .failure(VhostUserError("reading the device state failed: errno \(error.rawValue)"))
            }
            if n == 0 { return .success(bytes) }
            guard bytes.count + n <= Self.maximumState else {
                return .failure(VhostUserError("device state larger than \(Self.maximumState) bytes"))
            }
            bytes.append(contentsOf: chunk[0..<n])
        }
    }
}
