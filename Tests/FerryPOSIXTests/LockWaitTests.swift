import Foundation
import Synchronization
import Testing

import FerryCore
@testable import FerryPOSIX

/// The POSIX driver never waits for a lock: a waiting SETLKW on a range another open file
/// description holds answers the conflict (EAGAIN) at once. Waiting would hold the queue
/// thread for as long as the other holder pleases, with INTERRUPT unable to reach it and
/// DESTROY and the export's stop waiting behind it.
@Suite struct LockWaitTests {
    @Test func aWaitingLockOnARangeHeldElsewhereAnswersTheConflict() throws {
        try withExport { root, driver in
            try Data("x".utf8).write(to: URL(fileURLWithPath: root + "/f"))
            let held = Glibc.open(root + "/f", O_RDWR)
            try #require(held >= 0)
            var heldOpen = true
            defer { if heldOpen { close(held) } }
            var fl = flock()
            fl.l_type = Int16(F_WRLCK); fl.l_whence = Int16(SEEK_SET)
            try #require(fcntl(held, 37 /* F_OFD_SETLK */, &fl) == 0)

            let entry = try driver.lookup(try driver.root().inode, "f")
            let file = try driver.open(entry.inode, flags: O_RDWR, killSuidGid: false, .root).file
            let lock = RecordLock(start: 0, end: UInt64.max, type: F_WRLCK, pid: 1)

            // On a thread of its own; should it wait, the lock is let go after a bound (only
            // so that the test ends) and the outcome, not the time, decides.
            let answered = DispatchSemaphore(value: 0)
            let outcome = Mutex<Int32?>(nil)
            let thread = Thread {
                let e = errnoOf { try driver.setlk(file, owner: 1, lock, wait: true, .root) }
                outcome.withLock { $0 = e ?? 0 }
                answered.signal()
            }
            thread.start()
            let cameWhileLocked = answered.wait(timeout: .now() + 30) == .success
            close(held); heldOpen = false
            if !cameWhileLocked { answered.wait() }
            #expect(cameWhileLocked, "SETLKW waited for the other description's lock")
            #expect(outcome.withLock { $0 } == EAGAIN)
            // Once the range is free, the same waiting lock is simply taken.
            #expect(errnoOf { try driver.setlk(file, owner: 1, lock, wait: true, .root) } == nil)
        }
    }
}
