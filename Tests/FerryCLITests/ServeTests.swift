import FerryFUSE
import FerryTestSupport
import FerryVhostFrontend
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `ferry serve` as a process: several tenants and exports, the control socket, `exports
/// list/show`, reload, the metrics endpoint and quota/QoS from the configuration, driven
/// through the project's vhost-user front-end as a guest would.
@Suite(.serialized) struct ServeTests {
    /// One export that works and two whose backend cannot be reached here.
    func threeExports(_ f: ServeFixture) throws {
        let dir = try f.directory("acme-home")
        try f.writeTenant("acme", f.posixExport("home", tenant: "acme", path: dir, extra: "queues = 2"))
        try f.writeTenant("globex", f.export("nfs", tenant: "globex", backend: """
            kind = "nfs"
            server = "127.0.0.9"
            path = "/nowhere"
            version = 3
            timeout = 1
            """) + f.export("ceph", tenant: "globex", backend: """
            kind = "rados"
            pool = "nopool"
            ceph_conf = "\(f.top)/no-ceph.conf"
            client_id = "globex"
            keyring = "\(f.top)/globex.keyring"
            """))
        // No monitor at all: librados refuses at once (an unreachable one would be waited for).
        FileManager.default.createFile(atPath: f.top + "/no-ceph.conf", contents: Data("[global]\n".utf8))
        FileManager.default.createFile(atPath: f.top + "/globex.keyring", contents: Data("[client.globex]\n\tkey = none\n".utf8))
    }

    @Test func exportsListShowsLiveStatesAndCountersAsTableAndJSON() throws {
        let f = try ServeFixture()
        try threeExports(f)
        try f.start()

        let session = try FUSESession(socketPath: f.socket("acme-home"))
        let created = try session.queue.create(parent: 1, name: "hello", flags: O_RDWR, mode: 0o644)
        _ = try session.queue.write(nodeID: created.entry.nodeID, fh: created.open.fh, offset: 0, data: Array("hello, world".utf8))
        _ = try session.queue.read(nodeID: created.entry.nodeID, fh: created.open.fh, offset: 0, size: 5)
        #expect(throws: (any Error).self) { try session.queue.lookup(parent: 1, name: "missing") }

        // Backends open on threads of their own; the two unreachable ones settle into error.
        #expect(FerryWait.until(30) { ((try? f.listJSON()) ?? []).allSatisfy { $0["state"] as? String != "starting" } })
        let json = try f.listJSON()
        #expect(json.count == 3)
        let home = try #require(json.first { $0["export"] as? String == "home" })
        #expect(home["tenant"] as? String == "acme")
        #expect(home["tag"] as? String == "acme-home")
        #expect(home["socket"] as? String == f.socket("acme-home"))
        #expect(home["state"] as? String == "guest connected")
        #expect((home["backend"] as? [String: Any])?["kind"] as? String == "posix")
        let counters = try #require(home["counters"] as? [String: Any])
        #expect((counters["bytesWritten"] as? Int) == 12)
        #expect((counters["bytesRead"] as? Int) == 5)
        #expect((counters["errors"] as? Int) == 1)
        #expect((counters["openFiles"] as? Int) == 1)
        #expect((counters["operations"] as? Int ?? 0) >= 4)
        for name in ["nfs", "ceph"] {
            let row = try #require(json.first { $0["export"] as? String == name })
            let state = row["state"] as? String ?? ""
            #expect(state.hasPrefix("error: "), "\(name): \(state)")
            #expect(row["counters"] == nil)
        }
        #expect(((json.first { $0["export"] as? String == "ceph" })?["backend"] as? [String: Any])?["kind"] as? String == "rados")

        let table = try f.ferry(["exports", "list", "--config", f.config])
        #expect(table.succeeded)
        let lines = table.output.split(separator: "\n")
        #expect(lines.first?.contains("STATE") == true && lines.first?.contains("OPS") == true)
        #expect(lines.contains { $0.contains("home") && $0.contains("guest connected") && $0.contains("12 B") })
        #expect(lines.contains { $0.contains("globex") && $0.contains("nfs") && $0.contains("error: ") })

        let tenantOnly = try f.ferry(["exports", "list", "--config", f.config, "--tenant", "globex", "--json"])
        #expect(!tenantOnly.output.contains("acme"))

        let show = try f.ferry(["exports", "show", "acme/home", "--config", f.config])
        #expect(show.succeeded, "\(show.output)")
        #expect(show.output.contains("guest connected"))
        #expect(show.output.split(separator: "\n").contains { $0.hasPrefix("write ") && $0.contains("≤") }, "\(show.output)")
        #expect(show.output.split(separator: "\n").contains { $0.hasPrefix("lookup ") })

        #expect(f.stop() == 0, "SIGTERM must drain and exit 0; log:\n\(f.log)")
        #expect(!FileManager.default.fileExists(atPath: f.socket("acme-home")))
        #expect(!FileManager.default.fileExists(atPath: f.controlSocket))
        let after = try f.listJSON()
        #expect(after.allSatisfy { $0["state"] as? String == "not running" })
    }

    @Test func metricsEndpointServesCountersAndHistogramsByTenantExportAndOperation() throws {
        let f = try ServeFixture()
        try threeExports(f)
        try f.start()
        let session = try FUSESession(socketPath: f.socket("acme-home"))
        for i in 0..<5 { _ = try session.queue.mkdir(parent: 1, name: "d\(i)", mode: 0o755) }
        #expect(throws: (any Error).self) { try session.queue.mkdir(parent: 1, name: "d0", mode: 0o755) }

        #expect(FerryWait.until(30) { ((try? f.listJSON()) ?? []).allSatisfy { $0["state"] as? String != "starting" } })
        let response = try f.scrape()
        #expect(response.hasPrefix("HTTP/1.1 200 OK"))
        #expect(response.contains("Content-Type: text/plain; version=0.0.4"))
        let body = String(response[response.range(of: "\r\n\r\n")!.upperBound...])
        var samples: [String: Double] = [:]
        for line in body.split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            #expect(parts.count == 2, "malformed sample line: \(line)")
            samples[String(parts[0])] = Double(parts[1])
        }
        let home = "tenant=\"acme\",export=\"home\""
        #expect(samples["ferry_requests_total{\(home),operation=\"mkdir\"}"] == 6)
        #expect(samples["ferry_request_errors_total{\(home),operation=\"mkdir\"}"] == 1)
        #expect(samples["ferry_request_duration_seconds_count{\(home),operation=\"mkdir\"}"] == 6)
        #expect(samples["ferry_request_duration_seconds_bucket{\(home),operation=\"mkdir\",le=\"+Inf\"}"] == 6)
        // Buckets are cumulative.
        let buckets = body.split(separator: "\n").filter { $0.hasPrefix("ferry_request_duration_seconds_bucket{\(home),operation=\"mkdir\"") }
            .compactMap { Double($0.split(separator: " ")[1]) }
        #expect(buckets.count > 2 && buckets == buckets.sorted())
        #expect(samples["ferry_export_up{\(home)}"] == 1)
        #expect(samples["ferry_export_guest_connected{\(home)}"] == 1)
        #expect(samples["ferry_export_up{tenant=\"globex\",export=\"nfs\"}"] == 0)
        #expect(samples["ferry_inodes{\(home)}"] == 6)
        #expect(body.contains("# TYPE ferry_request_duration_seconds histogram"))
        #expect(f.stop() == 0)
        // Every log line an export writes names its tenant and export.
        let exportLines = f.log.split(separator: "\n").filter { $0.contains("front-end connected") || $0.contains("session started") }
        #expect(!exportLines.isEmpty)
        #expect(exportLines.allSatisfy { $0.contains("tenant=acme") && $0.contains("export=home") })
    }

    @Test func reloadAddsChangesAndRemovesExportsWhileAnotherKeepsServing() throws {
        let f = try ServeFixture()
        let a = try f.directory("a"), b = try f.directory("b")
        try f.writeTenant("alpha", f.posixExport("a", tenant: "alpha", path: a))
        try f.start()

        // A "guest" on export A works without a pause for the whole test.
        let session = try FUSESession(socketPath: f.socket("alpha-a"))
        let stop = Locked(false)
        let failures = Locked<[String]>([])
        let counter = Locked(0)
        let finished = DispatchSemaphore(value: 0)
        let worker = Thread {
            defer { finished.signal() }
            while !stop.value {
                let rounds = counter.value
                do {
                    let name = "f\(rounds % 8)"
                    let c = try session.queue.create(parent: 1, name: name, flags: O_RDWR | O_TRUNC, mode: 0o644)
                    let data = Array("round \(rounds)".utf8)
                    _ = try session.queue.write(nodeID: c.entry.nodeID, fh: c.open.fh, offset: 0, data: data)
                    let back = try session.queue.read(nodeID: c.entry.nodeID, fh: c.open.fh, offset: 0, size: 64)
                    if back != data { failures.update { $0.append("round \(rounds): read back \(back.count) bytes that differ") } }
                    try session.queue.release(nodeID: c.entry.nodeID, fh: c.open.fh)
                    counter.update { $0 += 1 }
                } catch {
                    failures.update { $0.append("round \(rounds): \(error)") }
                    return
                }
            }
        }
        worker.start()

        // Add B.
        try f.writeTenant("beta", f.posixExport("b", tenant: "beta", path: b))
        let added = try f.ferry(["reload", "--config", f.config])
        #expect(added.succeeded && added.output.contains("added: beta/b"), "\(added.output)")
        #expect(FerryWait.until(30) { (try? f.state("beta", "b")) == "listening" })
        let onB = try FUSESession(socketPath: f.socket("beta-b"))
        _ = try onB.queue.mkdir(parent: 1, name: "made-on-b", mode: 0o755)
        #expect(FileManager.default.fileExists(atPath: b + "/made-on-b"))

        // A broken configuration is rejected whole, with check-config's message, and changes nothing.
        try f.writeTenant("beta", f.posixExport("b", tenant: "beta", path: b, extra: "queues = 99"))
        let rejected = try f.ferry(["reload", "--config", f.config])
        #expect(rejected.status == 1)
        #expect(rejected.output.contains("tenants/beta.toml:7:10: queues must be between 1 and 16"), "\(rejected.output)")
        #expect(rejected.output.contains("configuration rejected"))
        _ = try onB.queue.getattr(nodeID: 1)

        // Change B (read-only now): B restarts alone; its old guest connection is closed.
        try f.writeTenant("beta", f.posixExport("b", tenant: "beta", path: b, extra: "read_only = true"))
        kill(f.process!.processIdentifier, SIGHUP)
        #expect(FerryWait.until(30) { (try? f.state("beta", "b")) == "listening" })
        let onNewB = try FUSESession(socketPath: f.socket("beta-b"))
        #expect(throws: (any Error).self) { try onNewB.queue.mkdir(parent: 1, name: "refused", mode: 0o755) }
        #expect(!FileManager.default.fileExists(atPath: b + "/refused"))

        // Remove B.
        try f.removeTenant("beta")
        let removed = try f.ferry(["reload", "--config", f.config])
        #expect(removed.output.contains("removed: beta/b"), "\(removed.output)")
        #expect(try f.state("beta", "b") == nil)
        #expect(!FileManager.default.fileExists(atPath: f.socket("beta-b")))

        // A worked throughout, on its first connection.
        let before = counter.value
        #expect(FerryWait.until(30) { counter.value > before + 20 })
        stop.update { $0 = true }
        #expect(finished.wait(timeout: .now() + 20) == .success)
        #expect(failures.value.isEmpty, "\(failures.value)")
        #expect(counter.value > 20)
        #expect(try f.state("alpha", "a") == "guest connected")
        #expect(f.log.contains("configuration reloaded"))
        #expect(f.stop() == 0)
    }

    @Test func quotaAndQoSFromTheConfigurationAreEnforced() throws {
        let f = try ServeFixture()
        let dir = try f.directory("q")
        try f.writeTenant("quota", f.posixExport("q", tenant: "quota", path: dir, extra: """
            [export.quota]
            bytes = "64KiB"
            inodes = 10
            [export.qos]
            iops = 40
            """))
        try f.start()
        let session = try FUSESession(socketPath: f.socket("quota-q"))
        let c = try session.queue.create(parent: 1, name: "big", flags: O_RDWR, mode: 0o644)
        _ = try session.queue.write(nodeID: c.entry.nodeID, fh: c.open.fh, offset: 0, data: [UInt8](repeating: 7, count: 60 << 10))
        do {
            _ = try session.queue.write(nodeID: c.entry.nodeID, fh: c.open.fh, offset: 60 << 10, data: [UInt8](repeating: 7, count: 8 << 10))
            Issue.record("a write past the quota succeeded")
        } catch FrontendError.fuseError(_, let errno) {
            #expect(errno == EDQUOT)
        }
        let started = Date()
        for _ in 0..<120 { _ = try session.queue.getattr(nodeID: 1) }
        // 40 tokens at start, 40 per second after: 120 requests cannot finish in under ~2 s.
        #expect(Date().timeIntervalSince(started) >= 1.8)
        let show = try f.ferry(["exports", "show", "quota/q", "--config", f.config])
        #expect(show.output.contains("quota refusals      1"), "\(show.output)")
        #expect(show.output.contains("quota bytes used    60.0 KiB"), "\(show.output)")
        #expect(!show.output.contains("throttled           0 requests"), "\(show.output)")
        #expect(f.stop() == 0)
    }

    @Test(.requires(.root))
    func theDaemonIsSandboxedByDefaultAndServesAndReloadsUnderSeccompKill() throws {
        let f = try ServeFixture(sandboxed: true, withExportsRoot: true)
        let a = try f.directory("a"), b = try f.directory("pool/b")
        try f.writeTenant("alpha", f.posixExport("a", tenant: "alpha", path: a, extra: "xattr = true"))
        try f.start()
        let launcher = f.process!.processIdentifier
        let children = SandboxTests.children(of: launcher)
        #expect(children.count == 1)
        let server = try #require(children.first)
        let status = try SandboxTests.Status(pid: server)
        #expect(status.seccomp == "2" && status.noNewPrivs == "1")
        #expect(status.effectiveCapabilities == SandboxTests.posixCapabilities)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(server)/ns/mnt")
                != FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/mnt"))

        // Every kind of request still works under the filter.
        let session: FUSESession
        session = try FUSESession(socketPath: f.socket("alpha-a"))
        try sandboxedWork(f, session, a, b)
    }

    func sandboxedWork(_ f: ServeFixture, _ session: FUSESession, _ a: String, _ b: String) throws {
        let c = try session.queue.create(parent: 1, name: "file", flags: O_RDWR, mode: 0o640)
        _ = try session.queue.write(nodeID: c.entry.nodeID, fh: c.open.fh, offset: 0, data: Array("sandboxed".utf8))
        try session.queue.fsync(nodeID: c.entry.nodeID, fh: c.open.fh)
        #expect(try session.queue.read(nodeID: c.entry.nodeID, fh: c.open.fh, offset: 0, size: 64) == Array("sandboxed".utf8))
        try session.queue.release(nodeID: c.entry.nodeID, fh: c.open.fh)
        let dir = try session.queue.mkdir(parent: 1, name: "dir", mode: 0o755)
        #expect(try session.queue.listDirectory(nodeID: 1).contains("dir"))
        #expect(throws: (any Error).self) { try session.queue.lookup(parent: dir.nodeID, name: "missing") }
        try session.queue.unlink(parent: 1, name: "file")
        #expect(!FileManager.default.fileExists(atPath: a + "/file"))
        #expect(try f.scrape().contains("ferry_requests_total{tenant=\"alpha\",export=\"a\",operation=\"mkdir\"} 1"))

        // A reload (new socket, new backend) under the filter.
        try f.writeTenant("beta", f.posixExport("b", tenant: "beta", path: b))
        let added = try f.ferry(["reload", "--config", f.config])
        #expect(added.succeeded && added.output.contains("added: beta/b"), "\(added.output)")
        #expect(FerryWait.until(30) { (try? f.state("beta", "b")) == "listening" })
        // Kept in a variable: a session dropped early closes its connection under the request.
        let onB = try FUSESession(socketPath: f.socket("beta-b"))
        _ = try onB.queue.mkdir(parent: 1, name: "on-b", mode: 0o755)
        withExtendedLifetime(onB) {}
        #expect(FileManager.default.fileExists(atPath: b + "/on-b"))

        #expect(f.stop() == 0, "\(f.log)")
        #expect(!FileManager.default.fileExists(atPath: f.controlSocket))
        #expect(!f.log.contains("seccomp stopped"))
    }

    @Test func aSlowExportNeverHoldsUpAnother() throws {
        // Export "slow" answers one request a second (its QoS); "fast" has no limit. Both
        // live in one daemon, each on its own threads. The slow guest's 12 requests need 11 s
        // at least; the fast guest's 100 finish long before on any machine, unless they
        // wait behind the slow export. (A lower bound of the bucket, not a speed.)
        let f = try ServeFixture()
        try f.writeTenant("slowpoke", f.posixExport("slow", tenant: "slowpoke", path: try f.directory("slow"), extra: "[export.qos]\niops = 1"))
        try f.writeTenant("sprinter", f.posixExport("fast", tenant: "sprinter", path: try f.directory("fast")))
        try f.start()
        let slow = try FUSESession(socketPath: f.socket("slowpoke-slow"))
        let fast = try FUSESession(socketPath: f.socket("sprinter-fast"))
        let slowDone = Locked(0)
        let finished = DispatchSemaphore(value: 0)
        Thread {
            for _ in 0..<12 { if (try? slow.queue.getattr(nodeID: 1)) != nil { slowDone.update { $0 += 1 } } }
            finished.signal()
        }.start()
        // While the slow export's guest waits for its tokens, the fast one gets its answers.
        #expect(FerryWait.until(30) { slowDone.value >= 1 })
        for _ in 0..<100 { _ = try fast.queue.getattr(nodeID: 1) }
        #expect(slowDone.value < 12, "the slow export finished first: it was not slowed, or the fast one was")
        #expect(finished.wait(timeout: .now() + 60) == .success)
        #expect(slowDone.value == 12)
        withExtendedLifetime((slow, fast)) {}
        #expect(f.stop() == 0)
    }

    @Test func anInvalidConfigurationStartsNothing() throws {
        let f = try ServeFixture()
        try f.writeTenant("bad", "[[export]]\nname = \"x\"\ntag = 5\n")
        let out = try f.ferry(["serve", "--config", f.config])
        #expect(out.status == 1)
        #expect(out.output.contains("tenants/bad.toml:3"), "\(out.output)")
        #expect(out.output.contains("nothing started"))
        #expect(!FileManager.default.fileExists(atPath: f.controlSocket))
    }

    @Test func theSampleConfigurationIsServed() throws {
        let config = BuiltProducts.packageRoot.path + "/config"
        let sample = ServeFixture.sampleControlSocket
        if FileManager.default.fileExists(atPath: sample), (try? runToCompletion(try BuiltProducts.require("ferry"), ["exports", "list", "--config", config]))?.output.contains("listening") == true {
            Issue.record("another ferry daemon already serves the sample configuration on \(sample)")
            return
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try BuiltProducts.require("ferry"))
        p.arguments = ["serve", "--config", config]
        let log = try makeTemporaryDirectory("ferry-sample") + "/serve.log"
        FileManager.default.createFile(atPath: log, contents: nil)
        p.standardError = FileHandle(forWritingAtPath: log)
        p.standardOutput = p.standardError
        try runWithDefaultSignalMask(p)
        defer { if p.isRunning { p.terminate(); p.waitUntilExit() } }
        var listing: [[String: Any]] = []
        #expect(FerryWait.until(30) {
            guard let out = try? runToCompletion(try BuiltProducts.require("ferry"), ["exports", "list", "--config", config, "--json"]),
                  let rows = try? JSONSerialization.jsonObject(with: Data(out.output.utf8)) as? [[String: Any]] else { return false }
            listing = rows
            return rows.contains { $0["state"] as? String == "listening" }
        }, "log:\n\((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        let states = Dictionary(uniqueKeysWithValues: listing.map { ($0["export"] as! String, $0["state"] as! String) })
        #expect(states["home"] == "listening")
        // Nothing on this machine is the sample's NFS server or Ceph cluster (unless the
        // backends find them): those report why, and the others serve regardless.
        for name in ["shared", "objects"] {
            let state = states[name] ?? "?"
            #expect(state == "listening" || state == "starting" || state.hasPrefix("error: "), "\(name): \(state)")
        }
        p.terminate()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
    }
}

extension ServeFixture {
    static let sampleControlSocket = "/run/ferry/control.sock"
}

/// Polls `condition` until it holds or `seconds` pass.
enum FerryWait {
    static func until(_ seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while !condition() {
            if Date() >= deadline { return false }
            usleep(20_000)
        }
        return true
    }
}
