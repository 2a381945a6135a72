import Foundation
import FerryTestSupport
import Testing

/// A test gated on a component with `.enabled(if:)` skips silently on a CI machine that
/// lacks it; `.requires(...)` (Tests/FerryTestSupport/Requirement.swift) fails there
/// instead. This keeps new tests from bringing the silent kind back.
@Test("No test is gated on an installed component with .enabled(if:); they use .requires")
func noTestSkipsSilentlyForAMissingComponent() throws {
    // What `.enabled(if:)` conditions on components looked like before `.requires`.
    let componentChecks = ["Guest.available", "NFSTestServer.isInstalled", "CephCluster.isInstalled", "canMountFUSE",
                           "getuid() == 0", "geteuid() == 0", "ReferenceVirtiofsd.isInstalled", "qemuAvailable",
                           "systemd-analyze", "analyzer", "/usr/bin/setpriv", "/dev/fuse", "stress-ng"]
    let tests = BuiltProducts.packageRoot.appendingPathComponent("Tests").path
    let files = try #require(FileManager.default.enumerator(atPath: tests)).compactMap { $0 as? String }
        .filter { $0.hasSuffix(".swift") && !$0.hasPrefix("FerryTestSupport/") }
    try #require(files.count > 20, "found only \(files) under \(tests)")
    var offenders: [String] = []
    for file in files {
        let text = try String(contentsOfFile: tests + "/" + file, encoding: .utf8)
        // A trait may span lines: look at what follows each `.enabled(if:` up to its comment.
        var rest = Substring(text)
        while let range = rest.range(of: ".enabled(if:") {
            let condition = rest[range.upperBound...].prefix(250)
            if let check = componentChecks.first(where: { condition.prefix(while: { $0 != "\"" }).contains($0) }) {
                offenders.append("\(file): .enabled(if: ... \(check) ...)")
            }
            rest = rest[range.upperBound...]
        }
    }
    #expect(offenders.isEmpty, "use .requires(.root, .devFUSE, .qemu, .ganesha, .ceph, ...) instead:\n\(offenders.joined(separator: "\n"))")
}
