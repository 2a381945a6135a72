import FerryFUSE
import Testing

/// Assembles little-endian request bytes by hand, so golden tests do not depend on the
/// code under test to lay anything out. A class so fill closures work inside `#expect`.
final class Wire {
    var bytes: [UInt8] = []

    func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    func zeros(_ n: Int) { bytes += [UInt8](repeating: 0, count: n) }
    /// A name with its NUL terminator.
    func cstr(_ s: String) { bytes += Array(s.utf8); bytes.append(0) }
    func raw(_ b: [UInt8]) { bytes += b }

    static func build(_ fill: (Wire) -> Void) -> [UInt8] {
        let w = Wire()
        fill(w)
        return w.bytes
    }
}

enum Sample {
    static let unique: UInt64 = 0x1122_3344_5566_7788
    static let nodeID: UInt64 = 0x0102_0304_0506_0708
    static let uid: UInt32 = 1000
    static let gid: UInt32 = 100
    static let pid: UInt32 = 4242
}

/// A complete request: `fuse_in_header` + `args` + `extensions`. `length` overrides the
/// header's length field, `extensionUnits` its total_extlen.
func request(_ opcode: UInt32, args: [UInt8] = [], extensions: [UInt8] = [],
             length: UInt32? = nil, extensionUnits: UInt16? = nil) -> [UInt8] {
    let w = Wire()
    w.u32(length ?? UInt32(40 + args.count + extensions.count))
    w.u32(opcode)
    w.u64(Sample.unique)
    w.u64(Sample.nodeID)
    w.u32(Sample.uid)
    w.u32(Sample.gid)
    w.u32(Sample.pid)
    w.u16(extensionUnits ?? UInt16(extensions.count / 8))
    w.u16(0)
    w.raw(args)
    w.raw(extensions)
    return w.bytes
}

func request(_ opcode: FUSEOpcode, extensions: [UInt8] = [], _ fill: (Wire) -> Void = { _ in }) -> [UInt8] {
    request(opcode.rawValue, args: Wire.build(fill), extensions: extensions)
}

/// Decodes `bytes` and hands the result (whose views point into `bytes`) to `check`.
func withDecoded(_ bytes: [UInt8], options: FUSEDecodeOptions = FUSEDecodeOptions(),
                 _ check: (FUSEDecodedRequest) throws -> Void) throws {
    try bytes.withUnsafeBytes { raw in
        let decoded = try FUSEDecoder.decode(raw, options: options)
        try check(decoded)
    }
}

/// The error decoding `bytes` throws, or nil if it decodes.
func decodeError(_ bytes: [UInt8], options: FUSEDecodeOptions = FUSEDecodeOptions()) -> FUSEDecodeError? {
    bytes.withUnsafeBytes { raw -> FUSEDecodeError? in
        do throws(FUSEDecodeError) {
            _ = try FUSEDecoder.decode(raw, options: options)
            return nil
        } catch {
            return error
        }
    }
}

/// The text of a decoded name, checking the contract that a NUL follows the view.
func text(_ name: UnsafeRawBufferPointer, sourceLocation: SourceLocation = #_sourceLocation) -> String {
    let terminator = name.baseAddress.map { $0.load(fromByteOffset: name.count, as: UInt8.self) }
    #expect(terminator == 0, "name view must be followed by its NUL", sourceLocation: sourceLocation)
    return String(decoding: name, as: UTF8.self)
}

func unexpected(_ request: FUSERequest, sourceLocation: SourceLocation = #_sourceLocation) {
    Issue.record("unexpected request \(request)", sourceLocation: sourceLocation)
}

/// Runs `encode` into a buffer pre-filled with 0xAA (so unwritten padding shows) and
/// returns the bytes it reported writing.
func encoded(capacity: Int = 512, _ encode: (UnsafeMutableRawBufferPointer) -> Int) -> [UInt8] {
    var storage = [UInt8](repeating: 0xAA, count: capacity)
    let n = storage.withUnsafeMutableBytes { encode($0) }
    return Array(storage[..<n])
}

/// The encoding of `value` alone (no reply header).
func body<T: FUSEEncodable>(_ value: T) -> [UInt8] {
    Array(encoded { FUSEReply.encode(value, unique: 0, into: $0) }.dropFirst(16))
}
