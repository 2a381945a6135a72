import FerryTestSupport
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

private struct Finished {
    let status: Int32
    let stdout: String
    let stderr: String
}

/// Runs a program to completion with no signals blocked (the test runner blocks some).
private func run(_ executable: String, _ arguments: [String]) throws -> Finished {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try runWithDefaultSignalMask(process)
    // Small outputs: reading one pipe after the other cannot fill the other.
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return Finished(status: process.terminationStatus,
                    stdout: String(decoding: stdout, as: UTF8.self),
                    stderr: String(decoding: stderr, as: UTF8.self))
}

/// libvirt migrates a vhost-user-fs device only when its daemon lists migrate-precopy.
private let capabilities = "{\n  \"type\": \"fs\",\n  \"features\": [\n    \"migrate-precopy\",\n    \"separate-options\"\n  ]\n}\n"

/// A temporary directory holding a link named `name` to the built ferry.
private func link(named name: String) throws -> (link: String, directory: String) {
    let ferry = try BuiltProducts.require("ferry")
    let directory = FileManager.default.temporaryDirectory
        .appendingPathComponent("ferry-link-\(getpid())-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let link = directory + "/" + name
    try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: ferry)
    return (link, directory)
}

@Suite struct VirtiofsdProcessTests {
    @Test func printCapabilitiesSubcommand() throws {
        let result = try run(try BuiltProducts.require("ferry"), ["virtiofsd", "--print-capabilities"])
        #expect(result.status == 0)
        #expect(result.stdout == capabilities)
        #expect(result.stderr == "")
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        #expect(json?["type"] as? String == "fs")
        #expect(json?["features"] as? [String] == ["migrate-precopy", "separate-options"])
    }

    @Test func linkNamedVirtiofsd() throws {
        for name in ["virtiofsd", "ferry-virtiofsd"] {
            let (link, directory) = try link(named: name)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let caps = try run(link, ["--print-capabilities"])
            #expect(caps.status == 0)
            #expect(caps.stdout == capabilities)
            let version = try run(link, ["-V"])
            #expect(version.status == 0)
            #expect(version.stdout.hasPrefix("virtiofsd (ferry) "))
            let help = try run(link, ["--help"])
            #expect(help.status == 0 && help.stdout.contains("--shared-dir=DIR"))
        }
    }

    @Test func otherLinkNamesAreFerry() throws {
        let (link, directory) = try link(named: "ferry-other")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let result = try run(link, ["--print-capabilities"])
        #expect(result.status != 0)
        let listed = try run(link, ["--help"])
        #expect(listed.stdout.contains("virtiofsd"))
    }

    @Test func commandLineErrorsExitTwo() throws {
        let result = try run(try BuiltProducts.require("ferry"), ["virtiofsd", "--fd=3", "--shared-dir=/", "-o", "norace"])
        #expect(result.status == 2)
        #expect(result.stdout == "")
        #expect(result.stderr.hasPrefix("Error: -o norace is not supported: "))
        let sandbox = try run(try BuiltProducts.require("ferry"), ["virtiofsd", "--fd=3", "--shared-dir=/", "--sandbox=jail"])
        #expect(sandbox.status == 2)
        #expect(sandbox.stderr.contains("expected namespace, chroot or none"))
    }

    @Test func servingErrorsExitOne() throws {
        let ferry = try BuiltProducts.require("ferry")
        let missing = try run(ferry, ["virtiofsd", "--socket-path=/tmp/ferry-never.sock",
                                      "--shared-dir=/nonexistent/ferry-test", "--sandbox=none", "--seccomp=none"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("Error: source /nonexistent/ferry-test: export directory /nonexistent/ferry-test does not exist"))
        let group = try run(ferry, ["virtiofsd", "--socket-path=/tmp/ferry-never.sock", "--shared-dir=/",
                                    "--socket-group=no-such-group-ferry"])
        #expect(group.status == 1)
        #expect(group.stderr.contains("Error: --socket-group: no group named 'no-such-group-ferry'"))
    }

    @Test func vhostUserDescriptor() throws {
        let url = BuiltProducts.packageRoot.appendingPathComponent("config/vhost-user-fs.json")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any]
        #expect(json?["type"] as? String == "fs")
        #expect(json?["binary"] as? String == "/usr/local/bin/ferry-virtiofsd")
        #expect((json?["description"] as? String)?.isEmpty == false)
        // Only the keys QEMU's vhost-user.json schema defines.
        let keys = Set(json.map { Array($0.keys) } ?? [])
        #expect(keys.isSubset(of: ["description", "type", "binary", "tags"]))
    }
}
