/// How guest user and group ids become host ids for one export, and back.
///
/// Requests: the caller's uid, gid and groups, and the owner a SETATTR asks for, go through
/// the ranges and then the squash. Replies: attribute owners go back through the ranges;
/// a host id no range covers shows as the anonymous id, so a guest never learns host ids
/// it was not given. With no ranges and no squash the map is the identity and costs one
/// branch per request.
public struct IDMap: Sendable, Equatable {
    public enum Squash: String, Sendable, CaseIterable {
        /// Guest ids pass through (after the ranges).
        case none
        /// Guest root (uid 0, gid 0) becomes the anonymous ids.
        case root
        /// Every guest id becomes the anonymous ids.
        case all
    }

    /// `count` ids from `guest` in the guest are `host`... on the host.
    public struct Range: Sendable, Equatable {
        public var guest: UInt32
        public var host: UInt32
        public var count: UInt32
        public init(guest: UInt32, host: UInt32, count: UInt32) {
            self.guest = guest; self.host = host; self.count = count
        }
    }

    public var squash: Squash
    public var anonymousUID: UInt32
    public var anonymousGID: UInt32
    public var uidRanges: [Range]
    public var gidRanges: [Range]

    public init(squash: Squash = .none, anonymousUID: UInt32 = 65534, anonymousGID: UInt32 = 65534,
                uidRanges: [Range] = [], gidRanges: [Range] = []) {
        self.squash = squash
        self.anonymousUID = anonymousUID
        self.anonymousGID = anonymousGID
        self.uidRanges = uidRanges
        self.gidRanges = gidRanges
    }

    public static let identity = IDMap()
    public var isIdentity: Bool { squash == .none && uidRanges.isEmpty && gidRanges.isEmpty }

    /// A guest id through `ranges`: nil when ranges exist and none covers it.
    @inline(__always)
    private static func forward(_ id: UInt32, _ ranges: [Range]) -> UInt32?? {
        if ranges.isEmpty { return .some(id) }
        for r in ranges where id >= r.guest && id - r.guest < r.count { return .some(r.host + (id - r.guest)) }
        return .some(nil)
    }

    /// The host uid a guest uid acts as.
    public func hostUID(_ guest: UInt32) -> UInt32 {
        if squash == .all || (squash == .root && guest == 0) { return anonymousUID }
        return (Self.forward(guest, uidRanges) ?? nil) ?? anonymousUID
    }

    /// The host gid a guest gid acts as.
    public func hostGID(_ guest: UInt32) -> UInt32 {
        if squash == .all || (squash == .root && guest == 0) { return anonymousGID }
        return (Self.forward(guest, gidRanges) ?? nil) ?? anonymousGID
    }

    /// The guest uid a host owner is shown as.
    public func guestUID(_ host: UInt32) -> UInt32 { Self.backward(host, uidRanges, anonymous: anonymousUID) }
    /// The guest gid a host group is shown as.
    public func guestGID(_ host: UInt32) -> UInt32 { Self.backward(host, gidRanges, anonymous: anonymousGID) }

    private static func backward(_ id: UInt32, _ ranges: [Range], anonymous: UInt32) -> UInt32 {
        if ranges.isEmpty { return id }
        for r in ranges where id >= r.host && id - r.host < r.count { return r.guest + (id - r.host) }
        return anonymous
    }
}
