// Client side of the wire: the request structs encoded the way a kernel (or guest)
// sends them, so a test or benchmark front-end can speak FUSE to any server.
// Each encoder zeroes its struct first, like the kernel's zero-initialised args.

/// A type a FUSE client writes as one request argument.
public protocol FUSERequestEncodable {
    static var size: Int { get }
    /// Writes exactly `Self.size` bytes at `pointer`, which must have room for them.
    func encode(to pointer: UnsafeMutableRawPointer)
}

extension FUSEInHeader: FUSERequestEncodable {
    public func encode(to p: UnsafeMutableRawPointer) {
        p.zero(Self.size)
        p.storeLE(length, at: 0)
        p.storeLE(opcode, at: 4)
        p.storeLE(unique, at: 8)
        p.storeLE(nodeID, at: 16)
        p.storeLE(uid, at: 24)
        p.storeLE(gid, at: 28)
        p.storeLE(pid, at: 32)
        p.storeLE(totalExtensionLength, at: 36)
    }
}

extension FUSEInitIn: FUSERequestEncodable {
    public func encode(to p: UnsafeMutableRawPointer) {
        p.zero(Self.size)
        p.storeLE(major, at: 0)
        p.storeLE(minor, at: 4)
        p.storeLE(maxReadahead, at: 8)
        p.storeLE(UInt32(truncatingIfNeeded: flags), at: 12)
        p.storeLE(UInt32(truncatingIfNeeded: flags >> 32), at: 16)   // flags2
    }
}

/// `struct fuse_forget_in`: how many lookups of the node the client drops.
public struct FUSEForgetIn: Sendable, Equatable, FUSERequestEncodable {
    public static let size = 8
    public var nlookup: UInt64
    public init(nlookup: UInt64) { self.nlookup = nlookup }
    public func encode(to p: UnsafeMutableRawPointer) { p.storeLE(nlookup, at: 0) }
}

/// `struct fuse_rename_in` of FUSE_RENAME: the directory the entry moves to (the old and
/// new names follow it).
public struct FUSERenameIn: Sendable, Equatable, FUSERequestEncodable {
    public static let size = 8
    public var newDirectory: UInt64
    public init(newDirectory: UInt64) { self.newDirectory = newDirectory }
    public func encode(to p: UnsafeMutableRawPointer) { p.storeLE(newDirectory, at: 0) }
}

extension FUSEGetattrIn: FUSERequestEncodable {
    public func encode(to p: UnsafeMutableRawPointer) {
        p.zero(Self.size)
        p.storeLE(getattrFlags, at: 0)
        p.storeLE(fh, at: 8)
    }
}

extension FUSEMkdirIn: FUSERequestEncodable {
    public func encode(to p: UnsafeMutableRawPointer) {
        p.storeLE(mode, at: 0)
        p.storeLE(umask, at: 4)
    }
}

extension FUSEOpenIn: FUSERequestEncodable {
    public func encode(to p: UnsafeMutableRawPointer) {
        p.storeLE(flags, at: 0)
        p.storeLE(openFlags, at: 4)
    }
}

extension FUSECreateIn: FUSERequestEncodable {
    public func encode(to p: UnsafeMutableRawPointer) {
        p.storeLE(flags, at: 0)
        p.storeLE(mode, at: 4)
        p.storeLE(umask, at: 8)
        p.storeLE(openFlags, at: 12)
    }
}

extension FUSEReadIn: FUSERequestEncodable {
    public func encode(to p: UnsafeMutableRawPointer) {
        p.zero(Self.size)
        p.storeLE(fh, at: 0)
        p.storeLE(offset, at: 8)
        p.storeLE(size, at: 16)
        p.storeLE(readFlags, at: 20)
        p.storeLE(lockOwner, at: 24)
        p.storeLE(flags, at: 32)
    }
}

extension FUSEWriteIn: FUSERequestEncodable {
    public func encode(to p: UnsafeMutableRawPointer) {
        p.zero(Self.size)
        p.storeLE(fh, at: 0)
        p.storeLE(offset, at: 8)
        p.storeLE(size, at: 16)
        p.storeLE(writeFlags, at: 20)
        p.storeLE(lockOwner, at: 24)
        p.storeLE(flags, at: 32)
    }
}

extension FUSEFlushIn: FUSERequestEncodable {
    public func encode(to p: UnsafeMutableRawPointer) {
        p.zero(Self.size)
        p.storeLE(fh, at: 0)
        p.storeLE(lockOwner, at: 16)
    }
}

extension FUSEReleaseIn: FUSERequestEncodable {
    public func encode(to p: UnsafeMutableRawPointer) {
        p.storeLE(fh, at: 0)
        p.storeLE(flags, at: 8)
        p.storeLE(releaseFlags, at: 12)
        p.storeLE(lockOwner, at: 16)
    }
}

extension FUSEFsyncIn: FUSERequestEncodable {
    public func encode(to p: UnsafeMutableRawPointer) {
        p.zero(Self.size)
        p.storeLE(fh, at: 0)
        p.storeLE(fsyncFlags, at: 8)
    }
}
