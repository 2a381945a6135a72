import FerryCore
import FerryFUSE
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite struct RequestPolicyTests {
    @Test(arguments: [
        ("a/b", EINVAL), ("..", EINVAL), (".", EINVAL), ("", EINVAL),
        (String(repeating: "n", count: 256), ENAMETOOLONG), ("/etc", EINVAL),
    ])
    func unsafeNamesNeverReachTheDriver(name: String, errno expected: Int32) throws {
        let driver = MemoryDriver()
        let t = TestTransport(try makeServer(driver))
        #expect(t.lookup(name).error == -expected)
        #expect(t.mkdir(name).error == -expected)
        #expect(driver.calls.isEmpty)
    }

    @Test func aNameOf255BytesIsAccepted() throws {
        let t = TestTransport(try makeServer())
        #expect(t.mkdir(String(repeating: "n", count: 255)).error == 0)
    }

    @Test func theCallersCredentialsReachTheDriver() throws {
        let driver = MemoryDriver()
        let t = TestTransport(try makeServer(driver))
        _ = t.mkdir("a", uid: 1234, gid: 5678)
        #expect(driver.calls.count == 1)
        #expect(driver.calls[0].0 == "mkdir" && driver.calls[0].1 == 1234 && driver.calls[0].2 == 5678 && driver.calls[0].3 == 1)
    }

    @Test func requestsBeforeInitAreRefused() throws {
        let t = TestTransport(try makeServer(), initialize: false)
        #expect(t.getattr(1).error == -EIO)
    }

    @Test func initNegotiatesDownToTheKernelsMinor() throws {
        let t = TestTransport(try makeServer(), initialize: false)
        let r = t.send(RequestBuilder.initRequest(minor: 31))!
        #expect(r.error == 0)
        #expect(r.u32(at: 0) == 7 && r.u32(at: 4) == 31)
        #expect(t.getattr(1).error == 0)
    }

    @Test func aSecondInitIsAProtocolError() throws {
        let t = TestTransport(try makeServer())
        #expect(t.send(RequestBuilder.initRequest())?.error == -EPROTO)
    }

    @Test func readOnlyExportsRefuseEveryChange() throws {
        let driver = MemoryDriver()
        let t = TestTransport(try makeServer(driver, policy: ExportPolicy(readOnly: true)))
        #expect(t.mkdir("a").error == -EROFS)
        var c = RequestBuilder(); c.u32(UInt32(O_WRONLY)); c.u32(0o644); c.u32(0); c.u32(0); c.name("f")
        #expect(t.send(c.request(.create))?.error == -EROFS)
        var o = RequestBuilder(); o.u32(UInt32(O_RDWR)); o.u32(0)
        #expect(t.send(o.request(.open))?.error == -EROFS)
        #expect(driver.calls.isEmpty)
    }

    @Test func deviceNodesNeedTheExportsPermission() throws {
        func mknod(_ t: TestTransport, _ mode: UInt32) -> Int32 {
            var b = RequestBuilder(); b.u32(mode); b.u32(0x0103); b.u32(0); b.u32(0); b.name("dev")
            return t.send(b.request(.mknod))!.error
        }
        let strict = TestTransport(try makeServer())
        #expect(mknod(strict, UInt32(S_IFCHR) | 0o600) == -EPERM)
        #expect(mknod(strict, UInt32(S_IFBLK) | 0o600) == -EPERM)
        let lenient = TestTransport(try makeServer(policy: ExportPolicy(allowDevices: true)))
        #expect(mknod(lenient, UInt32(S_IFCHR) | 0o600) == 0)
    }

    @Test func xattrsAreOffUnlessEnabled() throws {
        let t = TestTransport(try makeServer())
        var b = RequestBuilder(); b.u32(0); b.u32(0); b.name("user.x")
        #expect(t.send(b.request(.getxattr))?.error == -ENOSYS)
    }

    @Test func forgedFileHandlesFindNothing() throws {
        let t = TestTransport(try makeServer())
        var r = RequestBuilder(); r.u64(0xdead_beef_0000_0001); r.u64(0); r.u32(4096); r.u32(0); r.u64(0); r.u32(0); r.u32(0)
        #expect(t.send(r.request(.read))?.error == -EBADF)
        #expect(t.send(r.request(.readdir))?.error == -EBADF)
    }

    @Test(arguments: [CachePolicy.never, .metadata, .auto, .always])
    func entryTimeoutsFollowTheCachePolicy(policy: CachePolicy) throws {
        let t = TestTransport(try makeServer(policy: ExportPolicy(cache: policy)))
        #expect(t.mkdir("a").entryValid == policy.timeout)
    }

    @Test func unknownOpcodesGetENOSYS() throws {
        let t = TestTransport(try makeServer())
        #expect(t.send(RequestBuilder.request(4000, body: []))?.error == -ENOSYS)
        #expect(t.send(RequestBuilder.request(FUSEOpcode.ioctl.rawValue, body: [UInt8](repeating: 0, count: 32)))?.error == -ENOSYS)
    }

    @Test func readdirplusGivesEveryEntryOneLookup() throws {
        let server = try makeServer()
        let t = TestTransport(server)
        for i in 0..<50 { _ = t.mkdir("d\(i)") }
        var o = RequestBuilder(); o.u32(0); o.u32(0)
        let fh = t.send(o.request(.opendir))!.u64(at: 0)
        var offset: UInt64 = 0
        var names = 0
        while true {
            var r = RequestBuilder(); r.u64(fh); r.u64(offset); r.u32(1024); r.u32(0); r.u64(0); r.u32(0); r.u32(0)
            let reply = t.send(r.request(.readdirplus))!
            #expect(reply.error == 0)
            if reply.bytes.count == 16 { break }
            var at = 16
            while at < reply.bytes.count {
                let nameLength = reply.bytes.withUnsafeBytes { Int($0.loadUnaligned(fromByteOffset: at + 128 + 16, as: UInt32.self)) }
                offset = reply.bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at + 128 + 8, as: UInt64.self) }
                at += (128 + 24 + nameLength + 7) & ~7
                names += 1
            }
        }
        #expect(names == 50)
        // mkdir took one lookup each, readdirplus exactly one more.
        for id in 2...51 { #expect(server.lookupCount(of: UInt64(id)) == 2) }
    }
}

@Suite struct PolicyKnobTests {
    @Test func readdirplusCanBeTurnedOff() throws {
        let on = TestTransport(try makeServer(), initialize: false)
        let off = TestTransport(try makeServer(policy: ExportPolicy(readdirplus: false)), initialize: false)
        let doReaddirplus: UInt32 = 1 << 13
        #expect(on.send(RequestBuilder.initRequest())!.u32(at: 12) & doReaddirplus != 0)
        #expect(off.send(RequestBuilder.initRequest())!.u32(at: 12) & doReaddirplus == 0)
    }

    @Test func malformedRequestsAreCounted() throws {
        let server = try makeServer()
        let t = TestTransport(server)
        for _ in 0..<25 { _ = t.send(RequestBuilder.request(FUSEOpcode.read.rawValue, body: [1])) }
        #expect(server.malformedRequests == 25)
    }
}
