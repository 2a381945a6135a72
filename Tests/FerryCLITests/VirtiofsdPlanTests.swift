import FerryCore
import FerryPOSIX
import Logging
import Testing
@testable import FerryCLI
@testable import FerryDaemon

/// Parses a command line that must serve, returning its plan.
private func plan(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws -> VirtiofsdPlan {
    let invocation = try VirtiofsdPlan.parse(arguments)
    guard case .serve(let plan) = invocation else {
        Issue.record("expected a plan, got \(invocation)", sourceLocation: sourceLocation)
        throw CLIError("not a plan")
    }
    return plan
}

private func plan(_ line: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> VirtiofsdPlan {
    try plan(line.split(separator: " ").map(String.init), sourceLocation: sourceLocation)
}

/// The error message a command line fails with, or nil when it parses.
private func failure(_ arguments: [String]) -> String? {
    do {
        _ = try VirtiofsdPlan.parse(arguments)
        return nil
    } catch {
        return error.description
    }
}

private func failure(_ line: String) -> String? {
    failure(line.split(separator: " ").map(String.init))
}

private let base = "--socket-path=/run/vfs.sock --shared-dir=/srv"

@Suite struct VirtiofsdPlanTests {
    @Test func defaultsMatchVirtiofsd() throws {
        let p = try plan(base)
        var expected = VirtiofsdPlan(listener: .socketPath("/run/vfs.sock"), source: "/srv")
        expected.cache = .auto
        #expect(p == expected)
        #expect(p.cache == .auto && !p.xattr && !p.posixACL && !p.readonly && !p.writeback)
        #expect(p.announceSubmounts && p.readdirplus && !p.allowDirectIO)
        #expect(p.inodeFileHandles == .prefer && p.threadPoolSize == nil)
        #expect(p.logLevel == .info && !p.syslog && p.rlimitNofile == nil && p.socketGroup == nil)
        #expect(p.policy.announceSubmounts && p.policy.cache == .auto && !p.policy.xattr)
    }

    @Test func socketAndSource() throws {
        #expect(try plan("--socket-path /a.sock --shared-dir /x").listener == .socketPath("/a.sock"))
        #expect(try plan("--socket=/b.sock --shared-dir=/x").listener == .socketPath("/b.sock"))
        #expect(try plan("--fd=3 --shared-dir=/x").listener == .fd(3))
        #expect(try plan("--fd 7 --shared-dir=/x").listener == .fd(7))
        #expect(try plan("--fd=3 --shared-dir /x").source == "/x")
        #expect(try plan("--fd=3 -o source=/y").source == "/y")
        #expect(try plan("--fd=3 -osource=/y").source == "/y")
        #expect(try plan("--fd=3 --source /z").source == "/z")
        #expect(try plan("--fd=3 --source=nfs://h/e").source == "nfs://h/e")
        // The same option again: the last one wins, as in virtiofsd.
        #expect(try plan("--fd=3 --shared-dir=/a --shared-dir=/b").source == "/b")
        #expect(try plan("--fd=3 -o source=/a -o source=/b").source == "/b")
    }

    @Test(arguments: [
        ("--cache=auto", CachePolicy.auto), ("--cache=always", .always), ("--cache=never", .never),
        ("--cache=metadata", .metadata), ("--cache always", .always), ("--cache=none", .never),
        ("-o cache=auto", .auto), ("-o cache=always", .always), ("-o cache=none", .never),
        ("-o cache=never", .never), ("-o cache=metadata", .metadata), ("-ocache=always", .always),
    ])
    func cache(option: String, expected: CachePolicy) throws {
        let p = try plan("\(base) \(option)")
        #expect(p.cache == expected)
        #expect(p.policy.cache == expected)
    }

    @Test func switches() throws {
        #expect(try plan("\(base) --xattr").xattr)
        #expect(try plan("\(base) -o xattr").xattr)
        #expect(try plan("\(base) -o xattr -o no_xattr").xattr == false)
        #expect(try plan("\(base) --xattr -o no_xattr").xattr == false)

        let acl = try plan("\(base) --posix-acl")
        #expect(acl.posixACL && acl.policy.posixACL && acl.policy.xattr)
        #expect(try plan("\(base) --posix-acl=always").posixACL)
        #expect(try plan("\(base) --posix-acl --posix-acl=never").posixACL == false)
        #expect(try plan("\(base) -o posix_acl").posixACL)
        #expect(try plan("\(base) -o posix_acl,no_posix_acl").posixACL == false)

        let ro = try plan("\(base) --readonly")
        #expect(ro.readonly && ro.policy.readOnly && ro.posixOptions.readOnly)

        #expect(try plan("\(base) --writeback").policy.writeback)
        #expect(try plan("\(base) -o writeback").writeback)
        #expect(try plan("\(base) -o writeback,no_writeback").writeback == false)

        #expect(try plan("\(base) --allow-direct-io").policy.allowDirectIO)
        #expect(try plan("\(base) -o allow_direct_io").allowDirectIO)
        #expect(try plan("\(base) -o allow_direct_io -o no_allow_direct_io").allowDirectIO == false)

        // Shared mmap of direct I/O files: Ferry's default, virtiofsd's --allow-mmap.
        #expect(try plan("\(base) --cache=never").policy.allowMmap)
        #expect(try plan("\(base) --cache=never --allow-mmap").policy.allowMmap)
        #expect(try plan("\(base) --cache=never --no-allow-mmap").policy.allowMmap == false)

        #expect(try plan("\(base) --announce-submounts").announceSubmounts)
        #expect(try plan("\(base) -o announce_submounts").announceSubmounts)
        #expect(try plan("\(base) --no-announce-submounts").policy.announceSubmounts == false)

        #expect(try plan("\(base) --no-readdirplus").policy.readdirplus == false)
        #expect(try plan("\(base) -o no_readdirplus").readdirplus == false)
        #expect(try plan("\(base) -o no_readdirplus,readdirplus").readdirplus)

        #expect(try plan("\(base) --syslog").syslog)
        #expect(try plan("\(base) -f") == plan(base))
        // KILLPRIV_V2 is offered unless turned off, as in virtiofsd.
        #expect(try plan(base).policy.killPrivV2)
        #expect(try plan("\(base) --killpriv-v2 -o killpriv_v2") == plan(base))
        #expect(try plan("\(base) --no-killpriv-v2").policy.killPrivV2 == false)
        #expect(try plan("\(base) -o no_killpriv_v2").policy.killPrivV2 == false)
        // Locks are off unless asked for, as in virtiofsd; the last word counts.
        #expect(try plan("\(base) -o no_flock,no_posix_lock") == plan(base))
        #expect(try plan(base).policy.posixLocks == false && plan(base).policy.flockLocks == false)
        #expect(try plan("\(base) -o posix_lock").policy.posixLocks)
        #expect(try plan("\(base) -o posix_lock").policy.flockLocks == false)
        #expect(try plan("\(base) -o flock").policy.flockLocks)
        #expect(try plan("\(base) -o posix_lock,flock -o no_posix_lock").policy.posixLocks == false)
    }

    @Test func valuedOptions() throws {
        #expect(try plan("\(base) --thread-pool-size=16").threadPoolSize == 16)
        #expect(try plan("\(base) --thread-pool-size 1").threadPoolSize == 1)
        #expect(try plan("\(base) --inode-file-handles=never").posixOptions.fileHandles == .never)
        #expect(try plan("\(base) --inode-file-handles=mandatory").inodeFileHandles == .mandatory)
        #expect(try plan("\(base) --inode-file-handles=fallback").inodeFileHandles == .prefer)
        #expect(try plan("\(base) --inode-file-handles prefer").inodeFileHandles == .prefer)
        #expect(try plan("\(base) --rlimit-nofile=4096").rlimitNofile == 4096)
        #expect(try plan("\(base) --rlimit-nofile 0").rlimitNofile == 0)
        #expect(try plan("\(base) --socket-group=kvm").socketGroup == "kvm")
        #expect(try plan("\(base) --socket-group kvm").socketGroup == "kvm")
        #expect(try plan(base).sandbox == .namespace && plan(base).seccomp == .kill, "sandboxed by default, as virtiofsd")
        #expect(try plan("\(base) --sandbox=none --seccomp=none").sandbox == .none)
        #expect(try plan("\(base) --sandbox none --seccomp none -o sandbox=none").seccomp == .none)
        #expect(try plan("\(base) --sandbox=none --sandbox=chroot").sandbox == .chroot)
        #expect(try plan("\(base) -o sandbox=chroot").sandbox == .chroot)
        #expect(try plan("\(base) --seccomp=trap").seccomp == .trap)
        #expect(try plan("\(base) --seccomp log").seccomp == .log)
    }

    @Test(arguments: [
        ("--log-level=error", Logger.Level?.some(.error)), ("--log-level=warn", .warning),
        ("--log-level=info", .info), ("--log-level=debug", .debug), ("--log-level trace", .trace),
        ("--log-level=off", nil), ("--log-level=DEBUG", .debug), ("-d", .debug), ("--debug", .debug),
        ("-o debug", .debug), ("-o loglevel=err", .error), ("-o log_level=warn", .warning),
        ("-o loglevel=debug", .debug), ("--log-level=off -d", .debug), ("-df", .debug),
    ])
    func logLevel(option: String, expected: Logger.Level?) throws {
        #expect(try plan("\(base) \(option)").logLevel == expected)
    }

    @Test func legacyOptionLists() throws {
        let p = try plan(["--fd=3", "-o", "source=/srv,cache=always,xattr,writeback,no_readdirplus", "-oannounce_submounts"])
        var expected = VirtiofsdPlan(listener: .fd(3), source: "/srv")
        expected.cache = .always
        expected.xattr = true
        expected.writeback = true
        expected.readdirplus = false
        #expect(p == expected)
        // libvirt doubles commas inside a path.
        #expect(try plan(["--fd=3", "-o", "source=/srv/a,,b,xattr"]).source == "/srv/a,b")
        #expect(VirtiofsdParser.splitOptionList("a,,b,c,,d,") == ["a,b", "c,d"])
        #expect(VirtiofsdParser.splitOptionList(",x,,") == ["x,"])
        #expect(try plan(["--fd=3", "-o", "source=/a=b"]).source == "/a=b")
    }

    // MARK: Command lines as the hypervisor managers write them

    @Test func libvirtLegacy() throws {
        let p = try plan("--fd=3 -o source=/srv,cache=always,xattr")
        var expected = VirtiofsdPlan(listener: .fd(3), source: "/srv")
        expected.cache = .always
        expected.xattr = true
        #expect(p == expected)
        // With flock/posix_lock off, a thread pool and -d, as libvirt also writes it.
        let q = try plan("--fd=3 -o source=/srv,cache=none,no_xattr,no_flock,no_posix_lock --thread-pool-size=16 -d")
        #expect(q.cache == .never && !q.xattr && q.threadPoolSize == 16 && q.logLevel == .debug)
    }

    @Test func libvirtSeparateOptions() throws {
        let p = try plan("--fd=3 --shared-dir=/srv --cache=always --xattr --thread-pool-size=16")
        var expected = VirtiofsdPlan(listener: .fd(3), source: "/srv")
        expected.cache = .always
        expected.xattr = true
        expected.threadPoolSize = 16
        #expect(p == expected)
        let q = try plan(["--fd=3", "--shared-dir", "/srv", "--cache=always", "--sandbox=none",
                          "--xattr", "--thread-pool-size=16", "--log-level", "debug", "--readonly"])
        #expect(q.readonly && q.logLevel == .debug && q.source == "/srv")
    }

    @Test func kata() throws {
        let p = try plan("--socket-path=/run/kata/vhost-fs.sock --shared-dir=/run/kata/shared --cache=auto --thread-pool-size=1 --announce-submounts")
        var expected = VirtiofsdPlan(listener: .socketPath("/run/kata/vhost-fs.sock"), source: "/run/kata/shared")
        expected.threadPoolSize = 1
        expected.announceSubmounts = true
        #expect(p == expected)
        // Kata's runtime with the Rust virtiofsd: syslog, inherited fd 3.
        let q = try plan("--syslog --cache=auto --shared-dir=/run/kata/shared --fd=3 --thread-pool-size=1 --announce-submounts")
        #expect(q.syslog && q.listener == .fd(3) && q.threadPoolSize == 1)
        // Kata with the C virtiofsd.
        let r = try plan("--syslog -f -o cache=auto -o no_posix_lock -o source=/run/kata/shared --fd=3 --thread-pool-size=1 -o announce_submounts")
        #expect(r.syslog && r.cache == .auto && r.source == "/run/kata/shared" && r.listener == .fd(3))
    }

    // MARK: What does not serve

    @Test func informationalInvocations() throws {
        #expect(try VirtiofsdPlan.parse(["--print-capabilities"]) == .printCapabilities)
        #expect(try VirtiofsdPlan.parse(["--print-capabilities", "--fd=3"]) == .printCapabilities)
        #expect(try VirtiofsdPlan.parse(["-V"]) == .version)
        #expect(try VirtiofsdPlan.parse(["--version"]) == .version)
        #expect(try VirtiofsdPlan.parse(["-h"]) == .help)
        #expect(try VirtiofsdPlan.parse(["--fd=3", "--help"]) == .help)
    }

    @Test func capabilitiesAreVirtiofsds() {
        #expect(virtiofsdCapabilitiesJSON
                == "{\n  \"type\": \"fs\",\n  \"features\": [\n    \"migrate-precopy\",\n    \"separate-options\"\n  ]\n}\n")
    }

    @Test func migrationOptionsAreVirtiofsds() throws {
        let base = "--socket-path=/s --shared-dir=/srv"
        #expect(try plan(base).migration == MigrationOptions())
        #expect(try plan(base).migration.mode == .findPaths && plan(base).migration.onError == .abort)
        let r = try plan("\(base) --migration-mode=file-handles --migration-on-error guest-error")
        #expect(r.migration == MigrationOptions(mode: .fileHandles, onError: .guestError))
        let checked = try plan("\(base) --migration-mode find-paths --migration-verify-handles --migration-confirm-paths")
        #expect(checked.migration == MigrationOptions(mode: .findPaths, verifyHandles: true, confirmPaths: true))
        #expect(failure("\(base) --migration-mode=by-inode") == "invalid value 'by-inode' for --migration-mode (expected find-paths or file-handles)")
        #expect(failure("\(base) --migration-on-error=ignore") == "invalid value 'ignore' for --migration-on-error (expected abort or guest-error)")
        #expect(failure("\(base) --migration-mode=file-handles --migration-verify-handles")
                == "--migration-verify-handles and --migration-confirm-paths apply to --migration-mode=find-paths only")
    }

    @Test func crossFieldErrors() {
        #expect(failure("--shared-dir=/srv") == "no vhost-user socket given: pass --socket-path=PATH or --fd=N")
        #expect(failure("--socket-path=/s") == "no export given: pass --shared-dir=DIR (or -o source=DIR, or --source SRC)")
        #expect(failure("--socket-path=/s --fd=3 --shared-dir=/srv") == "--socket-path and --fd are mutually exclusive; give one")
        #expect(failure("--fd=3 --shared-dir=/a -o source=/b") == "--shared-dir and -o source both name the export; give only one of --shared-dir, -o source and --source")
        #expect(failure("--fd=3 --source=/a --shared-dir=/b")?.hasPrefix("--source and --shared-dir both name the export") == true)
        #expect(failure("--fd=3 -o source=/a --source /b")?.hasPrefix("-o source and --source both name the export") == true)
        #expect(failure("--fd=3 --socket-group=kvm --shared-dir=/a") == "--socket-group applies to the socket Ferry creates; it cannot be used with --fd")
        #expect(failure([]) == "no export given: pass --shared-dir=DIR (or -o source=DIR, or --source SRC)")
    }

    @Test func malformedErrors() {
        #expect(failure("\(base) --frobnicate") == "unknown option '--frobnicate'")
        #expect(failure("\(base) -x") == "unknown option '-x'")
        #expect(failure("\(base) extra") == "unexpected argument 'extra' (virtiofsd takes only options)")
        #expect(failure("\(base) --socket-path") == "--socket-path needs a value")
        #expect(failure("\(base) -o") == "-o needs a value")
        #expect(failure("\(base) --xattr=yes") == "--xattr takes no value (got 'yes')")
        #expect(failure("\(base) --cache=sometimes") == "invalid value 'sometimes' for --cache (expected auto, always, never or metadata)")
        #expect(failure("\(base) -o cache=sometimes") == "invalid value 'sometimes' for -o cache (expected auto, always, never or metadata)")
        #expect(failure("\(base) --fd=x")?.hasPrefix("invalid value 'x' for --fd") == true)
        #expect(failure("\(base) --thread-pool-size=-1") == "invalid value '-1' for --thread-pool-size (expected 0 to 1024)")
        #expect(failure("\(base) --log-level=loud") == "invalid value 'loud' for --log-level (expected error, warn, info, debug, trace or off)")
        #expect(failure("\(base) --inode-file-handles=always") == "invalid value 'always' for --inode-file-handles (expected never, prefer or mandatory)")
        #expect(failure("\(base) --rlimit-nofile=lots")?.hasPrefix("invalid value 'lots' for --rlimit-nofile") == true)
        #expect(failure("\(base) --sandbox=jail") == "invalid value 'jail' for --sandbox (expected namespace, chroot or none)")
        #expect(failure("\(base) --seccomp=maybe") == "invalid value 'maybe' for --seccomp (expected none, log, trap or kill)")
        #expect(failure("\(base) --posix-acl=auto")?.hasPrefix("--posix-acl=auto is not supported") == true)
    }

    @Test func legacyErrors() {
        #expect(failure("\(base) -o bogus") == "unknown -o option 'bogus'")
        #expect(failure("\(base) -o xattr,bogus=1") == "unknown -o option 'bogus=1'")
        #expect(failure("\(base) -o timeout=5") == "-o timeout= is not supported: the timeouts follow the cache policy; use --cache=never|metadata|auto|always instead")
        #expect(failure("\(base) -o norace")?.hasPrefix("-o norace is not supported") == true)
        #expect(failure("\(base) -o security_label")?.hasPrefix("-o security_label is not supported") == true)
        #expect(failure("\(base) -o modcaps=+sys_admin")?.hasPrefix("-o modcaps= is not supported") == true)
        #expect(failure("\(base) -o xattrmap=:map::user.x.:")?.hasPrefix("-o xattrmap= is not supported") == true)
        #expect(failure("\(base) -o cache") == "-o cache needs a value (-o cache=...)")
        #expect(failure("\(base) -o loglevel=loud") == "invalid value 'loud' for -o loglevel (expected err, warn, info or debug)")
    }

    @Test func unimplementedOptionsFailOnlyWhenGiven() {
        for option in ["--tag=fs0", "--xattrmap=:ok:all:::", "--modcaps=+sys_admin", "--uid-map=:0:1000:1:",
                       "--translate-uid=guest:0:1000:1",
                       "--security-label", "--preserve-noatime"] {
            let name = option.split(separator: "=")[0]
            #expect(failure("\(base) \(option)")?.hasPrefix("\(name) is not supported: ") == true, "\(option)")
        }
        // Space-separated values of refused options are not mistaken for options.
        #expect(failure("\(base) --tag fs0")?.hasPrefix("--tag is not supported") == true)
    }

    // MARK: Process set-up, as pure functions

    @Test func openFileLimits() {
        // Default: raise the soft limit to min(1M, nr_open), growing the hard limit if needed.
        #expect(openFileLimit(requested: nil, soft: 1024, hard: 524_288, nrOpen: 1_048_576)! == (1_000_000, 1_000_000))
        #expect(openFileLimit(requested: nil, soft: 1024, hard: 2_000_000, nrOpen: 1_048_576)! == (1_000_000, 2_000_000))
        #expect(openFileLimit(requested: nil, soft: 1024, hard: 4096, nrOpen: 65_536)! == (65_536, 65_536))
        #expect(openFileLimit(requested: nil, soft: 1_048_576, hard: 1_048_576, nrOpen: 1_048_576) == nil)
        #expect(openFileLimit(requested: 0, soft: 1024, hard: 4096, nrOpen: 1_048_576) == nil)
        #expect(openFileLimit(requested: 2048, soft: 1024, hard: 4096, nrOpen: 1_048_576)! == (2048, 4096))
        #expect(openFileLimit(requested: 8192, soft: 1024, hard: 4096, nrOpen: 1_048_576)! == (8192, 8192))
    }

    @Test func socketGroups() throws {
        #expect(try resolveGroup("root") == 0)
        #expect(try resolveGroup("4242") == 4242)
        #expect(throws: CLIError.self) { try resolveGroup("no-such-group-ferry") }
        do {
            _ = try resolveGroup("no-such-group-ferry")
        } catch {
            #expect(error.description == "--socket-group: no group named 'no-such-group-ferry'")
        }
    }

    @Test func syslogLines() {
        #expect(SyslogLogHandler.format(label: "ferry.virtiofsd", message: "serving", metadata: [:]) == "ferry.virtiofsd: serving")
        #expect(SyslogLogHandler.format(label: "l", message: "m", metadata: ["b": "2", "a": "1"]) == "l: m a=1 b=2")
        #expect(SyslogLogHandler.priority(.error) == 3)
        #expect(SyslogLogHandler.priority(.warning) == 4)
        #expect(SyslogLogHandler.priority(.info) == 6)
        #expect(SyslogLogHandler.priority(.trace) == 7)
    }
}
