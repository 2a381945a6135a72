import ArgumentParser
import FerryConfig
import FerryCore
import Logging

/// `--ceph-conf`, `--ceph-id`, `--ceph-keyring`: how to reach the cluster of a `rados://` source.
struct CephOptions: ParsableArguments {
    @Option(help: "ceph.conf of the cluster of a rados:// source.")
    var cephConf: String = "/etc/ceph/ceph.conf"

    @Option(help: "Ceph client id (without 'client.') for a rados:// source.")
    var cephId: String = "admin"

    @Option(help: "Keyring file with that client's key (cephx), for a rados:// source.")
    var cephKeyring: String?

    var access: CephAccess { CephAccess(conf: cephConf, clientID: cephId, keyring: cephKeyring) }
}

/// How to reach a Ceph cluster, from the command line.
struct CephAccess: Equatable, Sendable {
    var conf = "/etc/ceph/ceph.conf"
    var clientID = "admin"
    /// nil: whatever ceph.conf says (or no cephx).
    var keyring: String?
}

/// `rados://POOL[/NAMESPACE]` with how to reach its cluster.
struct RADOSSource: CustomStringConvertible {
    var pool: String
    var namespace: String
    var cephConf: String
    var clientID: String
    /// nil: whatever ceph.conf says (or no cephx).
    var keyring: String?

    init(pool: String, namespace: String, cephConf: String, clientID: String, keyring: String?) {
        self.pool = pool
        self.namespace = namespace
        self.cephConf = cephConf
        self.clientID = clientID
        self.keyring = keyring
    }

    init(parsing text: String, ceph: CephAccess) throws(CLIError) {
        throw CLIError("\(text): RADOS sources are not supported by this build yet")
    }

    var description: String { "rados://\(pool)" + (namespace.isEmpty ? "" : "/\(namespace)") }
}

func openRADOSExport(_ source: RADOSSource, policy: ExportPolicy, logger: Logger) throws(CLIError) -> any ServedExport {
    throw CLIError("\(source): RADOS exports are not supported by this build yet")
}
