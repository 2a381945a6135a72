import Foundation
import FerryTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// fcntl and flock locks through `ferry mount nfs://` of an NFSv4.0 or 4.1 export: kept by the NFS
/// server, so processes on one mount meet each other's locks and so do processes on a second
/// mount of the same export, which is another NFS client. A waiting F_SETLKW waits in the
/// daemon's `ferry-lockwait` thread, which asks the server again until the holder unlocks.
@Suite("Record locks through ferry mount of NFSv4.0 and 4.1", .serialized, .requires(.root, .devFUSE, .ganesha))
struct NFSMountLockTests {
    typealias Tool = MountLockTests.Tool

    /// Two mounts of one fresh export holding `f` (made on the server: the mounts learn its
    /// name by looking it up, which a v4.0 lock's OPEN needs).
    private func twoMounts(_ name: String, _ version: NFSTestVersion, _ body: (FerryMount, FerryMount) throws -> Void) async throws {
        let server = try NFSTestServer.shared()
        try await server.shared {
            let export = try server.makeExport(name)
            try Data("0123456789".utf8).write(to: URL(fileURLWithPath: export + "/f"))
            let a = try FerryMount(source: server.url(export, version: version), extraArguments: [])
            defer { a.stop() }
            let b = try FerryMount(source: server.url(export, version: version), extraArguments: [])
            defer { b.stop() }
            try body(a, b)
        }
    }

    /// Starts a holder on `m` and returns once it holds its lock.
    private func holder(_ m: FerryMount, _ arguments: [String]) throws -> Tool {
        let tool = try Tool(arguments + [m.mountpoint + "/held", m.mountpoint + "/release"])
        #expect(eventually { FileManager.default.fileExists(atPath: m.mountpoint + "/held") }, "\(tool.output)")
        return tool
    }

    @Test(arguments: [NFSTestVersion.v4_0, .v4_1])
    func fcntlLocksMeetOnOneMountAndAcrossTwoClientsAndAWaiterIsGranted(version: NFSTestVersion) async throws {
        try await twoMounts("mount-locks-v\(version)", version) { a, b in
            let holder = try holder(a, ["hold", a.mountpoint + "/f", "w", "10", "90"])
            for m in [a, b] {
                // On the holder's mount, its own pid (a lock owner of that client); on the
                // other, pid 0: the holder is another client's process.
                let (_, seen) = try MountLockTests.run(["getlk", m.mountpoint + "/f", "w", "0", "0"])
                let pid = m === a ? holder.process.processIdentifier : 0
                #expect(seen == "getlk: F_WRLCK start=10 len=90 pid=\(pid)", "\(m === a ? "same" : "other") mount: \(seen)")
                let (refused, tried) = try MountLockTests.run(["setlk", m.mountpoint + "/f", "r", "50", "1"])
                #expect(refused == 1 && tried == "setlk: Resource temporarily unavailable", "\(tried)")
                #expect(try MountLockTests.run(["setlk", m.mountpoint + "/f", "w", "0", "10"]).0 == 0)   // outside the held range
            }
            let waiter = try Tool(["wait", b.mountpoint + "/f", "w", "0", "0", b.mountpoint + "/release"])
            #expect(eventually { processTreeHasThread(b.process.processIdentifier, named: "ferry-lockwait") })
            #expect(waiter.process.isRunning, "\(waiter.output)")
            _ = FileManager.default.createFile(atPath: a.mountpoint + "/release", contents: nil)
            #expect(holder.exitStatus() == 0, "\(holder.output)")
            #expect(waiter.exitStatus() == 0)
            #expect(waiter.output == "wait: granted, release seen\n")
            // The waiter's process ended: its lock went with its close.
            let (_, after) = try MountLockTests.run(["getlk", a.mountpoint + "/f", "w", "0", "0"])
            #expect(after == "getlk: unlocked", "\(after)")
        }
    }

    @Test(arguments: [NFSTestVersion.v4_0, .v4_1])
    func flockLocksMeetAcrossTwoClientsAndAWaiterIsGranted(version: NFSTestVersion) async throws {
        try await twoMounts("mount-flock-v\(version)", version) { a, b in
            let holder = try Tool(["flock-hold", a.mountpoint + "/f", a.mountpoint + "/held", a.mountpoint + "/release"])
            #expect(eventually { FileManager.default.fileExists(atPath: a.mountpoint + "/held") }, "\(holder.output)")
            for m in [a, b] {
                let (refused, tried) = try MountLockTests.run(["flock-try", m.mountpoint + "/f"])
                #expect(refused == 1 && tried == "flock-try: Resource temporarily unavailable", "\(tried)")
            }
            let waiter = try Tool(["flock-wait", b.mountpoint + "/f", b.mountpoint + "/release"])
            #expect(eventually { processTreeHasThread(b.process.processIdentifier, named: "ferry-lockwait") })
            _ = FileManager.default.createFile(atPath: a.mountpoint + "/release", contents: nil)
            #expect(holder.exitStatus() == 0, "\(holder.output)")
            #expect(waiter.exitStatus() == 0)
            #expect(waiter.output == "flock-wait: granted, release seen\n")
        }
    }
}
