@testable import FerryNFS
import Testing

/// Where the driver last saw each file (v4.0 locks open it there), without a server.
@Suite struct NFS4NamesTests {
    let dir = FileHandle(bytes: [1]), other = FileHandle(bytes: [2])
    let f = FileHandle(bytes: [10]), g = FileHandle(bytes: [11])

    private func place(_ names: NFS4Names, _ h: FileHandle) -> (FileHandle, String)? {
        names.byHandle[h].map { ($0.directory, String(decoding: $0.name, as: UTF8.self)) }
    }

    @Test func aRenameMovesTheFilesNameAndTheReplacedFileHasNone() {
        var names = NFS4Names()
        names.saw(f, in: dir, Array("a".utf8))
        names.saw(g, in: dir, Array("b".utf8))
        names.renamed(dir, Array("a".utf8), other, Array("b".utf8))
        #expect(place(names, f)! == (other, "b"))
        #expect(place(names, g)! == (dir, "b"), "g was b in dir, not in other")
        names.renamed(other, Array("b".utf8), dir, Array("b".utf8))
        #expect(place(names, f)! == (dir, "b"))
        #expect(place(names, g) == nil, "replaced by the rename")
    }

    @Test func aNameSeenForAnotherFileOrRemovedIsForgotten() {
        var names = NFS4Names()
        names.saw(f, in: dir, Array("a".utf8))
        names.saw(g, in: dir, Array("a".utf8))
        #expect(place(names, f) == nil)
        #expect(place(names, g)! == (dir, "a"))
        names.removed(dir, Array("a".utf8))
        #expect(place(names, g) == nil)
        // A rename of a name not known forgets what the new name was.
        names.saw(f, in: dir, Array("c".utf8))
        names.renamed(dir, Array("unknown".utf8), dir, Array("c".utf8))
        #expect(place(names, f) == nil)
    }

    @Test func theNamesKeptAreBounded() {
        var names = NFS4Names()
        for i in 0..<(NFS4Names.limit + 10) {
            names.saw(FileHandle(bytes: withUnsafeBytes(of: UInt32(i)) { Array($0) }), in: dir, Array("n\(i)".utf8))
        }
        #expect(names.byHandle.count == NFS4Names.limit)
    }
}
