import FerryBackend
import FerryConfig
import FerrySandbox
#if canImport(Glibc)
import Glibc
#endif

/// What the private roots of `ferry serve` and of `ferry virtiofsd` with a network source
/// hold (docs/security.md, "What a private root holds").
extension PrivateRoot {
    /// Name resolution: libnfs looks an NFS server's name up when an export opens, and glibc
    /// reads these files then (the NSS modules it dlopens are loaded before the pivot by
    /// `resolveNamesBeforePivot`).
    public static let nameResolutionFiles = ["/etc/hosts", "/etc/resolv.conf", "/etc/nsswitch.conf", "/etc/host.conf", "/etc/gai.conf"]

    /// `ferry serve`'s root: the configuration directory read-only (a reload reads it); the
    /// directories of the control socket and of every export's socket read-write (a reload
    /// creates sockets); every POSIX export's directory (read-only for a read-only export);
    /// `[sandbox] exports_root` read-write; every RADOS export's ceph.conf and keyring
    /// read-only; name resolution; and /proc of the daemon's PID namespace (the POSIX driver
    /// reopens files through /proc/self/fd).
    public static func daemon(_ configuration: Configuration) -> PrivateRoot {
        var root = PrivateRoot(mountsProc: true)
        root.add(configuration.directory, writable: false)
        root.add(parentDirectory(of: configuration.daemon.controlSocket), writable: true)
        if let exportsRoot = configuration.daemon.sandbox.exportsRoot { root.add(exportsRoot, writable: true) }
        root.addExisting(nameResolutionFiles)
        for (_, export) in configuration.exports {
            root.add(parentDirectory(of: export.socket), writable: true)
            let needs = export.backend.rootNeeds(readOnly: export.readOnly)
            for (path, writable) in needs.paths { root.add(path, writable: writable) }
            root.addExisting(needs.filesIfPresent)
        }
        return root
    }

    /// `ferry virtiofsd`'s root for a network source, which is open (connected, with its
    /// key read) before the pivot: name resolution for NFS, in case libnfs looks the server
    /// up again (a backend that resolves names); nothing at all for RADOS, whose files were
    /// read when it connected.
    public static func network(_ source: Source) -> PrivateRoot {
        var root = PrivateRoot()
        if source.rootNeeds(readOnly: true).resolvesNames { root.addExisting(nameResolutionFiles) }
        return root
    }

    /// Adds those of `paths` that exist, read-only.
    public mutating func addExisting(_ paths: [String]) {
        for path in paths where access(path, F_OK) == 0 { add(path, writable: false) }
    }

    /// Why `export` cannot be served inside this root (a reload added it, but the root was
    /// built at start), or nil.
    public func problem(serving export: ExportConfig) -> String? {
        let restart = "restart ferry serve to add it"
        if !shows(parentDirectory(of: export.socket), writable: true) {
            return "the directory of \(export.socket) is not writable inside the sandbox's root; \(restart), or use the directory of another export's socket"
        }
        let needs = export.backend.rootNeeds(readOnly: export.readOnly)
        for (path, writable) in needs.paths {
            if !shows(path) { return "\(path) is outside the sandbox's root; \(restart), or put it under [sandbox] exports_root" }
            if writable, !shows(path, writable: true) { return "\(path) is read-only inside the sandbox's root; \(restart)" }
        }
        if let outside = needs.filesIfPresent.first(where: { !shows($0) }) {
            return "\(outside) is outside the sandbox's root; \(restart), or keep it in the configuration directory"
        }
        return nil
    }
}

/// Looks up every NFS server's name once before the pivot, so glibc has loaded the NSS
/// modules it needs (they are dlopened on first use, from /usr, which the root does not show).
func resolveNamesBeforePivot(_ configuration: Configuration) {
    var names: Set<String> = ["localhost"]
    for (_, export) in configuration.exports {
        names.formUnion(export.backend.rootNeeds(readOnly: export.readOnly).hostNames)
    }
    for name in names.sorted() {
        var found: UnsafeMutablePointer<addrinfo>?
        if getaddrinfo(name, nil, nil, &found) == 0 { freeaddrinfo(found) }
    }
}

/// The directory holding `path` (an absolute path).
func parentDirectory(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return "/" }
    return String(path[..<slash])
}
