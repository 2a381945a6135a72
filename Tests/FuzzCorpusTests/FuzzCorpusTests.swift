import FerryFuzz
import FerryTestSupport
import Foundation
import Testing

/// Every input in Tests/FuzzCorpus/TARGET (the seeds, and whatever scripts/fuzz found and
/// was kept) runs through its fuzz target: none may crash. A crash here is a regression of
/// a bug a fuzzer once found.
@Suite struct FuzzCorpusTests {
    static let corpus = BuiltProducts.packageRoot.path + "/Tests/FuzzCorpus"

    static func inputs(_ target: FuzzTarget) -> [String] {
        let dir = corpus + "/" + target.rawValue
        return ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted().map { dir + "/" + $0 }
    }

    @Test(arguments: FuzzTarget.allCases)
    func theCorpusReplaysWithoutACrash(_ target: FuzzTarget) throws {
        let files = Self.inputs(target)
        #expect(files.count >= 4, "the \(target.rawValue) corpus is missing")
        for file in files {
            let data = try #require(FileManager.default.contents(atPath: file))
            data.withUnsafeBytes { target.run($0) }
        }
    }

    /// The seeds are not all refused at the first check: each target's corpus reaches past
    /// its parser's front door (a corpus of garbage would test nothing).
    @Test func seedsReachThePartsTheyAreFor() throws {
        let ring = try #require(FileManager.default.contents(atPath: Self.corpus + "/virtqueue/read-write"))
        #expect(ring.withUnsafeBytes { FuzzProbe.chainsWalked($0) } == 1)
        let indirect = try #require(FileManager.default.contents(atPath: Self.corpus + "/virtqueue/indirect"))
        #expect(indirect.withUnsafeBytes { FuzzProbe.chainsWalked($0) } == 1)
        let loop = try #require(FileManager.default.contents(atPath: Self.corpus + "/virtqueue/loop"))
        #expect(loop.withUnsafeBytes { FuzzProbe.chainsWalked($0) } == 0)
        let handshake = try #require(FileManager.default.contents(atPath: Self.corpus + "/vhost-user/rings-without-memory"))
        #expect(handshake.withUnsafeBytes { FuzzProbe.messagesHandled($0) } >= 6)
        for name in ["lookup", "write", "create", "readdirplus"] {
            let request = try #require(FileManager.default.contents(atPath: Self.corpus + "/decoder/" + name))
            #expect(request.withUnsafeBytes { FuzzProbe.decodes($0) }, "\(name) should decode")
        }
    }
}
