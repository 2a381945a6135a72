import FerryFUSE
#if canImport(Glibc)
import Glibc
#endif

/// FUSE passthrough: the kernel reads, writes and maps an open file through the host file
/// the driver opened, so its bytes never reach the server. Only where the server need not
/// see them (docs/security.md, docs/operations.md): the driver's files are host files, and no
/// byte quota or QoS limit counts what moves.
extension FUSEServer {
    var passthrough: PassthroughFiles? { passthroughSlot.withLock { $0 } }

    /// Whether this export's open files could be handed to the kernel, and if not, why.
    public var passthroughSupport: PassthroughSupport {
        if !driver.supportsPassthrough {
            return .unavailable(reason: "this backend serves file data itself (only directory exports hand the kernel host files)")
        }
        if policy.quota.bytes != nil {
            return .unavailable(reason: "the export has a byte quota, which the server counts on every write")
        }
        if !policy.qos.isUnlimited {
            return .unavailable(reason: "the export has QoS limits, which the server applies to every read and write")
        }
        if policy.writeback {
            return .unavailable(reason: "the writeback cache is on, and the kernel does not combine it with passthrough")
        }
        return .available
    }

    /// Lets the kernel serve open files from their backing files through `device`, when the
    /// export allows it; answers whether it does. Call before the session starts: INIT then
    /// asks the kernel for FUSE_PASSTHROUGH.
    @discardableResult
    public func enablePassthrough(_ device: any FUSEBackingFiles) -> PassthroughSupport {
        let support = passthroughSupport
        if support == .available {
            passthroughSlot.withLock { $0 = PassthroughFiles(device: device) }
        }
        return support
    }

    /// Whether the current session agreed FUSE_PASSTHROUGH with the kernel; nil before INIT
    /// (and between sessions).
    public var passthroughAgreed: Bool? {
        let current = FUSESessionWord(raw: session.load(ordering: .acquiring))
        return current.initialized ? current.agreed.contains(.passthrough) : nil
    }

    /// The open reply for `file`, just stored as `fh`, of node `nodeID`: passthrough when the
    /// session agreed it and the kernel takes the file's backing file, else the daemon's.
    func openOut(_ opened: OpenedFile<Driver.File>, fh: UInt64, nodeID: UInt64) -> FUSEOpenOut {
        let flags = opened.replyFlags | policy.cache.openReplyFlags
        guard let passthrough, agreedFlags.contains(.passthrough) else { return FUSEOpenOut(fh: fh, openFlags: flags) }
        let outcome = passthrough.attach(node: nodeID, handle: fh) { () throws(Errno) -> Int32? in
            try driver.withBackingDescriptor(of: opened.file) { (descriptor) throws(Errno) -> Int32 in
                try passthrough.device.open(descriptor: descriptor)
            }
        }
        switch outcome {
        case .passthrough(let id):
            statistics.addPassthroughOpen()
            // The kernel fails a passthrough open (EIO to the opener) with any bit beyond
            // PASSTHROUGH, DIRECT_IO, PARALLEL_DIRECT_WRITES and NOFLUSH: KEEP_CACHE (cache
            // `always`) has no meaning here, there being no page cache of ours to keep. Nor
            // DIRECT_IO (cache `never` and `metadata`): it would override passthrough for
            // reads and writes, and what it is for, never serving stale pages, holds anyway:
            // the kernel reads and writes the host file's own pages.
            let kept = flags & FUSEOpenReplyFlag.noflush
            return FUSEOpenOut(fh: fh, openFlags: kept | FUSEOpenReplyFlag.passthrough, backingID: id)
        case .fallback(let refused):
            statistics.addPassthroughFallback()
            if let refused {
                logger.warning("the kernel refused a backing file: this session's files go through the daemon", metadata: [
                    "errno": "\(refused.rawValue)", "reason": "\(Self.refusalReason(refused))",
                ])
            }
            return FUSEOpenOut(fh: fh, openFlags: flags)
        }
    }

    /// RELEASE: the open's share of its node's backing file goes back.
    func releasePassthrough(_ fh: UInt64) {
        passthrough?.detach(handle: fh)
    }

    static func refusalReason(_ error: Errno) -> String {
        switch error {
        case .notPermitted: return "FUSE_DEV_IOC_BACKING_OPEN needs CAP_SYS_ADMIN (and FUSE_PASSTHROUGH agreed)"
        case Errno(ELOOP): return "the export's files are on a stacking file system (overlay, a passthrough FUSE mount): max_stack_depth is 1"
        case Errno(ENOTTY): return "the kernel does not know FUSE_DEV_IOC_BACKING_OPEN"
        default: return "\(error)"
        }
    }
}
