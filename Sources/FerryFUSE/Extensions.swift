/// Reading the extension area that trails a request (`fuse_in_header.total_extlen`).
///
/// The area is a sequence of records, each starting with `struct fuse_ext_header
/// { u32 size; u32 type; }`, where `size` covers the header and is a multiple of 8.
public enum FUSEExtensions {
    /// `FUSE_EXT_GROUPS` (protocol 7.39): the caller's supplementary groups, sent with
    /// creating requests when FUSE_CREATE_SUPP_GROUP was negotiated.
    public static let groupsType: UInt32 = 32

    static let headerSize = 8

    /// The group ids (`nr_groups` little-endian u32s) of the first FUSE_EXT_GROUPS record,
    /// or nil when there is none or its count does not fit its record.
    public static func supplementaryGroups(_ extensions: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        var offset = 0
        while let (size, type) = record(in: extensions, at: offset) {
            if type == groupsType {
                // fuse_supp_groups: u32 nr_groups, then the ids.
                let body = size - headerSize
                guard body >= 4 else { return nil }
                let countOffset = offset + headerSize
                let groups = Int(UInt32(littleEndian: extensions.loadUnaligned(fromByteOffset: countOffset, as: UInt32.self)))
                // On 64-bit Int this cannot overflow (UInt32.max * 4 fits), but the
                // comparison must not trust the count either way.
                guard groups <= (body - 4) / 4 else { return nil }
                let start = countOffset + 4
                return UnsafeRawBufferPointer(rebasing: extensions[start..<(start + groups * 4)])
            }
            offset += size
        }
        return nil
    }

    /// Whether `extensions` is exactly a sequence of well-formed records.
    static func isWellFormed(_ extensions: UnsafeRawBufferPointer) -> Bool {
        var offset = 0
        while offset < extensions.count {
            guard let (size, _) = record(in: extensions, at: offset) else { return false }
            offset += size
        }
        return true
    }

    /// The (size, type) of the record at `offset`, or nil when none fits there.
    private static func record(in extensions: UnsafeRawBufferPointer, at offset: Int) -> (Int, UInt32)? {
        guard extensions.count - offset >= headerSize else { return nil }
        let size = Int(UInt32(littleEndian: extensions.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
        let type = UInt32(littleEndian: extensions.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self))
        guard size >= headerSize, size % 8 == 0, size <= extensions.count - offset else { return nil }
        return (size, type)
    }
}
