/// Counts what an export already uses, for its quota: a walk of the whole tree through
/// the driver itself, so it works the same for every backend.
enum QuotaScan {
    static func usage<Driver: FileSystemDriver>(of driver: Driver) throws(Errno) -> (bytes: UInt64, inodes: UInt64) {
        let caller = Credentials.root
        let root = try driver.root()
        var bytes: UInt64 = 0
        var inodes: UInt64 = 1
        // A file with several links is counted at the first one seen.
        var seenLinked = Set<UInt64>()
        var pending = [root.inode]
        while let directory = pending.popLast() {
            for name in try names(in: directory, driver) {
                let found: Result<Driver.Entry, Errno> = name.withUnsafeBytes { raw in
                    FileName.validated(UnsafeRawBufferPointer(rebasing: raw[..<(raw.count - 1)])).flatMap { fileName in
                        Result { () throws(Errno) -> Driver.Entry in
                            try driver.lookup(directory, fileName, caller, existing: { _ in nil })
                        }
                    }
                }
                let entry: Driver.Entry
                switch found {
                case .success(let e): entry = e
                case .failure(.noEntry), .failure(.invalid): continue   // removed while we walked, or not a name we serve
                case .failure(let error): throw error
                }
                let a = entry.attributes
                if a.mode & FileMode.typeMask == FileMode.directory {
                    pending.append(entry.inode)
                } else if a.linkCount > 1 {
                    if !seenLinked.insert(a.inode).inserted { continue }
                }
                inodes += 1
                if a.mode & FileMode.typeMask == FileMode.regular { bytes += a.size }
            }
        }
        return (bytes, inodes)
    }

    /// Every name in `directory` but `.` and `..`, each followed by a NUL.
    private static func names<Driver: FileSystemDriver>(in directory: Driver.Inode, _ driver: Driver) throws(Errno) -> [[UInt8]] {
        let open = try driver.opendir(directory, flags: 0, Credentials.root)
        defer { driver.releasedir(open) }
        var names: [[UInt8]] = []
        var offset: UInt64 = 0
        while true {
            var got = 0
            try driver.readdir(open, at: offset, Credentials.root) { entry in
                got += 1
                offset = entry.nextOffset
                if !entry.isDotOrDotDot { names.append(Array(entry.name) + [0]) }
                return true
            }
            if got == 0 { return names }
        }
    }
}
