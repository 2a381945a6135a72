import FerryBackend
import FerryNFSBackend
import FerryPOSIXBackend
import FerryRADOSBackend
import Synchronization

/// Every backend this build can serve: what the configuration, the command line, the
/// sandbox and the daemon ask when they meet a backend kind. Adding a backend is one
/// line in `standard` (or, for a backend defined elsewhere, as in a test, one `register`).
public enum BackendRegistry {
    /// The order is the order kinds are named in messages.
    public static let standard: [any BackendModule.Type] = [
        POSIXBackend.self,
        NFSBackend.self,
        RADOSBackend.self,
    ]

    private static let registered = Mutex<[any BackendModule.Type]>([])

    /// Makes `module` known from now on, after the standard ones (a kind already known is
    /// left as it is).
    public static func register(_ module: any BackendModule.Type) {
        registered.withLock { list in
            if !(standard + list).contains(where: { $0.kind == module.kind }) { list.append(module) }
        }
    }

    public static var all: [any BackendModule.Type] { standard + registered.withLock { $0 } }

    public static func module(kind: String) -> (any BackendModule.Type)? { all.first { $0.kind == kind } }

    /// What a process that may serve any backend (a daemon: a reload may add any kind) needs.
    public static var everySandboxNeed: BackendSandboxNeeds { BackendSandboxNeeds.union(all.map { $0.sandbox }) }

    /// Reads `[export.backend]`: its `kind`, then the rest as that backend reads it.
    package static func read(_ table: BackendTable) -> ConfiguredBackend? {
        let r = table.reader
        let known = all
        guard let (kind, kindAt) = r.string("kind", required: true) else {
            r.finish(known: everyKey(known))
            return nil
        }
        guard let module = module(kind: kind) else {
            let kinds = known.map { $0.kind }
            r.problem("backend kind must be one of \(kinds.map { "\"\($0)\"" }.joined(separator: ", "))" + didYouMean(kind, kinds), at: kindAt)
            r.finish(known: everyKey(known))
            return nil
        }
        return module.configured(from: table)
    }

    /// The unit a table's `kind` names, if it names one (its problems are `read`'s to report).
    package static func module(of table: BackendTable) -> (any BackendModule.Type)? {
        guard case .string(let kind) = table.reader.table["kind"]?.item.value else { return nil }
        return module(kind: kind)
    }

    private static func everyKey(_ modules: [any BackendModule.Type]) -> [String] {
        var keys = ["kind"]
        for key in modules.flatMap { $0.tableKeys } where !keys.contains(key) { keys.append(key) }
        return keys
    }

    /// A source as the command line gives it: `KIND://...` for the backend of that kind, a
    /// bare path for a directory. `settings`: command-line options a URL cannot carry.
    public static func source(_ text: String, settings: SourceSettings = [:]) throws(BackendError) -> ConfiguredBackend {
        guard let scheme = text.firstRange(of: "://") else {
            return try POSIXBackend.configured(fromSource: text, settings: settings)
        }
        let kind = String(text[..<scheme.lowerBound])
        guard let module = module(kind: kind) else {
            throw BackendError("\(text): unknown source kind '\(kind)' (expected a directory, nfs://SERVER/PATH or rados://POOL[/NAMESPACE])")
        }
        return try module.configured(fromSource: text, settings: settings)
    }
}
