import FerryBackend
import FerryBackends
import FerryNFSBackend
import FerryPOSIXBackend
import FerryRADOSBackend
import Foundation
import Testing
@testable import FerryConfig

/// Whether `problem` is the unknown-kind problem at `location`: the standard kinds in order,
/// then the kinds a test in this process registered by now (the memory backend's guest test
/// registers "memory", and may run at the same time), then the suggestion.
func isKindProblem(_ problem: String, at location: String, suggesting suggestion: String) -> Bool {
    let head = "\(location): backend kind must be one of \"posix\", \"nfs\", \"rados\""
    let tail = "; did you mean \"\(suggestion)\"?"
    guard problem.hasPrefix(head), problem.hasSuffix(tail), problem.count >= head.count + tail.count else { return false }
    let middle = String(problem.dropFirst(head.count).dropLast(tail.count))
    let registered = BackendRegistry.all.dropFirst(BackendRegistry.standard.count).map { ", \"\($0.kind)\"" }
    return (0...registered.count).contains { registered.prefix($0).joined() == middle }
}

/// A configuration directory under /tmp, removed by `remove()`.
struct Scratch {
    let path: String

    init(_ files: [String: String] = [:], tenantsDirectory: Bool = true) throws {
        path = NSTemporaryDirectory() + "ferry-config-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        if tenantsDirectory { try FileManager.default.createDirectory(atPath: path + "/tenants", withIntermediateDirectories: true) }
        for (name, text) in files { try write(name, text) }
    }

    func write(_ name: String, _ text: String) throws {
        let file = path + "/" + name
        try FileManager.default.createDirectory(atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: file, atomically: false, encoding: .utf8)
    }

    func mkdir(_ name: String) throws {
        try FileManager.default.createDirectory(atPath: path + "/" + name, withIntermediateDirectories: true)
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }

    /// Every problem, rendered.
    func problems() -> [String] {
        switch ConfigLoader.load(directory: path) {
        case .success: return []
        case .failure(let p): return p.problems.map(\.description)
        }
    }
}

/// A tenant file with one posix export on the scratch directory itself (which exists),
/// with `extra` lines added to the export table and the backend replaced when given.
func tenant(_ name: String = "acme", export: String = "data", tag: String? = nil, socket: String? = nil,
            extra: String = "", backend: String = "kind = \"posix\"\npath = \".\"") -> String {
    """
    name = "\(name)"

    [[export]]
    name = "\(export)"
    tag = "\(tag ?? "\(name)-\(export)")"
    socket = "\(socket ?? "/run/ferry/\(name)-\(export).sock")"
    \(extra)
    [export.backend]
    \(backend)
    """
}

/// The repository's config/ directory.
let sampleDirectory: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.appendingPathComponent("config").path
}()

@Suite struct ConfigTests {
    @Test func sampleConfigurationLoads() throws {
        let configuration = try ConfigLoader.load(directory: sampleDirectory).get()
        #expect(configuration.daemon.controlSocket == "/run/ferry/control.sock")
        #expect(configuration.daemon.metricsAddress == HostPort(host: "127.0.0.1", port: 9464))
        #expect(configuration.daemon.sandbox.mode == .namespace)
        let kinds = Set(configuration.exports.map(\.export.backend.kind))
        #expect(kinds == ["posix", "nfs", "rados"])
        let home = try #require(configuration.exports.first { $0.export.name == "home" }?.export)
        #expect(home.queues == 2)
        #expect(home.idMapping.squash == .root)
        #expect(home.idMapping.uidRanges == [IDRange(guest: 0, host: 100000, count: 65536)])
        #expect(home.limits.inflightBytes == 64 << 20)
        #expect(home.quota.bytes == 10 << 30)
        #expect(home.qos.bandwidth == 100 << 20)
        #expect(home.backend == Backend(POSIXBackend.self, .init(path: sampleDirectory + "/exports/demo")))
        // A trailing slash on the directory changes nothing.
        #expect((try? ConfigLoader.load(directory: sampleDirectory + "/").get()) != nil)
    }

    @Test func aMinimalTenantLoadsWithDefaults() throws {
        let s = try Scratch(["tenants/acme.toml": tenant()])
        defer { s.remove() }
        let c = try ConfigLoader.load(directory: s.path).get()
        let e = try #require(c.exports.first?.export)
        #expect(e.queues == 1 && e.cache == .auto && !e.readOnly && e.idMapping.squash == .none)
        #expect(e.allowMmap)
        #expect(c.daemon.logLevel == .info)
    }

    @Test func allowMmapCanBeTurnedOffPerExport() throws {
        let s = try Scratch(["tenants/acme.toml": tenant(extra: "cache = \"never\"\nallow_mmap = false")])
        defer { s.remove() }
        let e = try #require(try ConfigLoader.load(directory: s.path).get().exports.first?.export)
        #expect(e.cache == .never && !e.allowMmap)
        let bad = try Scratch(["tenants/acme.toml": tenant(extra: "allow_mmap = \"yes\"")])
        defer { bad.remove() }
        #expect(bad.problems().count == 1)
    }

    @Test func locksAreSharedByDefaultAndCanBeTurnedOffPerExport() throws {
        let on = try Scratch(["tenants/acme.toml": tenant()])
        defer { on.remove() }
        let shared = try #require(try ConfigLoader.load(directory: on.path).get().exports.first?.export)
        #expect(shared.locks)
        let off = try Scratch(["tenants/acme.toml": tenant(extra: "locks = false")])
        defer { off.remove() }
        let local = try #require(try ConfigLoader.load(directory: off.path).get().exports.first?.export)
        #expect(!local.locks)
        let bad = try Scratch(["tenants/acme.toml": tenant(extra: "locks = \"yes\"")])
        defer { bad.remove() }
        #expect(bad.problems() == ["\(bad.path)/tenants/acme.toml:7:9: locks must be a boolean (true or false), found a string"])
    }

    @Test func syntaxErrorHasFileLineAndColumn() throws {
        let s = try Scratch(["tenants/acme.toml": "name = \"acme\"\n[[export]]\nname = \"x\" y\n"])
        defer { s.remove() }
        #expect(s.problems() == ["\(s.path)/tenants/acme.toml:3:12: expected end of line after a value, found 'y'"])
    }

    @Test func unknownKeySuggestsAKnownOne() throws {
        let s = try Scratch(["tenants/acme.toml": tenant(extra: "cahce = \"auto\"\nfrobnicate = 1")])
        defer { s.remove() }
        #expect(s.problems() == [
            "\(s.path)/tenants/acme.toml:7:1: unknown key \"cahce\" in [[export]]; did you mean \"cache\"?",
            "\(s.path)/tenants/acme.toml:8:1: unknown key \"frobnicate\" in [[export]]",
        ])
    }

    @Test func unknownKeyInTheDaemonFile() throws {
        let s = try Scratch(["tenants/acme.toml": tenant(), "ferry.toml": "log_level = \"info\"\n[sandbox]\nmod = \"chroot\"\n"])
        defer { s.remove() }
        #expect(s.problems() == ["\(s.path)/ferry.toml:3:1: unknown key \"mod\" in [sandbox]; did you mean \"mode\"?"])
    }

    @Test func exportsRootIsAnExistingDirectoryTakenFromTheConfigurationDirectory() throws {
        let s = try Scratch(["tenants/acme.toml": tenant(), "ferry.toml": "[sandbox]\nexports_root = \"pool\"\n"])
        defer { s.remove() }
        #expect(s.problems() == ["\(s.path)/ferry.toml:2:16: exports_root pool does not exist"])
        try s.mkdir("pool")
        #expect(try ConfigLoader.load(directory: s.path).get().daemon.sandbox.exportsRoot == s.path + "/pool")
    }

    @Test func pathsTheCallerCannotSeeAreTakenAsWritten() throws {
        let s = try Scratch(["tenants/acme.toml": tenant(backend: "kind = \"posix\"\npath = \"/nowhere/at/all\"")])
        defer { s.remove() }
        #expect(!s.problems().isEmpty)
        let configuration = try ConfigLoader.load(directory: s.path, unverifiable: { $0.hasPrefix("/nowhere") }).get()
        #expect(configuration.exports.first?.export.backend == Backend(POSIXBackend.self, .init(path: "/nowhere/at/all")))
    }

    @Test func wrongTypes() throws {
        let s = try Scratch(["tenants/acme.toml": tenant(extra: "read_only = \"yes\"\nqueues = \"2\"")])
        defer { s.remove() }
        #expect(s.problems() == [
            "\(s.path)/tenants/acme.toml:7:13: read_only must be a boolean (true or false), found a string",
            "\(s.path)/tenants/acme.toml:8:10: queues must be an integer, found a string",
        ])
    }

    @Test func badEnumerations() throws {
        let s = try Scratch(["tenants/acme.toml": tenant(), "ferry.toml": "log_level = \"loud\"\n[sandbox]\nseccomp = \"kil\""])
        defer { s.remove() }
        #expect(s.problems() == [
            "\(s.path)/ferry.toml:1:13: log_level must be one of \"trace\", \"debug\", \"info\", \"notice\", \"warning\", \"error\", \"critical\"",
            "\(s.path)/ferry.toml:3:11: seccomp must be one of \"kill\", \"log\", \"trap\", \"none\"; did you mean \"kill\"?",
        ])
    }

    @Test func missingRequiredKeysPointAtTheTableHeader() throws {
        let s = try Scratch(["tenants/acme.toml": "name = \"acme\"\n\n[[export]]\nname = \"x\"\nsocket = \"/run/ferry/x.sock\"\n\n[export.backend]\npath = \"/\"\n"])
        defer { s.remove() }
        #expect(s.problems() == [
            "\(s.path)/tenants/acme.toml:3:1: missing required key \"tag\" in [[export]]",
            "\(s.path)/tenants/acme.toml:7:1: missing required key \"kind\" in [export.backend]",
        ])
        let noName = try Scratch(["tenants/acme.toml": "[[export]]\nname = \"x\"\ntag = \"t\"\nsocket = \"/run/ferry/x.sock\"\nbackend = { kind = \"posix\", path = \"/\" }\n"])
        defer { noName.remove() }
        #expect(noName.problems() == ["\(noName.path)/tenants/acme.toml:1: missing required key \"name\" in the tenant file"])
    }

    @Test func duplicateTenantNamesAcrossFilesNameBothFiles() throws {
        let s = try Scratch([
            "tenants/a.toml": tenant("acme", export: "one"),
            "tenants/b.toml": "# the same tenant again\n" + tenant("acme", export: "two"),
        ])
        defer { s.remove() }
        #expect(s.problems() == ["\(s.path)/tenants/b.toml:2:8: duplicate tenant name \"acme\" (also defined at \(s.path)/tenants/a.toml:1:8)"])
    }

    @Test func duplicateExportNamesWithinATenant() throws {
        let s = try Scratch(["tenants/a.toml": tenant(export: "one") + "\n\n[[export]]\nname = \"one\"\ntag = \"other\"\nsocket = \"/run/ferry/other.sock\"\nbackend = { kind = \"posix\", path = \".\" }\n"])
        defer { s.remove() }
        #expect(s.problems() == ["\(s.path)/tenants/a.toml:13:8: duplicate export name \"one\" in this tenant (first defined at \(s.path)/tenants/a.toml:4:8)"])
    }

    @Test func duplicateTagsAndSocketsAcrossTenantsNameBothPlaces() throws {
        let s = try Scratch([
            "tenants/a.toml": tenant("acme", tag: "shared", socket: "/run/ferry/s.sock"),
            "tenants/b.toml": tenant("beta", tag: "shared", socket: "/run/ferry/./s.sock"),
        ])
        defer { s.remove() }
        #expect(s.problems() == [
            "\(s.path)/tenants/b.toml:5:7: duplicate tag \"shared\": export acme/data at \(s.path)/tenants/a.toml:5:7 uses it too",
            "\(s.path)/tenants/b.toml:6:10: duplicate socket /run/ferry/s.sock: export acme/data at \(s.path)/tenants/a.toml:6:10 uses it too",
        ])
    }

    @Test func anExportSocketMayNotBeTheControlSocket() throws {
        let s = try Scratch(["tenants/a.toml": tenant(socket: "/run/ferry/control.sock")])
        defer { s.remove() }
        #expect(s.problems() == ["\(s.path)/tenants/a.toml:6:10: duplicate socket /run/ferry/control.sock: the daemon's control socket (the default) uses it too"])
    }

    @Test func posixDirectoryMissingOrNotADirectory() throws {
        let s = try Scratch([
            "tenants/a.toml": tenant(backend: "kind = \"posix\"\npath = \"exports/missing\""),
            "tenants/b.toml": tenant("beta", backend: "kind = \"posix\"\npath = \"tenants/a.toml\""),
        ])
        defer { s.remove() }
        #expect(s.problems() == [
            "\(s.path)/tenants/a.toml:10:8: export directory exports/missing does not exist",
            "\(s.path)/tenants/b.toml:10:8: export path tenants/a.toml is not a directory",
        ])
    }

    static let rados = """
        kind = "rados"
        pool = "p"
        client_id = "client.ferry"
        ceph_conf = "ceph.conf"
        keyring = "client.ferry.keyring"
        """

    @Test func radosKeyringUnreadableAndCephConfMissing() throws {
        let s = try Scratch(["tenants/a.toml": tenant(backend: Self.rados)])
        defer { s.remove() }
        #expect(s.problems() == [
            "\(s.path)/tenants/a.toml:12:13: ceph.conf ceph.conf does not exist",
            "\(s.path)/tenants/a.toml:13:11: keyring client.ferry.keyring is not readable: no such file or directory",
        ])
        try s.write("ceph.conf", "[global]\n")
        try s.write("client.ferry.keyring", "[client.ferry]\nkey = SECRET-IN-KEYRING\n")
        let c = try ConfigLoader.load(directory: s.path).get()
        guard let rados = c.exports.first?.export.backend.options(of: RADOSBackend.self) else { Issue.record("not rados"); return }
        let (client, keyring) = (rados.clientID, rados.keyring)
        #expect(client == "ferry")
        #expect(keyring == s.path + "/client.ferry.keyring")
    }

    @Test(arguments: [
        ("nfs.example.com", nil), ("localhost", nil), ("10.0.0.1", nil), ("::1", nil), ("[fe80::1]", nil), ("a-b.c", nil),
        ("bad_host", "malformed host name (letters, digits and '-' only)"),
        ("a..b", "malformed host name (empty label)"),
        ("-a.com", "malformed host name (a label starts or ends with '-')"),
        ("10.0.0.256", "malformed IPv4 address"),
        ("1.2.3", "malformed IPv4 address"),
        ("fe80:::1", "malformed IPv6 address"),
        ("[::1", "malformed IPv6 literal (no closing ']')"),
        ("", "must not be empty"),
    ] as [(String, String?)])
    func hostNames(_ host: String, _ problem: String?) {
        #expect(checkHost(host) == problem)
    }

    @Test func nfsServerPathAndVersion() throws {
        let s = try Scratch(["tenants/a.toml": tenant(backend: "kind = \"nfs\"\nserver = \"nfs..example\"\npath = \"exports\"\nversion = 5")])
        defer { s.remove() }
        #expect(s.problems() == [
            "\(s.path)/tenants/a.toml:10:10: server: malformed host name (empty label)",
            "\(s.path)/tenants/a.toml:11:8: nfs path must be absolute (the export's path on the server)",
            "\(s.path)/tenants/a.toml:12:11: version must be 3, 4, 4.0, 4.1 or 4.2, found 5",
        ])
    }

    @Test func nfsTimeoutHardAndConnections() throws {
        let good = try Scratch(["tenants/a.toml": tenant(backend: "kind = \"nfs\"\nserver = \"127.0.0.1\"\npath = \"/x\"\ntimeout = 2.5\nconnections = 8")])
        defer { good.remove() }
        let loaded = try ConfigLoader.load(directory: good.path).get()
        guard let client = loaded.tenants[0].exports[0].backend.options(of: NFSBackend.self) else { Issue.record("not nfs"); return }
        #expect(client.timeout == 2.5 && client.connections == 8)

        let hard = try Scratch(["tenants/a.toml": tenant(backend: "kind = \"nfs\"\nserver = \"127.0.0.1\"\npath = \"/x\"\nhard = true")])
        defer { hard.remove() }
        guard let hardClient = try ConfigLoader.load(directory: hard.path).get().tenants[0].exports[0].backend.options(of: NFSBackend.self) else { return }
        #expect(hardClient.timeout == nil)

        let bad = try Scratch(["tenants/a.toml": tenant(backend: "kind = \"nfs\"\nserver = \"127.0.0.1\"\npath = \"/x\"\ntimeout = 0\nhard = true\nconnections = 100")])
        defer { bad.remove() }
        #expect(bad.problems() == [
            "\(bad.path)/tenants/a.toml:12:11: timeout must be a positive number of seconds, found an integer",
            "\(bad.path)/tenants/a.toml:12:11: hard = true waits for the server for ever: it cannot have a timeout too",
            "\(bad.path)/tenants/a.toml:14:15: connections must be between 1 and 64, found 100",
        ])
    }

    @Test func unknownBackendKind() throws {
        let s = try Scratch(["tenants/a.toml": tenant(backend: "kind = \"posx\"\npath = \".\"")])
        defer { s.remove() }
        let problems = s.problems()
        #expect(problems.count == 1 && isKindProblem(problems[0], at: "\(s.path)/tenants/a.toml:9:8", suggesting: "posix"), "\(problems)")
        #expect(BackendRegistry.standard.map { $0.kind } == ["posix", "nfs", "rados"])
    }

    @Test func queueCountOutOfRange() throws {
        let s = try Scratch(["tenants/a.toml": tenant(extra: "queues = 0")])
        defer { s.remove() }
        #expect(s.problems() == ["\(s.path)/tenants/a.toml:7:10: queues must be between 1 and 16, found 0"])
    }

    @Test func threadsPerQueueOutOfRangeOrWrongType() throws {
        let s = try Scratch([
            "tenants/a.toml": tenant(extra: "threads_per_queue = 65"),
            "tenants/b.toml": tenant("beta", extra: "threads_per_queue = \"8\""),
            "tenants/c.toml": tenant("gamma", extra: "threads_per_queue = 0"),
        ])
        defer { s.remove() }
        #expect(s.problems() == [
            "\(s.path)/tenants/a.toml:7:21: threads_per_queue must be between 0 and 64, found 65",
            "\(s.path)/tenants/b.toml:7:21: threads_per_queue must be an integer, found a string",
        ])
    }

    @Test func tagTooLongOrEmpty() throws {
        let s = try Scratch([
            "tenants/a.toml": tenant(tag: String(repeating: "t", count: 37)),
            "tenants/b.toml": tenant("beta", tag: ""),
            "tenants/c.toml": tenant("gamma", tag: String(repeating: "é", count: 18)),   // 36 bytes: fine
        ])
        defer { s.remove() }
        #expect(s.problems() == [
            "\(s.path)/tenants/a.toml:5:7: tag is 37 bytes long; virtio-fs tags are at most 36 bytes",
            "\(s.path)/tenants/b.toml:5:7: tag must not be empty",
        ])
    }

    @Test func socketDirectoryMustExistUnlessUnderRun() throws {
        let s = try Scratch(["tenants/a.toml": tenant(socket: "/nonexistent-ferry/x.sock"), "tenants/b.toml": tenant("beta", socket: "relative.sock")])
        defer { s.remove() }
        #expect(s.problems() == [
            "\(s.path)/tenants/a.toml:6:10: socket directory /nonexistent-ferry does not exist (only directories under /run/ are created by the daemon)",
            "\(s.path)/tenants/b.toml:6:10: socket must be an absolute path",
        ])
        // An existing directory anywhere is fine; a missing one under /run is created at start.
        let ok = try Scratch(["tenants/a.toml": tenant(socket: NSTemporaryDirectory() + "a.sock"), "tenants/b.toml": tenant("beta", socket: "/run/ferry-not-yet/b/c.sock")])
        defer { ok.remove() }
        #expect(ok.problems() == [])
    }

    @Test func badSizesAndNegativeLimits() throws {
        let s = try Scratch(["tenants/a.toml": tenant(extra: """
            [export.limits]
            inodes = -1
            inflight_bytes = "12 MeB"
            [export.quota]
            bytes = -5
            [export.qos]
            bandwidth = "fast"
            """)])
        defer { s.remove() }
        #expect(s.problems() == [
            "\(s.path)/tenants/a.toml:8:10: inodes must not be negative",
            "\(s.path)/tenants/a.toml:9:18: inflight_bytes: unknown size unit \"MeB\"; did you mean \"MB\"?; expected a number of bytes with an optional unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), such as \"100MiB\"",
            "\(s.path)/tenants/a.toml:11:9: bytes must not be negative",
            "\(s.path)/tenants/a.toml:13:13: bandwidth: expected a number of bytes with an optional unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB) and \"/s\", such as \"100MiB\"",
        ])
    }

    @Test func sizes() throws {
        #expect(try parseSize("100MiB", perSecond: false).get() == 100 << 20)
        #expect(try parseSize("2 GB", perSecond: false).get() == 2_000_000_000)
        #expect(try parseSize("1_024", perSecond: false).get() == 1024)
        #expect(try parseSize("5KiB/s", perSecond: true).get() == 5120)
        #expect((try? parseSize("5KiB/s", perSecond: false).get()) == nil)
        #expect((try? parseSize("99999999TiB", perSecond: false).get()) == nil)
    }

    @Test func idMappingRanges() throws {
        let s = try Scratch(["tenants/a.toml": tenant(extra: """
            [export.id_mapping]
            squash = "everyone"
            anon_uid = -1
            uid_map = [
              { guest = 0, host = 100000, count = 1000 },
              { guest = 500, host = 300000, count = 10 },
              { guest = 4294967295, host = 0, count = 2 },
              { guest = 1, host = 1 },
            ]
            """)])
        defer { s.remove() }
        #expect(s.problems() == [
            "\(s.path)/tenants/a.toml:8:10: squash must be one of \"none\", \"root\", \"all\"",
            "\(s.path)/tenants/a.toml:9:12: anon_uid must be between 0 and 4294967294",
            "\(s.path)/tenants/a.toml:12:3: uid_map range overlaps the guest ids of the range on line 11",
            "\(s.path)/tenants/a.toml:13:3: uid_map range goes past id 4294967295",
            "\(s.path)/tenants/a.toml:14:3: missing required key \"count\" in a uid_map range",
        ])
    }

    @Test func daemonFileChecks() throws {
        let s = try Scratch(["tenants/a.toml": tenant(), "ferry.toml": "control_socket = \"run/x.sock\"\nmetrics = \"localhost\"\n"])
        defer { s.remove() }
        #expect(s.problems() == [
            "\(s.path)/ferry.toml:1:18: control_socket must be an absolute path",
            "\(s.path)/ferry.toml:2:11: metrics: expected host:port (such as 127.0.0.1:9464)",
        ])
        #expect(try parseHostPort("[::1]:9464").get() == HostPort(host: "::1", port: 9464))
        #expect((try? parseHostPort("::1:9464").get()) == nil)
        #expect((try? parseHostPort("host:0").get()) == nil)
    }

    @Test func tenantsDirectoryAndFileNames() throws {
        let none = try Scratch(tenantsDirectory: false)
        defer { none.remove() }
        #expect(none.problems() == ["\(none.path)/tenants: missing tenants directory (one TOML file per tenant goes in \(none.path)/tenants/)"])
        let s = try Scratch(["tenants/a.toml": tenant(), "tenants/b.tml": "", "tenants/.hidden.swp": "x"])
        defer { s.remove() }
        #expect(s.problems() == ["\(s.path)/tenants/b.tml: not a tenant file: tenant files are named tenants/*.toml"])
        #expect(ConfigLoader.load(directory: "/nonexistent-ferry-config").failure?.description == "/nonexistent-ferry-config: configuration directory does not exist")
    }

    @Test func aTenantWithoutExports() throws {
        let s = try Scratch(["tenants/a.toml": "name = \"acme\"\n"])
        defer { s.remove() }
        #expect(s.problems() == ["\(s.path)/tenants/a.toml:1:1: tenant has no exports (add [[export]] blocks)"])
    }

    @Test func everyProblemIsReportedNotJustTheFirst() throws {
        let s = try Scratch([
            "tenants/a.toml": "name = \"a\"\n[[export]]\nname = \"x\" x\n",
            "tenants/b.toml": tenant("b", extra: "queues = 99"),
            "ferry.toml": "log_level = 3\n",
        ])
        defer { s.remove() }
        #expect(s.problems().count == 3)
    }

    @Test func secretsAreNeverWrittenInlineNorPrinted() throws {
        let key = "AQBzanZhAAAAABAAq1w2e3r4t5y6u7i8o9p0a1s2d3=="
        let s = try Scratch(["tenants/a.toml": tenant(backend: Self.rados + "\nkey = \"\(key)\""), "ceph.conf": "", "client.ferry.keyring": "key = \(key)\n"])
        defer { s.remove() }
        let problems = s.problems()
        #expect(problems == ["\(s.path)/tenants/a.toml:14:1: \"key\" is not allowed: secrets are referred to by path, never written inline; put the key in a keyring file and set keyring = \"PATH\""])
        // The key itself where the keyring path belongs: reported, never echoed.
        let inKeyring = try Scratch(["tenants/a.toml": tenant(backend: Self.rados.replacingOccurrences(of: "\"client.ferry.keyring\"", with: "\"\(key)\"")), "ceph.conf": ""])
        defer { inKeyring.remove() }
        #expect(inKeyring.problems() == ["\(inKeyring.path)/tenants/a.toml:13:11: keyring must be the path of a keyring file, not the key: secrets are referred to by path, never written inline"])
        // A secret in an unknown key, in a syntax error, or in a keyring file never shows either.
        let elsewhere = try Scratch([
            "tenants/a.toml": tenant(extra: "secret = \"\(key)\"\npasword = \"\(key)\""),
            "tenants/b.toml": "name = \"b\"\nx = \"\(key)\" \"\(key)\"\n",
        ])
        defer { elsewhere.remove() }
        let all = problems + inKeyring.problems() + elsewhere.problems()
        #expect(elsewhere.problems().count == 3)
        for line in all { #expect(!line.contains(key)) }
        // Nor in a successful load's summary of the backend.
        try s.write("tenants/a.toml", tenant(backend: Self.rados))
        let c = try ConfigLoader.load(directory: s.path).get()
        #expect(!c.exports.map(\.export.backend.summary).joined().contains(key))
        #expect(!String(describing: c.exports.map(\.export.backend)).contains(key))
    }
}

extension Result {
    var failure: Failure? {
        if case .failure(let f) = self { return f }
        return nil
    }
}
