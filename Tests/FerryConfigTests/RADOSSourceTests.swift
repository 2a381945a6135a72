import FerryBackend
import FerryRADOSBackend
import Testing
@testable import FerryConfig

/// `rados://POOL[/NAMESPACE]` with `--ceph-conf`, `--ceph-id`, `--ceph-keyring`, and a
/// `kind = "rados"` table, are read by one parser: the same defaults and checks. A tenant
/// file must name its cluster and identity all the same: a rule of the daemon's, apart.
@Suite struct RADOSSourceTests {
    /// `pool = "p"` and `keys`, as the parser reads a table (no tenant-file rule).
    func parsed(_ keys: String) throws -> (RADOSSource?, [String]) {
        var parser = TOMLParser("pool = \"p\"\n" + keys)
        let problems = ProblemList()
        let reader = TableReader(table: try parser.parseDocument(), file: "t.toml", name: "[export.backend]", problems: problems)
        let options = RADOSBackend.options(from: BackendTable(reader: reader, resolve: { $0 }, unverifiable: { _ in false }))
        return (options, messages(problems.problems.map(\.description)))
    }

    /// A tenant table's keys saying what `ceph` says on the command line.
    func keys(pool: String, namespace: String, _ clientID: String, _ ceph: CephAccess) -> String {
        "pool = \"\(pool)\"\nnamespace = \"\(namespace)\"\nclient_id = \"\(clientID)\"\n"
            + "ceph_conf = \"\(ceph.conf)\"\nkeyring = \"\(ceph.keyring ?? "")\""
    }

    @Test func aURLAndATableHaveTheSameDefaults() throws {
        let (table, problems) = try parsed("")
        #expect(problems == [])
        let url = try RADOSSource(parsing: "rados://p")
        #expect(table == url)
        #expect(url.cephConf == "/etc/ceph/ceph.conf" && url.clientID == "admin" && url.keyring == nil && url.namespace == "")
    }

    @Test func aURLWithItsSettingsAndATenantTableMeanTheSameExport() throws {
        let s = try Scratch(["ceph.conf": "[global]\n", "ferry.keyring": "[client.ferry]\n"])
        defer { s.remove() }
        let ceph = CephAccess(conf: s.path + "/ceph.conf", clientID: "ferry", keyring: s.path + "/ferry.keyring")
        let (table, problems) = try readTable(RADOSBackend.self, keys(pool: "p", namespace: "ns", "client.ferry", ceph))
        #expect(problems == [])
        let url = try RADOSSource(parsing: "rados://p/ns", ceph: ceph)
        #expect(table != nil && table == url)
        #expect(table == readSource(RADOSBackend.self, "rados://p/ns", settings: ceph.sourceSettings).0)
    }

    @Test func aURLWithItsSettingsAndATableGetTheSameProblems() throws {
        let s = try Scratch(["ferry.keyring": "[client.ferry]\n"])
        defer { s.remove() }
        let ceph = CephAccess(conf: s.path + "/missing.conf", clientID: "fer ry", keyring: s.path)
        let (_, table) = try readTable(RADOSBackend.self, keys(pool: "a b", namespace: "x y", "fer ry", ceph))
        let (_, url) = readSource(RADOSBackend.self, "rados://a b/x y", settings: ceph.sourceSettings)
        #expect(table == [
            "pool must be a Ceph pool name (1 to 255 bytes, no '/' or whitespace)",
            "a RADOS namespace has no '/' or whitespace",
            "client_id must be a Ceph client id such as \"ferry\" or \"client.ferry\"",
            "ceph.conf \(s.path)/missing.conf does not exist",
            "keyring \(s.path) is a directory, not a keyring file",
        ])
        #expect(url == table)
        // Where: the URL's parts at their column; a setting names the source only, the URL
        // not being where it was written.
        #expect(sourceProblem(RADOSBackend.self, "rados://a b/x y") == """
            rados://a b/x y:1:9: pool must be a Ceph pool name (1 to 255 bytes, no '/' or whitespace)
            rados://a b/x y:1:13: a RADOS namespace has no '/' or whitespace
            """)
        #expect(sourceProblem(RADOSBackend.self, "rados://p", settings: ["keyring": s.path])
            == "rados://p: keyring \(s.path) is a directory, not a keyring file")
    }

    /// The parser's defaults are the host's Ceph identity: a tenant file may not lean on them.
    @Test func aTenantFileMustNameItsOwnCephIdentity() throws {
        let s = try Scratch(["tenants/a.toml": tenant(backend: "kind = \"rados\"\npool = \"p\"")])
        defer { s.remove() }
        let why = "a tenant's export names its own Ceph identity, never the host's default (/etc/ceph/ceph.conf, client.admin)"
        #expect(s.problems() == ["client_id", "ceph_conf", "keyring"].map {
            "\(s.path)/tenants/a.toml:8:1: missing required key \"\($0)\" in [export.backend]; \(why)"
        })
    }
}
