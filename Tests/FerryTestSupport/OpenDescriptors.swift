import Foundation

/// This process's open descriptors and what each refers to (its /proc/self/fd link), for
/// tests that check a component closed what it opened or was given.
public func openDescriptorLinks() -> [Int32: String] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    var links: [Int32: String] = [:]
    for name in names {
        guard let fd = Int32(name),
              let link = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + name) else { continue }
        links[fd] = link
    }
    return links
}
