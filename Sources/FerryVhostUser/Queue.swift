import CFerry
import FerryCore
import FerryVirtio
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One virtqueue of the device and its worker thread.
///
/// Configuration (`size`, `address`, `base`, fds) is changed by the control thread: while
/// the worker is stopped, or under the device's write lock. The worker reads it only under
/// the read lock. `lastAvail`, `usedIndex` and the signalling state belong to the worker
/// while it runs, and to the control thread once it has joined it.
final class Virtqueue: @unchecked Sendable {
    let index: Int
    var size: UInt16 = 0
    var address: VringAddress?
    var ring: RingView?
    var base: UInt16 = 0
    var kickFD: Int32 = -1
    var callFD: Int32 = -1
    var errFD: Int32 = -1
    let enabled = Atomic<Bool>(false)
    let stopRequested = Atomic<Bool>(false)
    /// Wakes the worker: stop requested, or the ring was enabled.
    let wakeFD: Int32
    var thread: pthread_t?

    // Worker state.
    var lastAvail: UInt16 = 0
    var usedIndex: UInt16 = 0
    var signalledUsed: UInt16 = 0
    var signalledUsedValid = false

    init(index: Int) {
        self.index = index
        wakeFD = ferry_eventfd(0, Int32(FERRY_EFD_CLOEXEC | FERRY_EFD_NONBLOCK))
        precondition(wakeFD >= 0, "eventfd failed: \(errno)")
    }

    deinit {
        closeDescriptors()
        close(wakeFD)
    }

    var isRunning: Bool { thread != nil }

    func wake() {
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    func closeDescriptors() {
        if kickFD >= 0 { close(kickFD); kickFD = -1 }
        if callFD >= 0 { close(callFD); callFD = -1 }
        if errFD >= 0 { close(errFD); errFD = -1 }
    }

    /// Back to the state of a new connection (worker already stopped).
    func resetConfiguration() {
        closeDescriptors()
        size = 0; address = nil; ring = nil; base = 0
        enabled.store(false, ordering: .relaxed)
        lastAvail = 0; usedIndex = 0; signalledUsedValid = false
    }
}

/// Signals an eventfd; ignores a full counter (EAGAIN) and a closed fd.
@inline(__always)
func signalEventFD(_ fd: Int32) {
    guard fd >= 0 else { return }
    var one: UInt64 = 1
    _ = write(fd, &one, 8)
}
