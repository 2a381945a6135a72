import Foundation
import FerryTestSupport
import Testing

/// `ferry mount` says what is wrong, in words an operator can act on, and exits non-zero.
@Suite struct MountErrorTests {
    @Test func aMissingMountPointIsNamed() throws {
        let ferry = try BuiltProducts.require("ferry")
        let source = try makeTemporaryDirectory("ferry-src")
        defer { try? FileManager.default.removeItem(atPath: source) }
        let result = try runToCompletion(ferry, ["mount", source, "/nonexistent/ferry-mnt"])
        #expect(!result.succeeded)
        #expect(result.output.contains("mount point /nonexistent/ferry-mnt"), "\(result.output)")
    }

    @Test func aMissingSourceIsNamed() throws {
        let ferry = try BuiltProducts.require("ferry")
        let mnt = try makeTemporaryDirectory("ferry-mnt")
        defer { try? FileManager.default.removeItem(atPath: mnt) }
        let result = try runToCompletion(ferry, ["mount", "/nonexistent/ferry-src", mnt])
        #expect(!result.succeeded)
        #expect(result.output.contains("source /nonexistent/ferry-src"), "\(result.output)")
    }

    @Test func sourcesThisBuildCannotServeFailLoudly() throws {
        let ferry = try BuiltProducts.require("ferry")
        let mnt = try makeTemporaryDirectory("ferry-mnt")
        defer { try? FileManager.default.removeItem(atPath: mnt) }
        for source in ["nfs://127.0.0.1/export", "rados://pool", "s3://bucket"] {
            let result = try runToCompletion(ferry, ["mount", source, mnt])
            #expect(!result.succeeded)
            #expect(result.output.contains(source), "\(result.output)")
        }
    }

    @Test(.requires(.root, .setpriv))
    func anUnprivilegedUserIsToldToRunAsRoot() throws {
        let ferry = try BuiltProducts.require("ferry")
        let source = try makeTemporaryDirectory("ferry-src"), mnt = try makeTemporaryDirectory("ferry-mnt")
        defer { try? FileManager.default.removeItem(atPath: source); try? FileManager.default.removeItem(atPath: mnt) }
        chmod(source, 0o755); chmod(mnt, 0o755)
        // The binary lives under the build tree, which must be reachable for the other user.
        let result = try runToCompletion("/usr/bin/setpriv",
                                         ["--reuid=65534", "--regid=65534", "--clear-groups", ferry, "mount", source, mnt])
        #expect(!result.succeeded)
        #expect(result.output.contains("root"), "\(result.output)")
    }
}
