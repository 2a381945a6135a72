import FerryCore
import Foundation
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `systemCall` and `OwnedFD` (FerrySystem, re-exported by the core) on real descriptors,
/// a real pipe and a real signal.
@Suite struct SystemCallTests {
    @Test func aFailedCallThrowsItsErrno() {
        #expect(throws: Errno.noEntry) { try systemCall { open("/nonexistent-ferry-directory/file", O_RDONLY) } }
        #expect(throws: Errno.badHandle) { try systemCall { Glibc.read(-1, nil, 0) } }
    }

    /// What the reading thread shares with the test.
    private final class Interrupted: Sendable {
        let thread = Mutex<pthread_t?>(nil)
        let calls = Atomic<Int>(0)
        let result = Mutex<Result<Int, Errno>?>(nil)
    }

    /// A read blocked on an empty pipe is interrupted by a signal whose handler does not ask
    /// for SA_RESTART: the kernel fails it with EINTR, and `systemCall` reads again.
    @Test func anInterruptedCallIsMadeAgain() throws {
        var action = sigaction()
        action.__sigaction_handler = .init(sa_handler: { _ in })
        action.sa_flags = 0
        sigemptyset(&action.sa_mask)
        var previous = sigaction()
        #expect(sigaction(SIGURG, &action, &previous) == 0)
        defer { sigaction(SIGURG, &previous, nil) }

        var ends: [Int32] = [-1, -1]
        try #require(pipe(&ends) == 0)
        let reader = OwnedFD(ends[0]), writer = OwnedFD(ends[1])
        let readFD = reader.raw
        let shared = Interrupted()
        let thread = Thread {
            // The test process may block signals in its threads (children get a default mask).
            var urgent = sigset_t()
            sigemptyset(&urgent)
            sigaddset(&urgent, SIGURG)
            pthread_sigmask(SIG_UNBLOCK, &urgent, nil)
            shared.thread.withLock { $0 = pthread_self() }
            var byte: UInt8 = 0
            let result = Result { () throws(Errno) -> Int in
                try systemCall {
                    shared.calls.add(1, ordering: .relaxed)
                    return Glibc.read(readFD, &byte, 1)
                }
            }
            shared.result.withLock { $0 = result }
        }
        thread.start()
        // Signal the reader until it has been interrupted at least once (bounded, generously).
        let deadline = Date().addingTimeInterval(60)
        while shared.calls.load(ordering: .relaxed) < 2 && Date() < deadline {
            if let t = shared.thread.withLock({ $0 }) { pthread_kill(t, SIGURG) }
            usleep(1_000)
        }
        var byte: UInt8 = 7
        #expect(Glibc.write(writer.raw, &byte, 1) == 1)
        while shared.result.withLock({ $0 }) == nil && Date() < deadline { usleep(1_000) }

        #expect(shared.calls.load(ordering: .relaxed) >= 2, "the read was never interrupted")
        #expect(try shared.result.withLock({ $0 })?.get() == 1)
    }

    @Test func anOwnedDescriptorIsClosedWhenItGoesAwayAndNotWhenHandedOn() throws {
        let path = NSTemporaryDirectory() + "ferry-owned-fd-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        defer { unlink(path) }
        var raw: Int32 = -1
        var identity = stat()
        do {
            let owned = try OwnedFD(opening: { open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600) })
            raw = owned.raw
            try #require(fstat(raw, &identity) == 0)
        }
        // Closed: the number is free now, or (another test opened something since) names another file.
        var after = stat()
        #expect(fstat(raw, &after) != 0 || after.st_ino != identity.st_ino || after.st_dev != identity.st_dev)

        let handedOn = try OwnedFD(opening: { open(path, O_RDONLY | O_CLOEXEC) }).take()
        defer { close(handedOn) }
        var stillOpen = stat()
        #expect(fstat(handedOn, &stillOpen) == 0)
        #expect(stillOpen.st_ino == identity.st_ino && stillOpen.st_dev == identity.st_dev)
    }
}
