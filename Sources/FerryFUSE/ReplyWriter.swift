/// Writes complete replies (`fuse_out_header` plus body) into a caller-owned buffer.
///
/// The server sizes its reply buffers for the largest reply it sends, so a buffer that is
/// too small is a programming error, not a runtime condition.
public enum FUSEReply {
    /// Writes a `fuse_out_header` at `pointer`.
    public static func writeHeader(to pointer: UnsafeMutableRawPointer, length: Int, error: Int32, unique: UInt64) {
        precondition(length >= FUSEOutHeader.size && length <= Int(UInt32.max))
        pointer.storeLE(UInt32(length), at: 0)
        pointer.storeLE(UInt32(bitPattern: error), at: 4)
        pointer.storeLE(unique, at: 8)
    }

    /// Writes a successful reply carrying `value`; returns the total length, header included.
    public static func encode<T: FUSEEncodable>(_ value: T, unique: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let length = FUSEOutHeader.size + T.size
        precondition(buffer.count >= length, "reply buffer too small")
        let base = buffer.baseAddress!
        value.encode(to: base + FUSEOutHeader.size)
        writeHeader(to: base, length: length, error: 0, unique: unique)
        return length
    }

    /// Writes an error reply (header only, `error = -errno`); returns its length, 16.
    public static func error(_ errno: Int32, unique: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        precondition(buffer.count >= FUSEOutHeader.size, "reply buffer too small")
        writeHeader(to: buffer.baseAddress!, length: FUSEOutHeader.size, error: -errno, unique: unique)
        return FUSEOutHeader.size
    }
}
