import FerryTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `GuestMigration.isRunning`, which the guest tests use to see a QEMU end: inside
/// `scripts/nfs/isolated` nobody reaps it, and an exited QEMU stays a zombie.
@Suite("Guest harness: is a process running")
struct GuestProcessTests {
    /// Spawns `argv` directly (not through Foundation's Process, which would reap it).
    static func spawn(_ argv: [String]) throws -> pid_t {
        var pid: pid_t = 0
        var cArgs = argv.map { strdup($0) } + [nil]
        defer { for p in cArgs { free(p) } }
        let rc = posix_spawn(&pid, argv[0], nil, nil, &cArgs, environ)
        guard rc == 0 else { throw HarnessError("posix_spawn \(argv[0]): \(rc)") }
        return pid
    }

    @Test func anExitedChildNobodyReapedIsNotRunningThoughSignalZeroStillFindsIt() throws {
        let pid = try Self.spawn(["/bin/true"])
        defer { var status: Int32 = 0; waitpid(pid, &status, 0) }
        // A zombie once it exited; a bound, not a measure of speed.
        let zombie = GuestMigration.waitFor(30) {
            ((try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? "").contains(") Z ")
        }
        try #require(zombie, "the child never became a zombie")
        #expect(kill(pid, 0) == 0, "signal 0 finds a zombie: what made the old check wrong")
        #expect(!GuestMigration.isRunning(pid))
    }

    @Test func aLiveChildIsRunningAndAReapedOneIsNot() throws {
        let pid = try Self.spawn(["/bin/sleep", "600"])
        #expect(GuestMigration.isRunning(pid))
        kill(pid, SIGKILL)
        var status: Int32 = 0
        #expect(waitpid(pid, &status, 0) == pid)
        #expect(!GuestMigration.isRunning(pid))
    }
}
