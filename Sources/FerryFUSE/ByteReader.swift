/// Bounds-checked little-endian reads over one request's argument bytes.
///
/// Every read that can fail throws a `FUSEDecodeError` tagged with the opcode, so the
/// per-opcode decoders stay one line per field. Typed throws keep the error unboxed:
/// nothing here touches the heap.
struct FUSEByteReader {
    let bytes: UnsafeRawBufferPointer
    let opcode: UInt32

    init(_ bytes: UnsafeRawBufferPointer, opcode: UInt32) {
        self.bytes = bytes
        self.opcode = opcode
    }

    var count: Int { bytes.count }

    /// Fails unless the fixed part of the arguments (`size` bytes from the start) is present.
    func require(_ size: Int) throws(FUSEDecodeError) {
        guard bytes.count >= size else {
            throw .truncatedArguments(opcode: opcode, needed: size, available: bytes.count)
        }
    }

    // The unchecked loads below are only called after `require` covered their offsets.

    func u16(_ offset: Int) -> UInt16 {
        UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    func u32(_ offset: Int) -> UInt32 {
        UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    func u64(_ offset: Int) -> UInt64 {
        UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    /// The bytes in `start..<end` as a view into the request.
    func slice(_ start: Int, _ end: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[start..<end])
    }

    /// The NUL-terminated string starting at `offset`, without its terminator, and the
    /// offset just past the terminator.
    func string(at offset: Int) throws(FUSEDecodeError) -> (UnsafeRawBufferPointer, next: Int) {
        var index = offset
        while index < bytes.count {
            if bytes[index] == 0 {
                return (slice(offset, index), index + 1)
            }
            index += 1
        }
        throw .unterminatedString(opcode: opcode)
    }

    /// The request's last string: NUL-terminated, and the NUL is the arguments' last byte.
    func lastString(at offset: Int) throws(FUSEDecodeError) -> UnsafeRawBufferPointer {
        let (string, next) = try string(at: offset)
        guard next == bytes.count else { throw .bytesAfterName(opcode: opcode) }
        return string
    }
}
