import ArgumentParser
import FerryDaemon
import FerryRADOS
import FerryRADOSBackend
#if canImport(Glibc)
import Glibc
#endif

/// `ferry fsck rados://POOL[/NAMESPACE]`: check, and with --repair fix, a RADOS file system.
struct FsckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fsck",
        abstract: "Check (and with --repair, fix) the file system in a RADOS pool.",
        discussion: """
            Takes the single-writer lease first, so it refuses while a server holds it. \
            Exit status: 0 clean or repaired, 1 problems left, 2 could not run.
            """
    )

    @Argument(help: "rados://POOL[/NAMESPACE]")
    var source: String

    @OptionGroup var ceph: CephOptions

    @Flag(help: "Repair what is found.")
    var repair = false

    @Flag(help: "Break the lease of a holder that is known to be dead (instead of waiting for it to expire).")
    var breakLease = false

    func run() throws {
        let rados = try RADOSSource(parsing: source, ceph: ceph.access)
        let findings: [FsckFinding]
        do {
            let pool = try RADOSPool(rados.target)
            if breakLease, Lease.breakLease(pool) { print("broke the lease of the previous holder") }
            let lease = try Lease(pool: pool, seconds: 60, purpose: "ferry fsck")
            defer { lease.release() }
            lease.startRenewing()
            findings = try RADOSFsck.run(pool, repair: repair)
        } catch {
            writeToStandardError("Error: fsck \(rados): \(error)\n")
            throw ExitCode(2)
        }
        for f in findings { print(f) }
        let left = findings.filter { !$0.repaired }.count
        print("\(rados): \(findings.count) problem(s), \(findings.count - left) repaired")
        if left > 0 { throw ExitCode(1) }
    }
}

private func writeToStandardError(_ text: String) {
    var t = text
    t.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
