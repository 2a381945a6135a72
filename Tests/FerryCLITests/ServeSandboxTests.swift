import FerryTestSupport
import FerryVhostFrontend
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The private roots of `ferry serve` and of `ferry virtiofsd` with a network source, as an
/// operator sees them from outside (/proc/PID/root, /proc/PID/mountinfo), with real work
/// through the vhost-user front-end under the default sandbox (seccomp kill), against the
/// real nfs-ganesha and a real Ceph cluster with cephx.
@Suite(.serialized, .requires(.root))
struct ServeSandboxTests {
    /// The mount points of a process's mount namespace, as it names them.
    static func mountPoints(of pid: pid_t) throws -> Set<String> {
        let text = try String(contentsOfFile: "/proc/\(pid)/mountinfo", encoding: .utf8)
        return Set(text.split(separator: "\n").map { String($0.split(separator: " ")[4]) })
    }

    /// What the top of a process's root holds.
    static func topOfRoot(of pid: pid_t) throws -> Set<String> {
        Set(try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/root"))
    }

    /// The name-resolution files this machine has: both roots of a NFS-capable process show them.
    static let nameFiles = ["/etc/hosts", "/etc/resolv.conf", "/etc/nsswitch.conf", "/etc/host.conf", "/etc/gai.conf"]
        .filter { FileManager.default.fileExists(atPath: $0) }

    /// The sandboxed server: the launcher's one child, with the sandbox /proc shows.
    static func sandboxedServer(of launcher: pid_t, capabilities: UInt64) throws -> pid_t {
        let children = SandboxTests.children(of: launcher)
        #expect(children.count == 1, "the sandboxed server runs as the launcher's one child")
        let server = try #require(children.first)
        let status = try SandboxTests.Status(pid: server)
        #expect(status.seccomp == "2" && status.noNewPrivs == "1")
        #expect(status.effectiveCapabilities == capabilities)
        return server
    }

    /// What a guest does to a file system: create, write, fsync, read, readdir, rename, unlink.
    static func exercise(_ q: FUSEQueueClient, _ name: String) throws {
        let data = Array("through the sandbox: \(name)".utf8)
        let c = try q.create(parent: 1, name: name, flags: O_RDWR, mode: 0o644)
        #expect(try q.write(nodeID: c.entry.nodeID, fh: c.open.fh, offset: 0, data: data) == UInt32(data.count))
        try q.fsync(nodeID: c.entry.nodeID, fh: c.open.fh)
        #expect(try q.read(nodeID: c.entry.nodeID, fh: c.open.fh, offset: 0, size: 4096) == data)
        try q.release(nodeID: c.entry.nodeID, fh: c.open.fh)
        #expect(try q.listDirectory(nodeID: 1).contains(name))
        try q.rename(parent: 1, name: name, newParent: 1, newName: name + ".renamed")
        let listed = try q.listDirectory(nodeID: 1)
        #expect(listed.contains(name + ".renamed") && !listed.contains(name))
        try q.unlink(parent: 1, name: name + ".renamed")
        #expect(!(try q.listDirectory(nodeID: 1)).contains(name + ".renamed"))
    }

    @Test func theDaemonsRootShowsOnlyWhatItServesAndAReloadOutsideItIsAnError() throws {
        let f = try ServeFixture(sandboxed: true, withExportsRoot: true)
        let a = try f.directory("a"), frozen = try f.directory("frozen")
        let inside = try f.directory("pool/inside"), outside = try f.directory("outside")
        FileManager.default.createFile(atPath: frozen + "/old", contents: Data("kept".utf8))
        try f.writeTenant("alpha", f.posixExport("a", tenant: "alpha", path: a)
                          + f.posixExport("frozen", tenant: "alpha", path: frozen, extra: "read_only = true"))
        try f.start()
        let server = try Self.sandboxedServer(of: f.process!.processIdentifier, capabilities: SandboxTests.posixCapabilities)

        // Its root is a tmpfs of its own holding exactly these, each at its own path.
        let expected = Set([f.config, f.top + "/run", f.exportsRoot, a, frozen, "/", "/proc"] + Self.nameFiles)
        #expect(try Self.mountPoints(of: server) == expected)
        let root = "/proc/\(server)/root"
        let top = try Self.topOfRoot(of: server)
        #expect(top.isSubset(of: ["etc", "proc", String(f.top.split(separator: "/")[0])]), "\(top)")
        for hidden in ["/usr", "/home", "/root", "/var", "/bin", "/work", outside, f.logPath] {
            #expect(!FileManager.default.fileExists(atPath: root + hidden), "\(hidden) is visible inside the root")
        }
        #expect(FileManager.default.fileExists(atPath: root + frozen + "/old"))
        #expect(access(root + frozen, W_OK) != 0 && errno == EROFS, "a read-only export is bound read-only")
        #expect(access(root + f.config, W_OK) != 0 && errno == EROFS)

        let onA = try FUSESession(socketPath: f.socket("alpha-a"))
        try Self.exercise(onA.queue, "a-file")

        // A reload: an export under exports_root serves; one elsewhere says why it cannot.
        try f.writeTenant("beta", f.posixExport("inside", tenant: "beta", path: inside)
                          + f.posixExport("outside", tenant: "beta", path: outside))
        let reload = try f.ferry(["reload", "--config", f.config])
        #expect(reload.succeeded && reload.output.contains("added: beta/inside, beta/outside"), "\(reload.output)")
        #expect(FerryWait.until(30) { (try? f.state("beta", "inside")) == "listening" })
        #expect(FerryWait.until(30) { (try? f.state("beta", "outside"))?.hasPrefix("error") == true })
        let refused = try f.state("beta", "outside") ?? ""
        #expect(refused == "error: \(outside) is outside the sandbox's root; restart ferry serve to add it, or put it under [sandbox] exports_root")
        let onInside = try FUSESession(socketPath: f.socket("beta-inside"))
        try Self.exercise(onInside.queue, "inside-file")
        _ = try onInside.queue.mkdir(parent: 1, name: "made-inside", mode: 0o755)
        #expect(FileManager.default.fileExists(atPath: inside + "/made-inside"))
        #expect(!FileManager.default.fileExists(atPath: f.socket("beta-outside")))

        // The others keep serving.
        try Self.exercise(onA.queue, "a-after-reload")
        #expect(try f.state("alpha", "a") == "guest connected")
        withExtendedLifetime((onA, onInside)) {}
        #expect(f.stop() == 0, "\(f.log)")
    }

    @Test(.requires(.root, .ganesha))
    func anNFSExportServesInsideTheDaemonsRoot() async throws {
        let nfs = try NFSTestServer.shared()
        try await nfs.shared {
            let export = try nfs.makeExport("serve-sandbox")
            let f = try ServeFixture(sandboxed: true)
            try f.writeTenant("net", f.export("nfs", tenant: "net", backend: """
                kind = "nfs"
                server = "localhost"
                path = "\(export)"
                version = 4
                """))
            try f.start()
            let server = try Self.sandboxedServer(of: f.process!.processIdentifier, capabilities: SandboxTests.posixCapabilities)
            #expect(try Self.mountPoints(of: server) == Set([f.config, f.top + "/run", "/", "/proc"] + Self.nameFiles))
            #expect(FerryWait.until(30) { (try? f.state("net", "nfs")) == "listening" }, "\(f.log)")
            let session = try FUSESession(socketPath: f.socket("net-nfs"))
            try Self.exercise(session.queue, "nfs-file")
            _ = try session.queue.mkdir(parent: 1, name: "on-the-server", mode: 0o755)
            #expect(FileManager.default.fileExists(atPath: export + "/on-the-server"))
            withExtendedLifetime(session) {}
            #expect(f.stop() == 0, "\(f.log)")
        }
    }

    /// A one-node cluster with cephx for this suite, so the keyring is read inside the root.
    static let cephx: Result<CephCluster, Error> = {
        let result = Result { try CephCluster(name: "sandbox", store: "memstore", cephx: true) }
        if case .success = result { atexit { if case .success(let c) = ServeSandboxTests.cephx { c.stop() } } }
        return result
    }()

    /// A formatted namespace of the cephx cluster.
    static func formattedNamespace(_ name: String) throws -> (CephCluster, String) {
        let cluster = try cephx.get()
        let namespace = name + "-" + UUID().uuidString.prefix(8)
        let formatted = try runToCompletion(try BuiltProducts.require("ferry"),
                                            ["format", cluster.source(namespace), "--ceph-id", "ferry", "--ceph-keyring", cluster.ferryKeyring]
                                            + cluster.cephArguments)
        #expect(formatted.succeeded, "\(formatted.output)")
        return (cluster, namespace)
    }

    @Test(.requires(.ceph))
    func aRADOSExportServesInsideTheDaemonsRoot() throws {
        let (cluster, namespace) = try Self.formattedNamespace("serve")
        let f = try ServeFixture(sandboxed: true)
        try f.writeTenant("obj", f.export("rados", tenant: "obj", backend: """
            kind = "rados"
            pool = "\(cluster.pool)"
            namespace = "\(namespace)"
            ceph_conf = "\(cluster.conf)"
            client_id = "ferry"
            keyring = "\(cluster.ferryKeyring)"
            """))
        try f.start()
        let server = try Self.sandboxedServer(of: f.process!.processIdentifier, capabilities: SandboxTests.posixCapabilities)
        #expect(try Self.mountPoints(of: server)
                == Set([f.config, f.top + "/run", cluster.conf, cluster.ferryKeyring, "/", "/proc"] + Self.nameFiles))
        #expect(FerryWait.until(30) { (try? f.state("obj", "rados")) == "listening" }, "\(f.log)")
        let session = try FUSESession(socketPath: f.socket("obj-rados"))
        try Self.exercise(session.queue, "rados-file")
        withExtendedLifetime(session) {}
        #expect(f.stop() == 0, "\(f.log)")
    }

    /// `ferry virtiofsd --source SOURCE` with the default sandbox, on a socket in a fresh directory.
    final class NetworkVirtiofsd {
        let top: String
        var socket: String { top + "/vhost.sock" }
        let process = Process()

        init(_ arguments: [String]) throws {
            top = try makeTemporaryDirectory("ferry-sandbox-net")
            process.executableURL = URL(fileURLWithPath: try BuiltProducts.require("ferry"))
            process.arguments = ["virtiofsd", "--socket-path=\(socket)"] + arguments
            process.standardError = FileHandle(forWritingAtPath: "/dev/null")
            try runWithDefaultSignalMask(process)
            #expect(FerryWait.until(30) { FileManager.default.fileExists(atPath: self.socket) || !self.process.isRunning })
            // The sandbox is set up right after the socket is created: wait for its filter.
            #expect(FerryWait.until(30) {
                SandboxTests.children(of: self.process.processIdentifier).first
                    .flatMap { try? SandboxTests.Status(pid: $0).seccomp } == "2"
            })
        }

        deinit {
            if process.isRunning { process.terminate(); process.waitUntilExit() }
            try? FileManager.default.removeItem(atPath: top)
        }

        /// A guest's work through the front-end, then SIGTERM; answers the exit status.
        func exerciseAndStop(_ name: String) throws -> Int32 {
            let session = try FUSESession(socketPath: socket)
            try ServeSandboxTests.exercise(session.queue, name)
            process.terminate()
            process.waitUntilExit()
            withExtendedLifetime(session) {}
            return process.terminationStatus
        }
    }

    @Test(.requires(.root, .ganesha))
    func virtiofsdWithAnNFSSourcePivotsIntoAMinimalRoot() async throws {
        let nfs = try NFSTestServer.shared()
        try await nfs.shared {
            let export = try nfs.makeExport("virtiofsd-sandbox")
            let d = try NetworkVirtiofsd(["--source=\(nfs.url(export, version: 4))"])
            let server = try Self.sandboxedServer(of: d.process.processIdentifier, capabilities: 0)
            #expect(try Self.mountPoints(of: server) == Set(["/"] + Self.nameFiles))
            #expect(try Self.topOfRoot(of: server) == (Self.nameFiles.isEmpty ? [] : ["etc"]))
            #expect(try d.exerciseAndStop("virtiofsd-nfs-file") == 0)
        }
    }

    @Test(.requires(.ceph))
    func virtiofsdWithARADOSSourcePivotsIntoAnEmptyRoot() throws {
        let (cluster, namespace) = try Self.formattedNamespace("virtiofsd")
        let d = try NetworkVirtiofsd(["--source=\(cluster.source(namespace))", "--ceph-id=ferry",
                                      "--ceph-keyring=\(cluster.ferryKeyring)", "--ceph-conf=\(cluster.conf)"])
        let server = try Self.sandboxedServer(of: d.process.processIdentifier, capabilities: 0)
        #expect(try Self.mountPoints(of: server) == ["/"])
        #expect(try Self.topOfRoot(of: server).isEmpty)
        #expect(try d.exerciseAndStop("virtiofsd-rados-file") == 0)
    }
}
