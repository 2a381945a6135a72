/// `struct fuse_in_header`: the 40 bytes that start every request.
public struct FUSEInHeader: Sendable, Equatable {
    public static let size = 40
    /// Length of the whole request, header included, as the kernel (or guest) claims it.
    public var length: UInt32
    public var opcode: UInt32
    public var unique: UInt64
    public var nodeID: UInt64
    public var uid: UInt32
    public var gid: UInt32
    public var pid: UInt32
    /// Length of the extension area at the end of the request, in units of 8 bytes.
    public var totalExtensionLength: UInt16

    public init(length: UInt32, opcode: UInt32, unique: UInt64, nodeID: UInt64,
                uid: UInt32, gid: UInt32, pid: UInt32, totalExtensionLength: UInt16 = 0) {
        self.length = length; self.opcode = opcode; self.unique = unique; self.nodeID = nodeID
        self.uid = uid; self.gid = gid; self.pid = pid; self.totalExtensionLength = totalExtensionLength
    }
}

/// `struct fuse_out_header`: the 16 bytes that start every reply.
public struct FUSEOutHeader: Sendable, Equatable {
    public static let size = 16
    public var length: UInt32
    /// Zero or a negated errno.
    public var error: Int32
    public var unique: UInt64

    public init(length: UInt32, error: Int32, unique: UInt64) {
        self.length = length; self.error = error; self.unique = unique
    }
}
