/// The part of INIT a transport plays: capabilities only a transport can honour (requests
/// through io_uring rings) are read from the kernel's offer and added to the reply the
/// server core encoded, so the core stays the same whatever carries its requests.
public enum FUSEInitTransport {
    static let initOpcode: UInt32 = 26
    static let initExtBit: UInt32 = 1 << 30

    /// What a raw INIT request (header included) offers, or nil when it is not a 7.x INIT
    /// long enough to tell.
    public static func offered(request: UnsafeRawBufferPointer) -> FUSEInitFlags? {
        let body = FUSEInHeader.size
        guard request.count >= body + FUSEInitIn.compatSize,
              request.loadLE(UInt32.self, at: 4) == initOpcode,
              request.loadLE(UInt32.self, at: body) == FUSEInitNegotiation.serverMajor
        else { return nil }
        let flags = request.loadLE(UInt32.self, at: body + 12)
        var offered = UInt64(flags)
        if flags & initExtBit != 0, request.count >= body + 20 {
            offered |= UInt64(request.loadLE(UInt32.self, at: body + 16)) << 32
        }
        return FUSEInitFlags(rawValue: offered)
    }

    /// Adds `flags` to the successful 7.x INIT reply in `reply[0..<length]`; false (and the
    /// reply untouched) when it is not one: an error, or a version-retry answer.
    public static func add(_ flags: FUSEInitFlags, toReply reply: UnsafeMutableRawBufferPointer, length: Int) -> Bool {
        let body = FUSEOutHeader.size
        guard isSuccessfulReply(reply, length: length) else { return false }
        let low = UnsafeRawBufferPointer(reply).loadLE(UInt32.self, at: body + 12)
        // Bits above 31 count only with FUSE_INIT_EXT, which the core echoes when offered.
        if flags.rawValue >> 32 != 0 && low & initExtBit == 0 { return false }
        let high = UnsafeRawBufferPointer(reply).loadLE(UInt32.self, at: body + 32)
        reply.baseAddress!.storeLE(low | UInt32(truncatingIfNeeded: flags.rawValue), at: body + 12)
        reply.baseAddress!.storeLE(high | UInt32(truncatingIfNeeded: flags.rawValue >> 32), at: body + 32)
        return true
    }
}

extension FUSEInitTransport {
    /// Whether `reply[0..<length]` is a successful 7.x INIT reply (not an error, not a
    /// version-retry answer), the only kind a transport may amend.
    static func isSuccessfulReply(_ reply: UnsafeMutableRawBufferPointer, length: Int) -> Bool {
        let body = FUSEOutHeader.size
        return length == body + FUSEInitOut.size && reply.count >= length
            && UnsafeRawBufferPointer(reply).loadLE(UInt32.self, at: 4) == 0
            && UnsafeRawBufferPointer(reply).loadLE(UInt32.self, at: body) == FUSEInitNegotiation.serverMajor
    }

    /// Takes `flags` (bits 0-31 only) out of a successful 7.x INIT reply: a capability the
    /// core agreed that this transport cannot carry. False when the reply is not one.
    public static func remove(_ flags: FUSEInitFlags, fromReply reply: UnsafeMutableRawBufferPointer, length: Int) -> Bool {
        precondition(flags.rawValue >> 32 == 0, "only bits 0-31 can be removed")
        let body = FUSEOutHeader.size
        guard isSuccessfulReply(reply, length: length) else { return false }
        let low = UnsafeRawBufferPointer(reply).loadLE(UInt32.self, at: body + 12)
        reply.baseAddress!.storeLE(low & ~UInt32(flags.rawValue), at: body + 12)
        return true
    }
}

private extension UnsafeRawBufferPointer {
    func loadLE<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}
