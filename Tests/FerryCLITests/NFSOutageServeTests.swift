import FerryFUSE
import FerryTestSupport
import FerryVhostFrontend
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// An NFS server that hangs, seen from `ferry serve`: the NFS export's queue keeps a
/// request in flight on every NFS connection, its hiprio queue (FORGET) is still served,
/// another tenant's export and the control socket answer as before, and when the server
/// comes back every waiting request is answered, correctly.
@Suite(.serialized, .requires(.root, .ganesha))
struct NFSOutageServeTests {
    static let connections = 4

    func nfsExport(_ f: ServeFixture, path: String, version: Int) -> String {
        """
        [[export]]
        name = "share"
        tag = "hung-share"
        socket = "\(f.socket("hung-share"))"
        [export.backend]
        kind = "nfs"
        server = "127.0.0.1"
        path = "\(path)"
        version = \(version)
        timeout = 300
        connections = \(Self.connections)

        """
    }

    @Test(.timeLimit(.minutes(10)), arguments: [3, 4])
    func aHungServerStallsOnlyItsExportWhoseQueueKeepsOneRequestPerConnection(version: Int) async throws {
        let server = try NFSTestServer.shared()
        let dir = try server.makeExport("hung-v\(version)")
        let content = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        FileManager.default.createFile(atPath: dir + "/f", contents: Data(content))
        chmod(dir + "/f", 0o666)

        let f = try ServeFixture()
        try f.writeTenant("hung", nfsExport(f, path: dir, version: version))
        try f.writeTenant("other", f.posixExport("home", tenant: "other", path: try f.directory("home")))
        try f.start()
        #expect(FerryWait.until(60) { (try? f.state("hung", "share")) == "listening" }, "\(f.log)")
        let show = try f.ferry(["exports", "show", "hung/share", "--config", f.config])
        #expect(show.output.split(separator: "\n").contains { $0.hasPrefix("threads per queue") && $0.hasSuffix(" \(Self.connections)") },
                "\(show.output)")

        let depth = 8
        let nfs = try FUSESession(socketPath: f.socket("hung-share"),
                                  configuration: FrontendConfiguration(requestQueues: 1, depth: depth, dataBufferSize: 4096))
        let q = nfs.queue
        let file = try q.lookup(parent: FUSESession.rootNodeID, name: "f").nodeID
        _ = try q.lookup(parent: FUSESession.rootNodeID, name: "f")      // a second reference, for the FORGET below
        let handle = try q.open(nodeID: file, flags: O_RDONLY)
        let other = try FUSESession(socketPath: f.socket("other-home"))

        try await server.exclusive {
            try server.pause()
            var resumed = false
            defer { if !resumed { try? server.resume() } }

            // Eight READs on the export's one request queue.
            var slots: [Int] = []
            for i in 0..<depth {
                let slot = q.submit(opcode: .read, nodeID: file, argument: FUSEReadIn(fh: handle.fh, offset: UInt64(i % 2) * 2048, size: 2048),
                                    readLength: 2048)
                slots.append(try #require(slot))
            }
            // One call waits on each connection at once: the queue did not serialize them.
            #expect(FerryWait.until(60) { NFSTestServer.connectionsWithUnreadCalls() >= Self.connections },
                    "connections with unanswered calls: \(NFSTestServer.connectionsWithUnreadCalls())")

            // The same export's hiprio queue is served meanwhile.
            try nfs.forget(nodeID: file, nlookup: 1)
            #expect(try nfs.drainHiprio(timeoutMilliseconds: 30_000) == [0])
            // Another tenant's export works, and the operator's commands answer.
            let c = try other.queue.create(parent: FUSESession.rootNodeID, name: "still-here", flags: O_RDWR, mode: 0o644)
            #expect(try other.queue.write(nodeID: c.entry.nodeID, fh: c.open.fh, offset: 0, data: Array("yes".utf8)) == 3)
            #expect(try other.queue.read(nodeID: c.entry.nodeID, fh: c.open.fh, offset: 0, size: 16) == Array("yes".utf8))
            #expect(try f.state("hung", "share") == "guest connected")
            #expect(try f.state("other", "home") == "guest connected")

            // The server comes back: every waiting READ is answered with the file's bytes.
            try server.resume()
            resumed = true
            var answered = 0
            while answered < depth {
                try q.waitAndReap(timeoutMilliseconds: 120_000) { completion in
                    answered += 1
                    let i = slots.firstIndex(of: completion.slot) ?? 0
                    let start = (i % 2) * 2048
                    #expect(completion.header?.error == 0)
                    #expect(Int(completion.usedLength) == FUSEOutHeader.size + 2048)
                    #expect(Array(q.dataBuffer(completion.slot)[..<2048]) == Array(content[start..<start + 2048]))
                }
            }
        }
        // Still one reference left after the FORGET of the other.
        #expect(try q.getattr(nodeID: file).attr.size == 4096)
        withExtendedLifetime((nfs, other)) {}
        #expect(f.stop() == 0, "\(f.log)")
    }
}
