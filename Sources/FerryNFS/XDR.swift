#if canImport(Glibc)
import Glibc
#endif
import FerryCore

/// Bounds-checked XDR decoding (RFC 4506) of bytes a server sent: every read checks what is
/// left and answers nil when the data is cut short, so a hostile or broken reply is a decode
/// failure, never a crash or an allocation sized by the peer.
struct XDRReader {
    let bytes: UnsafeRawBufferPointer
    var offset = 0
    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var remaining: Int { bytes.count - offset }

    mutating func u32() -> UInt32? {
        guard offset + 4 <= bytes.count else { return nil }
        defer { offset += 4 }
        return UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }
    mutating func u64() -> UInt64? {
        guard let high = u32(), let low = u32() else { return nil }
        return UInt64(high) << 32 | UInt64(low)
    }
    mutating func bool() -> Bool? { u32().map { $0 != 0 } }
    mutating func time() -> Timestamp? {
        guard let s = u64(), let n = u32() else { return nil }
        return Timestamp(seconds: Int64(bitPattern: s), nanoseconds: n)
    }
    /// Fixed-length opaque of `count` bytes (padded to 4).
    mutating func fixed(_ count: Int) -> UnsafeRawBufferPointer? {
        let padded = (count + 3) & ~3
        guard count >= 0, padded <= remaining else { return nil }
        defer { offset += padded }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + count])
    }
    /// Variable-length opaque or string: a length, the bytes, padding to 4. The length is
    /// checked against what is left before anything else.
    mutating func opaque(max limit: Int = .max) -> UnsafeRawBufferPointer? {
        guard let n = u32().map(Int.init), n <= limit, n <= remaining else { return nil }
        return fixed(n)
    }
    /// A bitmap4: a count and that many words (at most 8: no attribute Ferry knows is past 255).
    mutating func bitmap() -> [UInt32]? {
        guard let n = u32(), n <= 8 else { return nil }
        var words: [UInt32] = []
        for _ in 0..<n { guard let w = u32() else { return nil }; words.append(w) }
        return words
    }
}

/// XDR encoding into one growing buffer: a call is built here whole, its record mark
/// included, and written to the socket as it is.
struct XDRWriter {
    private(set) var bytes: [UInt8] = []

    init(reserving capacity: Int = 512) { bytes.reserveCapacity(capacity) }

    var count: Int { bytes.count }

    mutating func u32(_ v: UInt32) {
        let b = v.bigEndian
        withUnsafeBytes(of: b) { bytes.append(contentsOf: $0) }
    }
    mutating func u64(_ v: UInt64) { u32(UInt32(v >> 32)); u32(UInt32(truncatingIfNeeded: v)) }
    mutating func bool(_ v: Bool) { u32(v ? 1 : 0) }
    /// Fixed-length opaque: the bytes and padding to 4.
    mutating func fixed<C: Collection>(_ data: C) where C.Element == UInt8 {
        bytes.append(contentsOf: data)
        pad(data.count)
    }
    mutating func fixed(_ data: UnsafeRawBufferPointer) {
        bytes.append(contentsOf: data)
        pad(data.count)
    }
    /// Variable-length opaque or string.
    mutating func opaque<C: Collection>(_ data: C) where C.Element == UInt8 {
        u32(UInt32(data.count)); fixed(data)
    }
    mutating func opaque(_ data: UnsafeRawBufferPointer) {
        u32(UInt32(data.count)); fixed(data)
    }
    mutating func string(_ s: String) { opaque(Array(s.utf8)) }
    mutating func bitmap(_ words: [UInt32]) {
        u32(UInt32(words.count)); for w in words { u32(w) }
    }
    private mutating func pad(_ n: Int) {
        let extra = (4 - n % 4) % 4
        if extra > 0 { bytes.append(contentsOf: repeatElement(0, count: extra)) }
    }
    /// Overwrites the word at `offset` (a length or record mark known only at the end).
    mutating func patch(_ v: UInt32, at offset: Int) {
        let b = v.bigEndian
        withUnsafeBytes(of: b) { raw in
            for i in 0..<4 { bytes[offset + i] = raw[i] }
        }
    }
}
