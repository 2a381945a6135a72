import CFerrySandbox
#if canImport(Glibc)
import Glibc
#endif

/// A root directory built for a serving process that cannot make one export its root (the
/// daemon, or a network export): an empty tmpfs holding only the listed host paths, each
/// bind-mounted at its own absolute path (so configured paths keep working), plus `/proc`
/// of the process's PID namespace when asked. Everything else on the host cannot be named.
public struct PrivateRoot: Sendable, Equatable {
    /// One host path shown inside the root.
    public struct Bind: Sendable, Equatable {
        /// Absolute and normalised: the path the process names, inside as outside.
        public var path: String
        public var writable: Bool
    }

    /// Sorted by path, so a directory always comes before what it holds; one per path.
    public private(set) var binds: [Bind] = []
    /// Mount the process's own `/proc` (the POSIX driver reopens files through /proc/self/fd).
    public var mountsProc: Bool

    public init(mountsProc: Bool = false) {
        self.mountsProc = mountsProc
    }

    /// Shows `path` (a directory or a file; relative paths are not accepted) inside the root,
    /// read-only unless `writable`. A path given twice is writable if either asked for it.
    public mutating func add(_ path: String, writable: Bool) {
        let normalised = Self.normalise(path)
        if let index = binds.firstIndex(where: { $0.path == normalised }) {
            binds[index].writable = binds[index].writable || writable
            return
        }
        binds.append(Bind(path: normalised, writable: writable))
        binds.sort { $0.path < $1.path }
    }

    /// The bind that decides what `path` is inside the root: the innermost one holding it.
    public func bind(holding path: String) -> Bind? {
        let normalised = Self.normalise(path)
        return binds.last { Self.isWithin(normalised, $0.path) }
    }

    /// Whether the process can name `path` inside the root (and change it, with `writable`).
    public func shows(_ path: String, writable: Bool = false) -> Bool {
        guard let bind = bind(holding: path) else { return false }
        return bind.writable || !writable
    }

    /// `path` lexically: no `.`, `..`, repeated or trailing slashes.
    static func normalise(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/") where part != "." {
            if part == ".." { _ = parts.popLast() } else { parts.append(part) }
        }
        return "/" + parts.joined(separator: "/")
    }

    /// `path` is `directory` or inside it (both normalised).
    static func isWithin(_ path: String, _ directory: String) -> Bool {
        directory == "/" || path == directory || path.hasPrefix(directory + "/")
    }
}

extension Sandbox {
    /// Where the new root's tmpfs is mounted before the pivot (in the process's own mount
    /// namespace, so the host never sees it; pivot_root then moves it away from there).
    static let staging = "/tmp"
    /// Where the old root is kept while the binds are made, then detached.
    static let oldRoot = "/.ferry-old-root"

    /// Makes `root` the process's root. Call inside a new mount namespace (after
    /// `enterNamespaces`): a tmpfs is mounted, the process pivots into it with the old root
    /// kept aside, every bind is made from the old root, `/proc` mounted if asked, the old
    /// root detached, and the tmpfs itself made read-only. Descriptors opened before keep
    /// working.
    public static func pivotRoot(into root: PrivateRoot) throws(SandboxError) {
        // Symbolic links are resolved now, in the host's view: once pivoted, an absolute
        // link inside the old root would point into the new one.
        var sources: [String: String] = [:]
        for bind in root.binds {
            guard let resolved = realpath(bind.path, nil) else {
                throw SandboxError("cannot show \(bind.path) inside the sandbox's root: \(String(cString: strerror(errno)))")
            }
            sources[bind.path] = String(cString: resolved)
            free(resolved)
        }
        try check(ferry_sb_mount_tmpfs(staging), "cannot mount a tmpfs on \(staging) for the sandbox's root")
        try check(ferry_sb_make_directory(staging + oldRoot), "cannot create \(oldRoot)")
        try check(ferry_sb_pivot_keeping_old(staging, String(oldRoot.dropFirst())), "cannot pivot_root into the sandbox's root")

        var made: [PrivateRoot.Bind] = []
        for bind in root.binds {
            let source = sources[bind.path]!
            if let outer = made.last(where: { PrivateRoot.isWithin(bind.path, $0.path) }) {
                // Already inside an earlier bind: skip it when that one shows the same host
                // path with the same access; mount over it only to change the access.
                let suffix = String(bind.path.dropFirst(outer.path == "/" ? 0 : outer.path.count))
                let outerSource = sources[outer.path]!
                guard (outerSource == "/" ? suffix : outerSource + suffix) == source else {
                    throw SandboxError("cannot show \(bind.path) inside the sandbox's root: \(outer.path) already shows another host path there (a symbolic link?)")
                }
                if outer.writable == bind.writable { continue }
            } else {
                try check(ferry_sb_make_mount_point(bind.path, isDirectory(source) ? 1 : 0),
                          "cannot create \(bind.path) inside the sandbox's root")
            }
            try check(ferry_sb_bind(oldRoot + source, bind.path, bind.writable ? 0 : 1),
                      "cannot bind-mount \(bind.path) into the sandbox's root")
            made.append(bind)
        }
        if root.mountsProc {
            try check(ferry_sb_make_mount_point("/proc", 1), "cannot create /proc inside the sandbox's root")
            try check(ferry_sb_mount_proc("/proc"), "cannot mount /proc inside the sandbox's root")
        }
        try check(ferry_sb_detach(oldRoot), "cannot detach the old root")
        try check(ferry_sb_remount_root_read_only(), "cannot make the sandbox's root read-only")
    }

    private static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(oldRoot + path, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR
    }

    private static func check(_ result: Int32, _ what: @autoclosure () -> String) throws(SandboxError) {
        guard result == 0 else { throw SandboxError("\(what()): \(String(cString: strerror(errno)))") }
    }
}
