import Foundation
import Testing

import FerryCore
@testable import FerryPOSIX

/// ext4 gives a freed inode number to the next file it creates, while the client may still
/// hold the node of the deleted file (FORGET comes late, or a process keeps it as its cwd or
/// an O_PATH descriptor). A node held only by file handle pins nothing on the host, so the
/// new file and the deleted one share device, inode number and mount: they must still be
/// two nodes.
@Suite(.serialized) struct InodeReuseTests {
    /// No cached descriptors: every node is held by file handle alone, as it is on a busy
    /// export once the budget is spent.
    static let handlesOnly = POSIXOptions(fileHandles: .mandatory, maxCachedDescriptors: 0)

    /// Makes `base0`, `base1`… in `directory` on the host with `make` until one gets inode
    /// number `number`; removes the others and returns the name that did.
    func hostNameReusing(_ number: UInt64, in directory: String, _ make: (String) -> Int32) throws -> String {
        var made: [String] = []
        defer { for path in made { _ = remove(path) } }
        for i in 0..<256 {
            let path = directory + "/new\(i)"
            try #require(make(path) == 0, "making \(path): \(String(cString: strerror(errno)))")
            if hostStat(path).map({ UInt64($0.st_ino) }) == number { return "new\(i)" }
            made.append(path)
        }
        throw HarnessFailure("the host file system never reused inode \(number) in 256 creations: "
            + "this test needs one that does (ext4, as /tmp is here)")
    }

    struct HarnessFailure: Error, CustomStringConvertible { let description: String; init(_ d: String) { description = d } }

    /// The deleted node, as the core holds it: `existing` finds it by its key.
    func held(_ entry: POSIXDriver.Entry) -> (InodeKey) -> Inode? {
        { $0 == entry.key ? entry.inode : nil }
    }

    @Test func aDirectoryOnADeletedFilesInodeNumberIsANewNode() throws {
        try withExport(Self.handlesOnly) { path, driver in
            let root = try driver.rootInode()
            let old = try driver.create(root, "old").0
            #expect(old.inode.usesHandle && old.inode.cachedFD.load(ordering: .relaxed) == -1)
            #expect(unlink(path + "/old") == 0)
            let name = try hostNameReusing(old.key.inode, in: path) { mkdir($0, 0o755) }

            let found = try withName(name) { try driver.lookup(root, $0, .root, existing: held(old)) }
            #expect(found.key != old.key)
            #expect(found.inode !== old.inode)
            #expect(found.inode.isDirectory)
            // The new node reaches the new directory.
            #expect(try driver.create(found.inode, "inside").0.attributes.linkCount == 1)
        }
    }

    @Test func aFileMadeOnADeletedDirectorysInodeNumberHasAnotherKey() throws {
        try withExport(Self.handlesOnly) { path, driver in
            let root = try driver.rootInode()
            let old = try withName("old") { try driver.mkdir(root, $0, mode: 0o755, .root) }
            #expect(rmdir(path + "/old") == 0)
            // Through the driver, as a guest's CREATE would: the core interns its key, so an
            // equal key would hand the guest the deleted directory's node.
            var made: [POSIXDriver.Entry] = []
            for i in 0..<256 {
                let entry = try driver.create(root, "new\(i)").0
                if entry.key.inode == old.key.inode { made.append(entry); break }
                #expect(unlink(path + "/new\(i)") == 0)
            }
            let reused = try #require(made.first, "ext4 never reused inode \(old.key.inode)")
            #expect(reused.key != old.key)
            #expect(reused.inode.isRegularFile)
        }
    }

    @Test func aFileLookedUpAgainFindsItsNodeWhateverHoldsIt() throws {
        for options in [Self.handlesOnly, POSIXOptions(), POSIXOptions(fileHandles: .never)] {
            try withExport(options) { path, driver in
                let root = try driver.rootInode()
                let made = try driver.create(root, "f").0
                let linked = try withName("g") { try driver.link(made.inode, to: root, $0, .root) }
                for name in ["f", "g"] {
                    let again = try withName(name) { try driver.lookup(root, $0, .root, existing: held(made)) }
                    #expect(again.key == made.key && again.key == linked.key)
                    #expect(again.inode === made.inode, "\(options.fileHandles) \(name)")
                }
            }
        }
    }
}
