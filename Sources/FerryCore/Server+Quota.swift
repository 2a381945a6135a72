import FerryFUSE
#if canImport(Glibc)
import Glibc
#endif

/// Quota accounting around the changes that use or free space. Without a quota each
/// helper is just a call of its body.
extension FUSEServer {
    /// Runs a change that makes one inode, under the inode quota.
    @inline(__always)
    func makingInode<T>(_ body: () throws(Errno) -> T) throws(Errno) -> T {
        guard let quota else { return try body() }
        try quota.reserveInode()
        do {
            return try body()
        } catch {
            quota.releaseInodes(1)
            throw error
        }
    }

    /// Runs a change that removes `name` from `parent` (UNLINK, RMDIR, a RENAME over it) and
    /// gives back its space when that was the last link.
    @inline(__always)
    func removing<T>(_ name: FileName, in parent: Driver.Inode, _ caller: Credentials, _ body: () throws(Errno) -> T) throws(Errno) -> T {
        guard let quota else { return try body() }
        let freed = freedByRemoving(name, in: parent, caller)
        let result = try body()
        quota.releaseBytes(freed.bytes)
        quota.releaseInodes(freed.inodes)
        return result
    }

    private func freedByRemoving(_ name: FileName, in parent: Driver.Inode, _ caller: Credentials) -> (bytes: UInt64, inodes: UInt64) {
        guard let entry = try? driver.lookup(parent, name, caller, existing: { self.nodes.existing($0) }) else { return (0, 0) }
        let a = entry.attributes
        switch a.mode & UInt32(S_IFMT) {
        case UInt32(S_IFDIR): return (0, 1)
        case _ where a.linkCount > 1: return (0, 0)
        case UInt32(S_IFREG): return (a.size, 1)
        default: return (0, 1)
        }
    }

    /// Runs a change that may make the file of node `nodeID` reach `end` bytes; `body`
    /// answers the end it actually reached. The growth is reserved first, so EDQUOT comes
    /// before any byte is written. Without a quota (or with `end` nil: a change that keeps
    /// the size) it is just `body`, and the node is not even looked up.
    @inline(__always)
    func growing(_ nodeID: UInt64, _ open: Driver.File?, to end: UInt64?, _ caller: Credentials,
                 _ body: () throws(Errno) -> UInt64) throws(Errno) {
        guard let quota, let end else {
            _ = try body()
            return
        }
        let size = try driver.getattr(try inode(nodeID), open, caller).size
        let wanted = end > size ? end - size : 0
        try quota.reserveBytes(wanted)
        let reached: UInt64
        do {
            reached = try body()
        } catch {
            quota.releaseBytes(wanted)
            throw error
        }
        let grown = reached > size ? reached - size : 0
        if grown < wanted { quota.releaseBytes(wanted - grown) }
    }

    /// A SETATTR that changes the size: reserve growth, give back what a truncation frees.
    @inline(__always)
    func resizing(_ node: Driver.Inode, _ open: Driver.File?, to size: UInt64?, _ caller: Credentials,
                  _ body: () throws(Errno) -> Attributes) throws(Errno) -> Attributes {
        guard let quota, let size else { return try body() }
        let before = try driver.getattr(node, open, caller).size
        if size > before { try quota.reserveBytes(size - before) }
        let after: Attributes
        do {
            after = try body()
        } catch {
            if size > before { quota.releaseBytes(size - before) }
            throw error
        }
        if size < before { quota.releaseBytes(before - size) }
        return after
    }
}

/// STATFS under a quota shows the quota as the file system's size, so `df` in the guest
/// tells the tenant what is left.
func applyQuota(_ quota: QuotaLedger, to out: inout FUSEStatfsOut) {
    let unit = UInt64(max(out.frsize, 1))
    if let limit = quota.limits.bytes {
        let used = quota.bytesUsed
        let free = (limit > used ? limit - used : 0) / unit
        out.blocks = min(out.blocks, limit / unit)
        out.bfree = min(out.bfree, free)
        out.bavail = min(out.bavail, free)
    }
    if let limit = quota.limits.inodes {
        let used = quota.inodesUsed
        out.files = min(out.files, limit)
        out.ffree = min(out.ffree, limit > used ? limit - used : 0)
    }
}
