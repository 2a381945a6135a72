import FerryConfig
import FerryCore
import FerryRADOS
import Logging
import Synchronization

/// How to reach a Ceph cluster, from the command line.
public struct CephAccess: Equatable, Sendable {
    public var conf = "/etc/ceph/ceph.conf"
    public var clientID = "admin"
    /// nil: whatever ceph.conf says (or no cephx).
    public var keyring: String?
    /// How long the single-writer lease lasts unless renewed.
    public var leaseSeconds = 30
    /// Seconds before an op against an unreachable OSD fails with EIO; 0 retries for ever.
    public var operationTimeout = 60

    public init(conf: String = "/etc/ceph/ceph.conf", clientID: String = "admin", keyring: String? = nil,
                leaseSeconds: Int = 30, operationTimeout: Int = 60) {
        self.conf = conf
        self.clientID = clientID
        self.keyring = keyring
        self.leaseSeconds = leaseSeconds
        self.operationTimeout = operationTimeout
    }
}

/// `rados://POOL[/NAMESPACE]` with how to reach its cluster.
public struct RADOSSource: CustomStringConvertible {
    public var pool: String
    public var namespace: String
    public var cephConf: String
    public var clientID: String
    /// nil: whatever ceph.conf says (or no cephx).
    public var keyring: String?
    public var leaseSeconds = 30
    public var operationTimeout = 60

    public init(pool: String, namespace: String, cephConf: String, clientID: String, keyring: String?) {
        self.pool = pool
        self.namespace = namespace
        self.cephConf = cephConf
        self.clientID = clientID
        self.keyring = keyring
    }

    public init(parsing text: String, ceph: CephAccess) throws(CLIError) {
        guard text.hasPrefix("rados://") else { throw CLIError("\(text): not a rados:// source") }
        let rest = text.dropFirst("rados://".count)
        let pool: Substring, namespace: Substring
        if let slash = rest.firstIndex(of: "/") {
            pool = rest[..<slash]; namespace = rest[rest.index(after: slash)...]
        } else {
            pool = rest; namespace = ""
        }
        guard !pool.isEmpty, pool.utf8.count <= 255, !pool.contains(where: \.isWhitespace) else {
            throw CLIError("\(text): expected rados://POOL[/NAMESPACE] with a pool name")
        }
        guard !namespace.contains("/"), !namespace.contains(where: \.isWhitespace) else {
            throw CLIError("\(text): a RADOS namespace has no '/' or whitespace")
        }
        self.init(pool: String(pool), namespace: String(namespace), cephConf: ceph.conf,
                  clientID: ceph.clientID, keyring: ceph.keyring)
        leaseSeconds = ceph.leaseSeconds
        operationTimeout = ceph.operationTimeout
    }

    public var target: RADOSTarget {
        RADOSTarget(pool: pool, namespace: namespace, cephConf: cephConf, clientID: clientID, keyring: keyring,
                    operationTimeout: operationTimeout)
    }

    public var description: String { "rados://\(pool)" + (namespace.isEmpty ? "" : "/\(namespace)") }
}

/// The server of a RADOS export as a concrete type (see POSIXExportHandler for why).
final class RADOSExportHandler: DriverExportHandler, @unchecked Sendable {
    let server: FUSEServer<RADOSDriver>
    let driver: RADOSDriver

    init(_ server: FUSEServer<RADOSDriver>, driver: RADOSDriver) { self.server = server; self.driver = driver }

    var backendCounters: [BackendCounter] {
        [
            BackendCounter(name: "rados_timeouts", help: "RADOS operations that failed with ETIMEDOUT (past the op timeout).",
                           value: driver.pool.timedOutOperations.load(ordering: .relaxed)),
            BackendCounter(name: "rados_errors", help: "RADOS operations the cluster failed (EIO, ESHUTDOWN, blocklisted...).",
                           value: driver.pool.failedOperations.load(ordering: .relaxed)),
        ]
    }

    func handle(request: UnsafeRawBufferPointer, reply: inout ReplyArea) -> ReplyDisposition {
        server.handle(request: request, reply: &reply)
    }

    func handle(request: UnsafeRawBufferPointer, payload: IOVectors, reply: inout ReplyArea) -> ReplyDisposition {
        server.handle(request: request, payload: payload, reply: &reply)
    }

    func shutdown() {
        server.shutdown()
        driver.close()
    }
}

func openRADOSExport(_ source: RADOSSource, policy: ExportPolicy, logger: Logger,
                     migrationStandby: Bool = false) throws(CLIError) -> any ServedExport {
    let driver: RADOSDriver
    do {
        driver = try RADOSDriver(target: source.target,
                                 options: RADOSOptions(readOnly: policy.readOnly, leaseSeconds: source.leaseSeconds,
                                                       standby: migrationStandby ? .whenLeased : .never),
                                 logger: logger)
    } catch {
        throw CLIError("cannot serve \(source): \(error)")
    }
    do {
        return RADOSExportHandler(try FUSEServer(driver: driver, policy: policy, logger: logger), driver: driver)
    } catch {
        driver.close()
        throw CLIError("cannot serve \(source): \(error)")
    }
}
