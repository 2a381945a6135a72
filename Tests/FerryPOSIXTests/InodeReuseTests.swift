import Foundation
import Synchronization
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
        for i in 0..<2048 {
            let path = directory + "/new\(i)"
            try #require(make(path) == 0, "making \(path): \(String(cString: strerror(errno)))")
            if hostStat(path).map({ UInt64($0.st_ino) }) == number { return "new\(i)" }
            made.append(path)
        }
        throw HarnessFailure("the host file system never reused inode \(number) in 2048 creations: "
            + "this test needs one that does (ext4, as /tmp is here)")
    }

    struct HarnessFailure: Error, CustomStringConvertible { let description: String; init(_ d: String) { description = d } }

    /// The deleted node, as the core holds it: `existing` finds it by its key.
    func held(_ entry: POSIXDriver.Entry) -> (InodeKey) -> Inode? {
        { $0 == entry.key ? entry.inode : nil }
    }

    @Test func aDirectoryOnADeletedFilesInodeNumberIsANewNode() throws {
        try withPrivateExt4Export(Self.handlesOnly) { path, driver in
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
        try withPrivateExt4Export(Self.handlesOnly) { path, driver in
            let root = try driver.rootInode()
            let old = try withName("old") { try driver.mkdir(root, $0, mode: 0o755, .root) }
            #expect(rmdir(path + "/old") == 0)
            // Through the driver, as a guest's CREATE would: the core interns its key, so an
            // equal key would hand the guest the deleted directory's node.
            var made: [POSIXDriver.Entry] = []
            for i in 0..<2048 {
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

    /// A name replaced again and again by a new file (on the old one's inode number, as ext4
    /// does) while another thread looks it up: LOOKUP's statx can see the old file and its
    /// file handle the new one, whose key the core already holds. The reply must then carry
    /// the attributes of the node it names, not the old file's (the kernel keeps them: a
    /// link count of 0 made it refuse link(2), and a mode or owner would be the old file's).
    /// Each generation has a size of its own, so a mixed reply shows as a size the node's
    /// file never had. On an ext4 of its own: this churn would take the inode numbers the
    /// other reuse tests (these, and the ones through ferry mount) wait to see reused.
    @Test func aLookupRacingAReplacementAnswersItsOwnNodesAttributes() throws {
        try withPrivateExt4Export { path, driver in
            let root = try driver.rootInode()
            let known = Mutex<[InodeKey: Inode]>([:])
            let done = Atomic<Bool>(false)
            let replaced = Mutex<(count: Int, failure: String?)>((0, nil))
            let replacer = Thread {
                defer { done.store(true, ordering: .releasing) }
                for generation in 0..<50_000 {
                    let temporary = path + "/tmp"
                    let fd = open(temporary, O_CREAT | O_WRONLY | O_TRUNC, 0o644)
                    guard fd >= 0 else { replaced.withLock { $0.failure = "open: \(errno)" }; return }
                    _ = ftruncate(fd, off_t(1 + generation % 97))
                    close(fd)
                    // The core holds the new file's node before the name is replaced.
                    let entry: POSIXDriver.Entry
                    do { entry = try driver.lookup(root, "tmp") } catch {
                        replaced.withLock { $0.failure = "lookup of tmp: \(error)" }
                        return
                    }
                    known.withLock { $0[entry.key] = entry.inode }
                    guard rename(temporary, path + "/x") == 0 else { replaced.withLock { $0.failure = "rename: \(errno)" }; return }
                    replaced.withLock { $0.count += 1 }
                }
            }
            replacer.start()
            var mixed: [String] = []
            var fastAnswers = 0
            while !done.load(ordering: .acquiring) && mixed.isEmpty {
                guard let entry = try? withName("x", { try driver.lookup(root, $0, .root, existing: { key in known.withLock { $0[key] } }) }),
                      known.withLock({ $0[entry.key] }) === entry.inode else { continue }
                fastAnswers += 1
                // The node's own file (still there, or gone: then nothing to compare).
                guard let own = try? driver.getattr(entry.inode, nil, .root) else { continue }
                if own.size != entry.attributes.size {
                    mixed.append("node of inode \(own.inode) (size \(own.size)) answered with size \(entry.attributes.size)")
                }
            }
            while !done.load(ordering: .acquiring) { usleep(1000) }
            POSIXDriver.resetThreadCredentials()
            let (count, failure) = replaced.withLock { $0 }
            #expect(failure == nil && count > 0, "the replacing thread stopped after \(count): \(failure ?? "")")
            #expect(fastAnswers > 0, "no LOOKUP found its node already held: the test did not exercise the fast path")
            #expect(mixed.isEmpty, "\(mixed.first ?? "")")
        }
    }

}
