import FerryFUSE

/// Synchronous FUSE operations on one queue: submit, wait, decode. Each throws
/// `FrontendError.fuseError` with the server's errno when the reply carries one.
extension FUSEQueueClient {
    /// Sends one request and waits for its reply; checks the reply header.
    public func roundTrip<A: FUSERequestEncodable>(
        _ opcode: FUSEOpcode, nodeID: UInt64, argument: A, name: String? = nil, secondName: String? = nil,
        writeLength: Int = 0, replyArgumentSize: Int = 0, readLength: Int = 0,
        timeoutMilliseconds: Int32 = 10_000
    ) throws -> FUSECompletion {
        guard let slot = submit(opcode: opcode, nodeID: nodeID, argument: argument, name: name, secondName: secondName,
                                writeLength: writeLength, replyArgumentSize: replyArgumentSize, readLength: readLength) else {
            throw FrontendError.unsupported("no free request slot on queue \(queue.index)")
        }
        let c = try wait(for: slot, timeoutMilliseconds: timeoutMilliseconds)
        guard let h = c.header, c.isWellFormed else {
            throw FrontendError.badReply("\(opcode): used length \(c.usedLength), header \(String(describing: c.header)), unique \(c.unique)")
        }
        if h.error != 0 { throw FrontendError.fuseError(opcode: opcode.rawValue, errno: -h.error) }
        return c
    }

    private func replyStruct<T>(_ c: FUSECompletion, size: Int, _ opcode: FUSEOpcode,
                                _ decode: (UnsafeRawBufferPointer) -> T?) throws -> T {
        let have = Int(c.usedLength) - FUSEOutHeader.size
        guard have >= size, let value = decode(replyArguments(c.slot, count: have)) else {
            throw FrontendError.badReply("\(opcode): \(have) argument bytes, \(size) expected")
        }
        return value
    }

    /// FUSE_INIT as a guest kernel sends it: 7.38 with the flags virtio-fs guests offer.
    public func initialize(flags: FUSEInitFlags = FUSESession.guestInitFlags, maxReadahead: UInt32 = 1 << 20) throws -> FUSEInitOut {
        let c = try roundTrip(.`init`, nodeID: 0,
                              argument: FUSEInitIn(major: 7, minor: 38, maxReadahead: maxReadahead, flags: flags.rawValue),
                              replyArgumentSize: 64)
        return try replyStruct(c, size: 24, .`init`, FUSEClientDecoder.initOut)
    }

    public func lookup(parent: UInt64, name: String) throws -> FUSEEntryOut {
        let c = try roundTrip(.lookup, nodeID: parent, argument: FUSENoArgument(), name: name, replyArgumentSize: 128)
        return try replyStruct(c, size: 128, .lookup, FUSEClientDecoder.entryOut)
    }

    public func getattr(nodeID: UInt64, fh: UInt64? = nil) throws -> FUSEAttrOut {
        let c = try roundTrip(.getattr, nodeID: nodeID,
                              argument: FUSEGetattrIn(getattrFlags: fh == nil ? 0 : 1, fh: fh ?? 0), replyArgumentSize: 104)
        return try replyStruct(c, size: 104, .getattr, FUSEClientDecoder.attrOut)
    }

    public func open(nodeID: UInt64, flags: Int32) throws -> FUSEOpenOut {
        let c = try roundTrip(.open, nodeID: nodeID, argument: FUSEOpenIn(flags: UInt32(bitPattern: flags), openFlags: 0),
                              replyArgumentSize: 16)
        return try replyStruct(c, size: 16, .open, FUSEClientDecoder.openOut)
    }

    public func opendir(nodeID: UInt64) throws -> FUSEOpenOut {
        let c = try roundTrip(.opendir, nodeID: nodeID, argument: FUSEOpenIn(flags: 0, openFlags: 0), replyArgumentSize: 16)
        return try replyStruct(c, size: 16, .opendir, FUSEClientDecoder.openOut)
    }

    public func create(parent: UInt64, name: String, flags: Int32, mode: UInt32) throws -> (entry: FUSEEntryOut, open: FUSEOpenOut) {
        let c = try roundTrip(.create, nodeID: parent,
                              argument: FUSECreateIn(flags: UInt32(bitPattern: flags), mode: mode, umask: 0o022, openFlags: 0),
                              name: name, replyArgumentSize: 128 + 16)
        let entry = try replyStruct(c, size: 144, .create, FUSEClientDecoder.entryOut)
        let open = try replyStruct(c, size: 144, .create) { FUSEClientDecoder.openOut(UnsafeRawBufferPointer(rebasing: $0[128...])) }
        return (entry, open)
    }

    public func mkdir(parent: UInt64, name: String, mode: UInt32) throws -> FUSEEntryOut {
        let c = try roundTrip(.mkdir, nodeID: parent, argument: FUSEMkdirIn(mode: mode, umask: 0o022), name: name,
                              replyArgumentSize: 128)
        return try replyStruct(c, size: 128, .mkdir, FUSEClientDecoder.entryOut)
    }

    public func unlink(parent: UInt64, name: String) throws {
        _ = try roundTrip(.unlink, nodeID: parent, argument: FUSENoArgument(), name: name)
    }

    /// FUSE_RENAME: `name` in `parent` becomes `newName` in `newParent`.
    public func rename(parent: UInt64, name: String, newParent: UInt64, newName: String) throws {
        _ = try roundTrip(.rename, nodeID: parent, argument: FUSERenameIn(newDirectory: newParent), name: name, secondName: newName)
    }

    /// Reads into the slot's data buffer and returns a copy of the bytes read.
    public func read(nodeID: UInt64, fh: UInt64, offset: UInt64, size: Int) throws -> [UInt8] {
        let c = try roundTrip(.read, nodeID: nodeID, argument: FUSEReadIn(fh: fh, offset: offset, size: UInt32(size)), readLength: size)
        return Array(UnsafeRawBufferPointer(rebasing: dataBuffer(c.slot)[..<(Int(c.usedLength) - FUSEOutHeader.size)]))
    }

    /// Writes `data` (at most `dataBufferSize` bytes); returns the count the server took.
    public func write(nodeID: UInt64, fh: UInt64, offset: UInt64, data: [UInt8]) throws -> UInt32 {
        let c = try roundTripWrite(nodeID: nodeID, fh: fh, offset: offset, length: data.count) { buffer in
            data.withUnsafeBytes { buffer.copyMemory(from: $0) }
        }
        return try replyStruct(c, size: 8, .write, FUSEClientDecoder.writeOut).size
    }

    /// A WRITE whose data `fill` puts into the slot's buffer before the request is posted.
    public func roundTripWrite(nodeID: UInt64, fh: UInt64, offset: UInt64, length: Int,
                               fill: (UnsafeMutableRawBufferPointer) -> Void) throws -> FUSECompletion {
        guard let slot = nextFreeSlot else { throw FrontendError.unsupported("no free request slot on queue \(queue.index)") }
        fill(UnsafeMutableRawBufferPointer(rebasing: dataBuffer(slot)[..<length]))
        return try roundTrip(.write, nodeID: nodeID, argument: FUSEWriteIn(fh: fh, offset: offset, size: UInt32(length)),
                             writeLength: length, replyArgumentSize: 8)
    }

    public func release(nodeID: UInt64, fh: UInt64, flags: Int32 = 0, directory: Bool = false) throws {
        _ = try roundTrip(directory ? .releasedir : .release, nodeID: nodeID,
                          argument: FUSEReleaseIn(fh: fh, flags: UInt32(bitPattern: flags), releaseFlags: 0, lockOwner: 0))
    }

    public func flush(nodeID: UInt64, fh: UInt64) throws {
        _ = try roundTrip(.flush, nodeID: nodeID, argument: FUSEFlushIn(fh: fh, lockOwner: 0))
    }

    public func fsync(nodeID: UInt64, fh: UInt64, dataOnly: Bool = false) throws {
        _ = try roundTrip(.fsync, nodeID: nodeID, argument: FUSEFsyncIn(fh: fh, fsyncFlags: dataOnly ? 1 : 0))
    }

    /// One READDIR reply's entries (empty at the end of the directory).
    public func readdir(nodeID: UInt64, fh: UInt64, offset: UInt64, size: Int = 64 * 1024) throws -> [FUSEClientDecoder.Dirent] {
        let c = try roundTrip(.readdir, nodeID: nodeID, argument: FUSEReadIn(fh: fh, offset: offset, size: UInt32(size)), readLength: size)
        let body = UnsafeRawBufferPointer(rebasing: dataBuffer(c.slot)[..<(Int(c.usedLength) - FUSEOutHeader.size)])
        guard let entries = FUSEClientDecoder.dirents(body) else { throw FrontendError.badReply("READDIR entries overrun") }
        return entries
    }

    /// Every name in a directory (OPENDIR, READDIR until empty, RELEASEDIR).
    public func listDirectory(nodeID: UInt64) throws -> [String] {
        let fh = try opendir(nodeID: nodeID).fh
        var names: [String] = []
        var offset: UInt64 = 0
        while true {
            let entries = try readdir(nodeID: nodeID, fh: fh, offset: offset)
            guard let last = entries.last else { break }
            names += entries.map { String(decoding: $0.name, as: UTF8.self) }
            offset = last.offset
        }
        try release(nodeID: nodeID, fh: fh, directory: true)
        return names
    }
}
