import FerryCore

/// Where the driver last saw each file, by handle: the directory and name (NFSv4.0).
///
/// A v4.0 OPEN cannot name a file by its handle (CLAIM_FH is 4.1), only by a name in a
/// directory, and a record lock must hang from an OPEN. So the driver notes the name of
/// every handle that LOOKUP, create, link, rename and READDIR show it, and the lock path
/// opens that name (checking that the handle it finds is still the file's).
///
/// Bounded: past `limit` places, some are forgotten; a file whose name was forgotten (or
/// never seen) cannot be locked on v4.0 (ENOLCK) until it is looked up again.
struct NFS4Names {
    struct Place: Hashable { let directory: FileHandle; let name: [UInt8] }
    private(set) var byHandle: [FileHandle: Place] = [:]
    private var byPlace: [Place: FileHandle] = [:]
    static let limit = 1 << 16

    /// `handle` is `name` in `directory` now.
    mutating func saw(_ handle: FileHandle, in directory: FileHandle, _ name: [UInt8]) {
        let place = Place(directory: directory, name: name)
        if let old = byPlace[place], old != handle, byHandle[old] == place { byHandle[old] = nil }
        if let was = byHandle[handle], was != place, byPlace[was] == handle { byPlace[was] = nil }
        if byHandle[handle] == nil && byHandle.count >= Self.limit, let (h, p) = byHandle.first {
            byHandle[h] = nil
            byPlace[p] = nil
        }
        byHandle[handle] = place
        byPlace[place] = handle
    }

    /// The name in `directory` is gone (REMOVE).
    mutating func removed(_ directory: FileHandle, _ name: [UInt8]) {
        let place = Place(directory: directory, name: name)
        if let h = byPlace.removeValue(forKey: place), byHandle[h] == place { byHandle[h] = nil }
    }

    /// The name moved (RENAME): the file it named, if known, is now at the new name, and
    /// whatever the new name named before has no known name.
    mutating func renamed(_ from: FileHandle, _ name: [UInt8], _ to: FileHandle, _ newName: [UInt8]) {
        guard let moved = byPlace[Place(directory: from, name: name)] else {
            removed(to, newName)
            return
        }
        removed(from, name)
        saw(moved, in: to, newName)
    }
}
