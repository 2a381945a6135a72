import FerryFUSE
import Testing

/// The trailing extension area and FUSE_EXT_GROUPS lookup.
@Suite struct ExtensionTests {
    /// A FUSE_EXT_GROUPS record with `groups`, padded to 8 bytes.
    static func groupsRecord(_ groups: [UInt32], claimedCount: UInt32? = nil) -> [UInt8] {
        let size = (8 + 4 + groups.count * 4 + 7) & ~7
        return Wire.build { w in
            w.u32(UInt32(size)); w.u32(32)
            w.u32(claimedCount ?? UInt32(groups.count))
            for g in groups { w.u32(g) }
            w.zeros(size - 12 - groups.count * 4)
        }
    }

    @Test func extensionAreaIsSplitOffTheArguments() throws {
        let secctx = Wire.build { w in w.u32(16); w.u32(1); w.u64(0) }
        let ext = secctx + Self.groupsRecord([10, 20, 30])
        try withDecoded(request(.mkdir, extensions: ext) { w in w.u32(0o755); w.u32(0o22); w.cstr("d") }) { d in
            #expect(d.header.totalExtensionLength == UInt16(ext.count / 8))
            #expect(Array(d.extensions) == ext)
            guard case let .mkdir(fixed, name) = d.request else { return unexpected(d.request) }
            #expect(fixed.mode == 0o755)
            #expect(text(name) == "d")
        }
    }

    @Test func supplementaryGroupsAreFoundAfterOtherRecords() {
        let ext = Wire.build { w in w.u32(16); w.u32(1); w.u64(0) } + Self.groupsRecord([10, 20, 30])
        ext.withUnsafeBytes { raw in
            let groups = FUSEExtensions.supplementaryGroups(raw)
            #expect(groups?.count == 12)
            if let groups {
                let ids = (0..<3).map { UInt32(littleEndian: groups.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self)) }
                #expect(ids == [10, 20, 30])
            }
        }
    }

    @Test func supplementaryGroupsViewExcludesRecordPadding() {
        // One group: 8 + 4 + 4 = 16 bytes, no padding; two groups: 20 -> 24 with padding.
        Self.groupsRecord([7, 8]).withUnsafeBytes { raw in
            #expect(FUSEExtensions.supplementaryGroups(raw)?.count == 8)
        }
        Self.groupsRecord([]).withUnsafeBytes { raw in
            #expect(FUSEExtensions.supplementaryGroups(raw)?.count == 0)
        }
    }

    @Test func supplementaryGroupsAbsentIsNil() {
        let ext = Wire.build { w in w.u32(16); w.u32(1); w.u64(0) }
        ext.withUnsafeBytes { #expect(FUSEExtensions.supplementaryGroups($0) == nil) }
        [UInt8]().withUnsafeBytes { #expect(FUSEExtensions.supplementaryGroups($0) == nil) }
    }

    @Test func supplementaryGroupsCountBeyondRecordIsNil() {
        // 16-byte record: room for exactly one id after nr_groups.
        Self.groupsRecord([1], claimedCount: 2).withUnsafeBytes { raw in
            #expect(FUSEExtensions.supplementaryGroups(raw) == nil)
        }
        Self.groupsRecord([1], claimedCount: UInt32.max).withUnsafeBytes { raw in
            #expect(FUSEExtensions.supplementaryGroups(raw) == nil)
        }
        // A groups record too small even for nr_groups.
        Wire.build { w in w.u32(8); w.u32(32) }.withUnsafeBytes { raw in
            #expect(FUSEExtensions.supplementaryGroups(raw) == nil)
        }
    }
}
