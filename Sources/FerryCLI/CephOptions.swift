import ArgumentParser
import FerryDaemon
import FerryRADOSBackend

/// `--ceph-conf`, `--ceph-id`, `--ceph-keyring`: how to reach the cluster of a `rados://` source.
struct CephOptions: ParsableArguments {
    @Option(help: "ceph.conf of the cluster of a rados:// source.")
    var cephConf: String = "/etc/ceph/ceph.conf"

    @Option(help: "Ceph client id (without 'client.') for a rados:// source.")
    var cephId: String = "admin"

    @Option(help: "Keyring file with that client's key (cephx), for a rados:// source.")
    var cephKeyring: String?

    @Option(help: ArgumentHelp("Seconds the single-writer lease of a rados:// source lasts without renewal.", visibility: .hidden))
    var cephLeaseSeconds: Int = 30

    @Option(help: "Seconds a RADOS operation waits for an unreachable OSD before the client gets EIO (0: wait for ever).")
    var cephOpTimeout: Int = 60

    var access: CephAccess {
        CephAccess(conf: cephConf, clientID: cephId.hasPrefix("client.") ? String(cephId.dropFirst(7)) : cephId,
                   keyring: cephKeyring, leaseSeconds: cephLeaseSeconds, operationTimeout: cephOpTimeout)
    }
}
