import FerryCore
import FerryPOSIX
import FerryTestSupport
@testable import FerryVhostUser
import Foundation
import Logging
import Testing

/// Boots a real Linux guest (QEMU TCG) against `VhostUserFSBackend` serving a POSIX export.
@Suite(.serialized) struct GuestIntegrationTests {
    static let repo: String = {
        // Tests/FerryVhostUserTests/GuestIntegrationTests.swift → repo root
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }()

    static var qemuAvailable: Bool {
        (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":").contains {
            FileManager.default.isExecutableFile(atPath: "\($0)/qemu-system-x86_64")
        }
    }

    struct Run { let status: Int32; let log: String }

    /// Runs a script of the repo; returns its exit status.
    static func script(_ name: String, _ arguments: [String]) throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: repo + "/scripts/guest/" + name)
        p.arguments = arguments
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        return p.terminationStatus
    }

    static func guest(socket: String, top: String, name: String, extra: [String] = [], cmd: String? = nil) throws -> Run {
        let log = "\(top)/\(name).log"
        var args = ["--socket", socket, "--log", log, "--quiet", "--timeout", "120"] + extra
        if let cmd { args += ["--cmd", cmd] }
        let status = try script("run-guest", args)
        let text = (try? String(contentsOfFile: log, encoding: .utf8))?.replacingOccurrences(of: "\r", with: "") ?? ""
        return Run(status: status, log: text)
    }

    final class Fixture {
        let top: String
        var export: String { top + "/export" }
        var socket: String { top + "/vhost.sock" }
        let backend: VhostUserFSBackend
        private var thread: Thread?
        private let done = DispatchSemaphore(value: 0)

        init(options: VhostUserFSOptions = .init()) throws {
            var template = Array("/tmp/ferry-vhost-XXXXXX".utf8CString)
            top = String(cString: mkdtemp(&template)!)
            try FileManager.default.createDirectory(atPath: top + "/export", withIntermediateDirectories: false)
            var logger = Logger(label: "vhost-test")
            logger.logLevel = .warning
            let server = try FUSEServer(driver: POSIXDriver(root: top + "/export"), policy: ExportPolicy(), logger: logger)
            backend = try VhostUserFSBackend(socketPath: top + "/vhost.sock", handler: server, options: options, logger: logger)
            let backend = self.backend, done = self.done
            let t = Thread { backend.run(); done.signal() }
            t.start()
            thread = t
        }

        func shutdown() -> Bool {
            backend.stop()
            return done.wait(timeout: .now() + 10) == .success
        }

        deinit { _ = try? FileManager.default.removeItem(atPath: top) }
    }

    @Test(.requires(.qemu))
    func realGuestServedTwiceThenMultiqueue() async throws {
        try await GuestSlots.run(minutes: 20) {
            #expect(try Self.script("build-image", []) == 0, "scripts/guest/build-image failed")
            let f = try Fixture()
            #expect(f.backend.state == .listening || f.backend.state == .connected)
            try "host bytes\nsecond line\n".write(toFile: f.export + "/host-hello.txt", atomically: false, encoding: .utf8)

            // 1. The default smoke test.
            let smoke = try Self.guest(socket: f.socket, top: f.top, name: "smoke")
            #expect(smoke.status == 0, "smoke run failed:\n\(smoke.log.suffix(3000))")
            #expect(smoke.log.contains("smoke: ok"))
            #expect(smoke.log.contains("host bytes"))
            #expect((try? String(contentsOfFile: f.export + "/guest-hello.txt", encoding: .utf8)) == "hello from the ferry guest\n")

            // A 3 MiB host file with a pattern, read by the guest in READs of many buffers.
            let pattern = Data((0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 12) })
            _ = FileManager.default.createFile(atPath: f.export + "/pattern.bin", contents: pattern)
            let md5 = Process()
            md5.executableURL = URL(fileURLWithPath: "/usr/bin/md5sum")
            md5.arguments = [f.export + "/pattern.bin"]
            let pipe = Pipe(); md5.standardOutput = pipe
            try md5.run(); md5.waitUntilExit()
            let hostSum = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).prefix(32)

            // 2. A second boot against the same backend: cat a host file, write one, with a large write and read back.
            let cmd = """
            set -e
            cat /mnt/host-hello.txt
            printf 'written by the guest\\n' > /mnt/from-guest.txt
            dd if=/dev/zero bs=65536 count=32 2>/dev/null | tr '\\000' 'x' > /mnt/big.bin
            wc -c < /mnt/big.bin
            mkdir -p /mnt/dir/sub && echo nested > /mnt/dir/sub/f && ls /mnt/dir/sub
            md5sum /mnt/pattern.bin
            echo 3 > /proc/sys/vm/drop_caches || true
            """
            let second = try Self.guest(socket: f.socket, top: f.top, name: "second", cmd: cmd)
            #expect(second.status == 0, "second run failed:\n\(second.log.suffix(3000))")
            #expect(second.log.contains("host bytes\nsecond line\n"))
            #expect(second.log.contains("2097152"))
            #expect(hostSum.count == 32 && second.log.contains("\(hostSum)  /mnt/pattern.bin"))
            #expect((try? String(contentsOfFile: f.export + "/from-guest.txt", encoding: .utf8)) == "written by the guest\n")
            let big = FileManager.default.contents(atPath: f.export + "/big.bin")
            #expect(big?.count == 2 * 1024 * 1024 && big?.allSatisfy { $0 == UInt8(ascii: "x") } == true)
            #expect((try? String(contentsOfFile: f.export + "/dir/sub/f", encoding: .utf8)) == "nested\n")
            #expect(f.backend.connectionsServed == 2)

            // 3. Four request queues, with the guest using them from 2 vCPUs.
            let mq = try Self.guest(socket: f.socket, top: f.top, name: "mq", extra: ["--queues", "4", "--smp", "2"],
                                    cmd: "for i in 1 2 3 4; do (echo q$i > /mnt/q$i; cat /mnt/q$i) & done; wait; cat /mnt/host-hello.txt")
            #expect(mq.status == 0, "multiqueue run failed:\n\(mq.log.suffix(3000))")
            #expect(mq.log.contains("host bytes"))
            for i in 1...4 {
                #expect((try? String(contentsOfFile: f.export + "/q\(i)", encoding: .utf8)) == "q\(i)\n")
            }
            #expect(f.backend.connectionsServed == 3)
            #expect(f.backend.state == .listening || f.backend.state == .connected)

            #expect(f.shutdown(), "run() did not return after stop()")
            #expect(f.backend.state == .stopped)
            #expect(!FileManager.default.fileExists(atPath: f.socket))
        }
    }

    @Test(.requires(.qemu))
    func realGuestWithThreadPool() async throws {
        try await GuestSlots.run(minutes: 20) {
            #expect(try Self.script("build-image", []) == 0, "scripts/guest/build-image failed")
            let f = try Fixture(options: .init(threadPoolSize: 1))      // what Kata passes
            try "pooled\n".write(toFile: f.export + "/host-hello.txt", atomically: false, encoding: .utf8)
            let run = try Self.guest(socket: f.socket, top: f.top, name: "pool",
                                     cmd: "cat /mnt/host-hello.txt; for i in 1 2 3; do echo $i > /mnt/f$i & done; wait; cat /mnt/f1 /mnt/f2 /mnt/f3")
            #expect(run.status == 0, "pool run failed:\n\(run.log.suffix(3000))")
            #expect(run.log.contains("pooled\n1\n2\n3\n"))
            #expect(f.shutdown())
        }
    }
}
