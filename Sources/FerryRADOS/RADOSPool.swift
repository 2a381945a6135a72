import CRados
import Synchronization
import FerryCore
#if canImport(Glibc)
import Glibc
#endif

/// How to reach a cluster and which pool/namespace holds the file system.
public struct RADOSTarget: Sendable, Equatable, CustomStringConvertible {
    public var pool: String
    public var namespace: String
    public var cephConf: String
    /// Without `client.`.
    public var clientID: String
    /// nil: whatever ceph.conf says (or no cephx).
    public var keyring: String?
    /// Seconds before an op against an unreachable OSD fails (ETIMEDOUT, the guest sees
    /// EIO); 0 waits for ever (librados retries until the OSD is back).
    public var operationTimeout: Int

    public init(pool: String, namespace: String = "", cephConf: String, clientID: String = "admin",
                keyring: String? = nil, operationTimeout: Int = 60) {
        self.pool = pool; self.namespace = namespace; self.cephConf = cephConf
        self.clientID = clientID; self.keyring = keyring; self.operationTimeout = operationTimeout
    }

    public var description: String { "rados://\(pool)" + (namespace.isEmpty ? "" : "/\(namespace)") }
}

/// A librados failure with what was being done, for the operator (CLI, fsck, startup).
public struct RADOSError: Error, CustomStringConvertible {
    public let code: Int32
    public let what: String
    /// `what` says it all: no strerror appended.
    let complete: Bool
    public init(_ code: Int32, _ what: String) { self.code = code; self.what = what; complete = false }
    public init(_ code: Int32, explanation: String) { self.code = code; self.what = explanation; complete = true }
    public var description: String { complete ? what : "\(what): \(String(cString: strerror(code)))" }
}

/// A connected cluster handle and an I/O context on one pool and namespace. librados
/// handles are thread-safe, so one `RADOSPool` serves every request thread.
/// @unchecked Sendable: librados cluster and I/O context handles are thread-safe and never change after
/// init; the counters are Atomics and the test fault hook a Mutex.
public final class RADOSPool: @unchecked Sendable {
    let cluster: rados_t
    let io: rados_ioctx_t
    public let target: RADOSTarget

    public init(_ target: RADOSTarget) throws(RADOSError) {
        self.target = target
        var cluster: rados_t?
        var rc = rados_create2(&cluster, "ceph", "client.\(target.clientID)", 0)
        guard rc == 0, let cluster else { throw RADOSError(-rc, "rados_create2(client.\(target.clientID))") }
        rc = rados_conf_read_file(cluster, target.cephConf)
        if rc < 0 { rados_shutdown(cluster); throw RADOSError(-rc, "reading \(target.cephConf)") }
        if let keyring = target.keyring {
            rc = rados_conf_set(cluster, "keyring", keyring)
            if rc < 0 { rados_shutdown(cluster); throw RADOSError(-rc, "keyring \(keyring)") }
        }
        if target.operationTimeout > 0 {
            _ = rados_conf_set(cluster, "rados_osd_op_timeout", "\(target.operationTimeout)")
            _ = rados_conf_set(cluster, "rados_mon_op_timeout", "\(target.operationTimeout)")
        }
        _ = rados_conf_set(cluster, "client_mount_timeout", "20")
        rc = rados_connect(cluster)
        if rc < 0 {
            rados_shutdown(cluster)
            throw RADOSError(-rc, "connecting to the cluster of \(target.cephConf) as client.\(target.clientID)")
        }
        var io: rados_ioctx_t?
        rc = rados_ioctx_create(cluster, target.pool, &io)
        guard rc == 0, let io else {
            rados_shutdown(cluster)
            throw RADOSError(-rc, "opening pool \(target.pool)")
        }
        rados_ioctx_set_namespace(io, target.namespace.isEmpty ? nil : target.namespace)
        self.cluster = cluster
        self.io = io
    }

    deinit {
        rados_ioctx_destroy(io)
        rados_shutdown(cluster)
    }

    /// This client's address as the OSDs see it (what a blocklist entry names).
    public var address: String? {
        var addrs: UnsafeMutablePointer<CChar>?
        guard rados_getaddrs(cluster, &addrs) == 0, let addrs else { return nil }
        defer { free(addrs) }
        return String(cString: addrs)
    }

    /// Fences `address` off the cluster for `seconds`: the OSDs refuse its ops from then on.
    public func blocklist(_ address: String, seconds: UInt32) -> Int32 {
        var copy = Array(address.utf8CString)
        let rc = rados_blocklist_add(cluster, &copy, seconds)
        // Our next ops must reach OSDs that already know the entry.
        if rc == 0 { _ = rados_wait_for_latest_osdmap(cluster) }
        return rc
    }

    /// This client's instance id (`client.N`), for lock descriptions.
    public var instanceID: UInt64 { rados_get_instance_id(cluster) }

    // MARK: - Single-object operations

    /// Operations that failed with ETIMEDOUT (an OSD or monitor past the op timeout) and
    /// other errors from the cluster itself (EIO, ESHUTDOWN, EBLOCKLISTED...), for metrics.
    public let timedOutOperations = Atomic<UInt64>(0)
    public let failedOperations = Atomic<UInt64>(0)

    /// Counts `rc` if it is a failure of the cluster rather than an answer (ENOENT, EEXIST,
    /// ECANCELED from a guard are answers); returns it.
    @inline(__always) @discardableResult
    func note(_ rc: Int32) -> Int32 {
        if rc == -ETIMEDOUT { timedOutOperations.add(1, ordering: .relaxed) }
        else if rc == -EIO || rc == -ESHUTDOWN || rc == -ENOTCONN || rc == -108 { failedOperations.add(1, ordering: .relaxed) }
        return rc
    }

    /// Object removals issued (synchronous and batched): what a truncate or unlink cost, for
    /// tests and metrics.
    public let removeOperations = Atomic<UInt64>(0)

    /// A fault to inject, for tests: a synchronous write op on an object for which it answers
    /// an error fails with that error without being sent.
    public func injectWriteFault(_ fault: (@Sendable (String) -> Int32?)?) { writeFault.withLock { $0 = fault } }
    private let writeFault = Mutex<(@Sendable (String) -> Int32?)?>(nil)

    /// Runs one compound write op on `oid`; returns 0 or a negative errno.
    @discardableResult
    public func write(_ oid: String, _ build: (WriteOp) -> Void) -> Int32 {
        if let rc = writeFault.withLock({ $0?(oid) }) { return note(rc) }
        let op = WriteOp()
        build(op)
        return note(rados_write_op_operate2(op.op, io, oid, nil, 0))
    }

    /// The value of xattr `name` of `oid` (nil if the object or attribute is missing).
    public func xattr(_ oid: String, _ name: String, capacity: Int = 4096) -> Result<[UInt8]?, RADOSError> {
        var buffer = [UInt8](repeating: 0, count: capacity)
        let n = buffer.withUnsafeMutableBytes { raw in
            rados_getxattr(io, oid, name, raw.baseAddress!.assumingMemoryBound(to: CChar.self), raw.count)
        }
        if n == -ENOENT || n == -ENODATA { return .success(nil) }
        if n < 0 { return .failure(RADOSError(-n, "getxattr \(oid) \(name)")) }
        return .success(Array(buffer[0..<Int(n)]))
    }

    /// The values of `keys` in the omap of `oid` (missing keys and a missing object: absent).
    public func omapValues(_ oid: String, keys: [[UInt8]]) -> Result<[[UInt8]: [UInt8]], RADOSError> {
        let op = rados_create_read_op()!
        defer { rados_release_read_op(op) }
        var iter: rados_omap_iter_t?
        var prval: Int32 = 0
        withCStringArray(keys) { pointers, lengths in
            rados_read_op_omap_get_vals_by_keys2(op, pointers, keys.count, lengths, &iter, &prval)
        }
        let rc = rados_read_op_operate(op, io, oid, 0)
        if rc == -ENOENT { return .success([:]) }
        if rc < 0 { return .failure(RADOSError(-rc, "omap get \(oid)")) }
        return .success(drain(iter))
    }

    /// Up to `max` omap entries of `oid` after `startAfter`, and whether more follow.
    public func omapList(_ oid: String, after startAfter: [UInt8]?, prefix: String? = nil, max: Int = 4096)
        -> Result<(entries: [([UInt8], [UInt8])], more: Bool), RADOSError> {
        let op = rados_create_read_op()!
        defer { rados_release_read_op(op) }
        var iter: rados_omap_iter_t?
        var prval: Int32 = 0
        var more: UInt8 = 0
        // omap keys are compared as strings by librados' C API: a NUL-terminated start key.
        let start = startAfter.map { $0 + [0] }
        start.withOptionalCString { startPointer in
            rados_read_op_omap_get_vals2(op, startPointer, prefix, UInt64(max), &iter, &more, &prval)
        }
        let rc = rados_read_op_operate(op, io, oid, 0)
        if rc == -ENOENT { return .success(([], false)) }
        if rc < 0 { return .failure(RADOSError(-rc, "omap list \(oid)")) }
        var entries: [([UInt8], [UInt8])] = []
        drainEach(iter) { entries.append(($0, $1)) }
        return .success((entries, more != 0))
    }

    /// Every omap entry of `oid`.
    public func omapAll(_ oid: String, prefix: String? = nil) -> Result<[([UInt8], [UInt8])], RADOSError> {
        var all: [([UInt8], [UInt8])] = []
        var after: [UInt8]? = nil
        while true {
            switch omapList(oid, after: after, prefix: prefix) {
            case .failure(let e): return .failure(e)
            case .success(let page):
                all += page.entries
                if !page.more || page.entries.isEmpty { return .success(all) }
                after = page.entries.last!.0
            }
        }
    }

    public func remove(_ oid: String) -> Int32 {
        removeOperations.add(1, ordering: .relaxed)
        return rados_remove(io, oid)
    }

    public func truncate(_ oid: String, size: UInt64) -> Int32 { rados_trunc(io, oid, size) }

    /// Size of `oid`, or nil when it does not exist.
    public func size(_ oid: String) -> Result<UInt64?, RADOSError> {
        var size: UInt64 = 0
        var mtime: time_t = 0
        let rc = rados_stat(io, oid, &size, &mtime)
        if rc == -ENOENT { return .success(nil) }
        if rc < 0 { return .failure(RADOSError(-rc, "stat \(oid)")) }
        return .success(size)
    }

    /// Every object name in the pool's namespace.
    public func listObjects() -> Result<[String], RADOSError> {
        var ctx: rados_list_ctx_t?
        var rc = rados_nobjects_list_open(io, &ctx)
        if rc < 0 { return .failure(RADOSError(-rc, "listing objects")) }
        defer { rados_nobjects_list_close(ctx) }
        var names: [String] = []
        while true {
            var entry: UnsafePointer<CChar>?
            var entrySize = 0
            rc = rados_nobjects_list_next2(ctx, &entry, nil, nil, &entrySize, nil, nil)
            if rc == -ENOENT { return .success(names) }
            if rc < 0 { return .failure(RADOSError(-rc, "listing objects")) }
            names.append(String(decoding: UnsafeRawBufferPointer(start: entry, count: entrySize), as: UTF8.self))
        }
    }

    /// Kilobytes total and available, and objects, of the whole cluster.
    public func clusterStatistics() -> (kb: UInt64, available: UInt64, objects: UInt64)? {
        var st = rados_cluster_stat_t()
        guard rados_cluster_stat(cluster, &st) == 0 else { return nil }
        return (st.kb, st.kb_avail, st.num_objects)
    }

    /// Bytes stored in this pool (all namespaces).
    public func usedBytes() -> UInt64 {
        var st = rados_pool_stat_t()
        guard rados_ioctx_pool_stat(io, &st) == 0 else { return 0 }
        return st.num_bytes
    }

    // MARK: - Locks

    /// Takes (or, with `renew`, renews) the exclusive lock `name` on `oid` for `seconds`.
    public func lockExclusive(_ oid: String, name: String, cookie: String, description: String,
                              seconds: Int, renew: Bool) -> Int32 {
        var duration = timeval(tv_sec: seconds, tv_usec: 0)
        return rados_lock_exclusive(io, oid, name, cookie, description, &duration,
                                    renew ? UInt8(LIBRADOS_LOCK_FLAG_MAY_RENEW) : 0)
    }

    public func unlock(_ oid: String, name: String, cookie: String) -> Int32 {
        rados_unlock(io, oid, name, cookie)
    }

    /// Who holds lock `name` on `oid` (client, cookie, address), if anyone.
    func lockOwner(_ oid: String, name: String) -> (client: String, cookie: String, address: String)? {
        var exclusive: Int32 = 0
        var tag = [CChar](repeating: 0, count: 256), clients = [CChar](repeating: 0, count: 1024)
        var cookies = [CChar](repeating: 0, count: 1024), addresses = [CChar](repeating: 0, count: 1024)
        var tagLength = tag.count, clientsLength = clients.count
        var cookiesLength = cookies.count, addressesLength = addresses.count
        let n = rados_list_lockers(io, oid, name, &exclusive, &tag, &tagLength, &clients, &clientsLength,
                                   &cookies, &cookiesLength, &addresses, &addressesLength)
        guard n > 0 else { return nil }
        return (String(nulTerminated: clients), String(nulTerminated: cookies), String(nulTerminated: addresses))
    }

    func breakLock(_ oid: String, name: String, client: String, cookie: String) -> Int32 {
        rados_break_lock(io, oid, name, client, cookie)
    }

    // MARK: - Asynchronous operations

    /// Ops issued together and awaited together: how large reads and writes reach several
    /// data objects (and READDIR several shards) at once.
    public final class Batch {
        let pool: RADOSPool
        var completions: [rados_completion_t] = []
        var readOps: [rados_read_op_t] = []
        var writeOps: [rados_write_op_t] = []
        /// Per completion: what to do with its result (after all completed).
        var handlers: [(Int32) -> Void] = []

        init(_ pool: RADOSPool) { self.pool = pool }

        private func completion() -> rados_completion_t {
            var c: rados_completion_t?
            rados_aio_create_completion2(nil, nil, &c)
            completions.append(c!)
            return c!
        }

        /// Reads into `buffer` (which must stay valid until `wait()`); `done` gets bytes or -errno.
        public func read(_ oid: String, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64,
                         _ done: @escaping (Int32) -> Void) {
            let c = completion()
            handlers.append(done)
            let rc = rados_aio_read(pool.io, oid, c, buffer.baseAddress!.assumingMemoryBound(to: CChar.self),
                                    buffer.count, offset)
            if rc < 0 { failed(rc) }
        }

        /// Writes (librados copies `bytes` before returning).
        public func write(_ oid: String, _ bytes: UnsafeRawBufferPointer, at offset: UInt64, _ done: @escaping (Int32) -> Void) {
            let c = completion()
            handlers.append(done)
            let rc = rados_aio_write(pool.io, oid, c, bytes.baseAddress!.assumingMemoryBound(to: CChar.self),
                                     bytes.count, offset)
            if rc < 0 { failed(rc) }
        }

        public func remove(_ oid: String, _ done: @escaping (Int32) -> Void) {
            pool.removeOperations.add(1, ordering: .relaxed)
            let c = completion()
            handlers.append(done)
            let rc = rados_aio_remove(pool.io, oid, c)
            if rc < 0 { failed(rc) }
        }

        /// A compound write op on `oid`.
        public func write(_ oid: String, _ build: (WriteOp) -> Void, _ done: @escaping (Int32) -> Void) {
            let op = WriteOp()
            build(op)
            let c = completion()
            handlers.append({ _ = op; done($0) })
            let rc = rados_aio_write_op_operate(op.op, pool.io, c, oid, nil, 0)
            if rc < 0 { failed(rc) }
        }

        /// All omap entries of `oid` (up to `max`), `done` gets them or the error.
        public func omapList(_ oid: String, max: Int, _ done: @escaping (Result<([([UInt8], [UInt8])], Bool), RADOSError>) -> Void) {
            let op = rados_create_read_op()!
            readOps.append(op)
            let state = OmapListState()
            rados_read_op_omap_get_vals2(op, nil, nil, UInt64(max), &state.iter, &state.more, &state.prval)
            let c = completion()
            handlers.append { rc in
                if rc == -ENOENT { return done(.success(([], false))) }
                if rc < 0 { return done(.failure(RADOSError(-rc, "omap list \(oid)"))) }
                var entries: [([UInt8], [UInt8])] = []
                drainEach(state.iter) { entries.append(($0, $1)) }
                done(.success((entries, state.more != 0)))
            }
            let rc = rados_aio_read_op_operate(op, pool.io, c, oid, 0)
            if rc < 0 { failed(rc) }
        }

        private func failed(_ rc: Int32) {
            // Submission failed: complete with that error instead of waiting on it.
            let c = completions.removeLast()
            rados_aio_release(c)
            let handler = handlers.removeLast()
            handler(rc)
        }

        /// Waits for every op; runs the handlers in submission order.
        public func wait() {
            for (c, handler) in zip(completions, handlers) {
                rados_aio_wait_for_complete(c)
                handler(pool.note(rados_aio_get_return_value(c)))
                rados_aio_release(c)
            }
            completions.removeAll()
            handlers.removeAll()
            for op in readOps { rados_release_read_op(op) }
            readOps.removeAll()
        }

        deinit { if !completions.isEmpty { wait() } }
    }

    public func batch() -> Batch { Batch(self) }
}

/// Out-parameters of an asynchronous omap listing, kept at a stable address until it completes.
final class OmapListState {
    var iter: rados_omap_iter_t?
    var more: UInt8 = 0
    var prval: Int32 = 0
}

/// A RADOS compound write op being built: every step is applied atomically or none is.
public final class WriteOp {
    let op: rados_write_op_t
    init() { op = rados_create_write_op()! }
    deinit { rados_release_write_op(op) }

    public func create(exclusive: Bool) {
        rados_write_op_create(op, exclusive ? LIBRADOS_CREATE_EXCLUSIVE : LIBRADOS_CREATE_IDEMPOTENT, nil)
    }
    public func assertExists() { rados_write_op_assert_exists(op) }
    public func setxattr(_ name: String, _ value: [UInt8]) {
        // A non-null pointer even for an empty value.
        (value.isEmpty ? [0] : value).withUnsafeBytes { raw in
            rados_write_op_setxattr(op, name, raw.baseAddress!.assumingMemoryBound(to: CChar.self), value.count)
        }
    }
    public func rmxattr(_ name: String) { rados_write_op_rmxattr(op, name) }
    /// The op fails with ECANCELED unless xattr `name` equals `value`.
    public func compareXattrEqual(_ name: String, _ value: [UInt8]) {
        (value.isEmpty ? [0] : value).withUnsafeBytes { raw in
            rados_write_op_cmpxattr(op, name, UInt8(LIBRADOS_CMPXATTR_OP_EQ),
                                    raw.baseAddress!.assumingMemoryBound(to: CChar.self), value.count)
        }
    }
    public func omapSet(_ pairs: [([UInt8], [UInt8])]) {
        let keys = pairs.map(\.0), values = pairs.map(\.1)
        withCStringArray(keys) { kp, kl in
            withCStringArray(values) { vp, vl in
                rados_write_op_omap_set2(op, kp, vp, kl, vl, pairs.count)
            }
        }
    }
    public func omapRemove(_ keys: [[UInt8]]) {
        withCStringArray(keys) { kp, kl in rados_write_op_omap_rm_keys2(op, kp, kl, keys.count) }
    }
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) {
        rados_write_op_write(op, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count, offset)
    }
    public func truncate(_ size: UInt64) { rados_write_op_truncate(op, size) }
    public func zero(_ offset: UInt64, _ length: UInt64) { rados_write_op_zero(op, offset, length) }
    public func remove() { rados_write_op_remove(op) }
}

/// Byte strings as the (pointer, length) arrays librados' `*2` omap calls take. librados
/// copies them before returning, so the pointers need only live for the call.
func withCStringArray<R>(_ strings: [[UInt8]], _ body: (UnsafePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> R) -> R {
    let total = strings.reduce(0) { $0 + $1.count } + 1
    let storage = UnsafeMutablePointer<UInt8>.allocate(capacity: total)
    defer { storage.deallocate() }
    var pointers: [UnsafePointer<CChar>?] = []
    var lengths: [Int] = []
    var at = 0
    for s in strings {
        s.withUnsafeBufferPointer { (storage + at).update(from: $0.baseAddress ?? UnsafePointer(storage), count: s.count) }
        pointers.append(UnsafeRawPointer(storage + at).assumingMemoryBound(to: CChar.self))
        lengths.append(s.count)
        at += s.count
    }
    return pointers.withUnsafeBufferPointer { p in lengths.withUnsafeBufferPointer { l in body(p.baseAddress!, l.baseAddress!) } }
}

func drainEach(_ iter: rados_omap_iter_t?, _ each: ([UInt8], [UInt8]) -> Void) {
    guard let iter else { return }
    defer { rados_omap_get_end(iter) }
    while true {
        var key: UnsafeMutablePointer<CChar>?, value: UnsafeMutablePointer<CChar>?
        var keyLength = 0, valueLength = 0
        guard rados_omap_get_next2(iter, &key, &value, &keyLength, &valueLength) == 0, let key else { return }
        let k = Array(UnsafeRawBufferPointer(start: key, count: keyLength))
        let v = valueLength == 0 ? [] : Array(UnsafeRawBufferPointer(start: value, count: valueLength))
        each(k, v)
    }
}

func drain(_ iter: rados_omap_iter_t?) -> [[UInt8]: [UInt8]] {
    var result: [[UInt8]: [UInt8]] = [:]
    drainEach(iter) { result[$0] = $1 }
    return result
}

extension Optional where Wrapped == [UInt8] {
    func withOptionalCString<R>(_ body: (UnsafePointer<CChar>?) -> R) -> R {
        guard let bytes = self else { return body(nil) }
        return bytes.withUnsafeBufferPointer { body(UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self)) }
    }
}
