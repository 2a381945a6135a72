import ArgumentParser
import FerryDaemon
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `ferry virtiofsd [OPTIONS]`: a drop-in replacement for virtiofsd's command line. Also what
/// the executable does when it is invoked through a link named `virtiofsd` (see `ferryMain`).
///
/// The options are virtiofsd's, not ArgumentParser's (legacy `-o a,b=c` lists, `-oopt`,
/// bundled short flags), so this command takes its arguments raw and parses them itself
/// with `VirtiofsdPlan.parse`.
struct VirtiofsdCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "virtiofsd",
        abstract: "Serve a directory to a VM as a vhost-user-fs device, with virtiofsd's command line.",
        discussion: "Run `ferry virtiofsd --help` for its options. A link named `virtiofsd` to the ferry executable behaves the same.",
        helpNames: []
    )

    @Argument(parsing: .captureForPassthrough, help: "virtiofsd options.")
    var arguments: [String] = []

    init() {}

    func run() throws {
        let status = runVirtiofsd(arguments)
        if status != 0 { throw ExitCode(status) }
    }
}

/// Names the executable answers to as virtiofsd when invoked through a link.
let virtiofsdLinkNames: Set<String> = ["virtiofsd", "ferry-virtiofsd"]

let virtiofsdVersionLine = "virtiofsd (ferry) \(ferryVersion)"

let virtiofsdUsage = "Usage: virtiofsd --shared-dir=DIR --socket-path=PATH [OPTIONS]   (or ferry virtiofsd ...)"

/// Runs a virtiofsd command line to the end; returns the exit status: 0, 1 when serving
/// failed, 2 for a command line that cannot be honoured.
func runVirtiofsd(_ arguments: [String]) -> Int32 {
    let invocation: VirtiofsdInvocation
    do {
        invocation = try VirtiofsdPlan.parse(arguments)
    } catch {
        writeStandardError("Error: \(error)\n\(virtiofsdUsage)\nSee 'virtiofsd --help'.\n")
        return 2
    }
    switch invocation {
    case .help:
        print(virtiofsdHelp, terminator: "")
    case .version:
        print(virtiofsdVersionLine)
    case .printCapabilities:
        print(virtiofsdCapabilitiesJSON, terminator: "")
    case .serve(let plan):
        do {
            try serveVirtiofsd(plan)
        } catch {
            writeStandardError("Error: \(error)\n")
            return 1
        }
    }
    fflush(nil)
    return 0
}

/// Standard output first (what was printed before stays before), then `text` on standard error.
func writeStandardError(_ text: String) {
    fflush(nil)
    FileHandle.standardError.write(Data(text.utf8))
}

let virtiofsdHelp = """
    Ferry as virtiofsd: serve a directory to a virtual machine as a vhost-user-fs device.

    \(virtiofsdUsage)

    Socket (exactly one):
      --socket-path=PATH          Create the vhost-user socket at PATH (--socket is a deprecated alias)
      --fd=N                      Use the listening socket inherited as file descriptor N
      --socket-group=GROUP        Group owning the socket (not with --fd)

    Export (exactly one):
      --shared-dir=DIR            Directory to share (legacy: -o source=DIR)
      --source=SRC                Any source `ferry mount` takes

    Export policy:
      --cache=auto|always|never|metadata   Caching policy (default auto; legacy -o cache=..., none = never)
      --xattr                     Serve extended attributes (legacy -o xattr / -o no_xattr)
      --posix-acl                 Negotiate POSIX ACLs, implies --xattr (legacy -o posix_acl)
      --readonly                  Refuse every change with EROFS
      --writeback                 Enable the writeback cache (legacy -o writeback / -o no_writeback)
      --allow-direct-io           Honour O_DIRECT from guest applications (legacy -o allow_direct_io)
      --allow-mmap                Let the guest map files MAP_SHARED with --cache=never or metadata
                                  (FUSE_DIRECT_IO_ALLOW_MMAP, Linux 6.6+ guests); Ferry's default
      --no-allow-mmap             Do not: shared mmap of those files fails with ENODEV (virtiofsd's default)
      --announce-submounts        Tell the guest which directories are mount points (default)
      --no-announce-submounts     Do not
      --no-readdirplus            Disable READDIRPLUS (legacy -o no_readdirplus)
      --killpriv-v2               Offer FUSE_HANDLE_KILLPRIV_V2: the server clears setuid/setgid on
                                  write, chown and truncation (default; legacy -o killpriv_v2)
      --no-killpriv-v2            Do not: the guest kernel clears them (legacy -o no_killpriv_v2)
      --inode-file-handles=never|prefer|mandatory   Hold inodes by file handle (default prefer)

    Live migration (docs/migration.md; the directory must be the same on both hosts):
      --migration-mode=find-paths|file-handles   Find open files on the destination by path
                                  (default) or by file handle (same file system, CAP_DAC_READ_SEARCH)
      --migration-on-error=abort|guest-error     A file the destination cannot find fails the
                                  migration (default) or answers EIO to the guest
      --migration-verify-handles  find-paths: refuse a path that now leads to another file
      --migration-confirm-paths   find-paths: re-check every path at switch-over on the source

    Process:
      --thread-pool-size=N        Request worker threads per queue; 0 serves on the queue threads
                                  (default for a directory; nfs:// gets one per connection, rados:// 8)
      --rlimit-nofile=N           Open file limit; 0 leaves it (default: raised to min(1000000, fs.nr_open))
      --log-level=LEVEL           error, warn, info (default), debug, trace or off
      -d, --debug                 Same as --log-level=debug (legacy; also -o debug, -o loglevel=LEVEL)
      --syslog                    Log to syslog instead of standard error
      --sandbox=namespace|chroot|none   Confinement (default namespace: namespaces and pivot_root)
      --seccomp=kill|log|trap|none      System calls outside the allowlist (default kill)
      -f                          Foreground (Ferry always runs in the foreground)
      --print-capabilities        Print the vhost-user backend capabilities (JSON) and exit
      -V, --version               Print the version and exit
      -h, --help                  Print this help and exit

    Legacy -o lists are comma separated (-o source=/srv,cache=always,xattr or -osource=/srv) and
    may repeat; a doubled comma is a comma inside a value. -o posix_lock and -o flock serve the
    guest's fcntl and flock locks on the host, shared with every other client of the export
    (off by default, as in virtiofsd; -o no_posix_lock, -o no_flock). Options Ferry cannot
    honour (-o timeout=, --sandbox=namespace, --xattrmap, ...) fail with a message.
    Unlike virtiofsd, Ferry keeps listening for the next front-end when one disconnects; stop
    it with SIGTERM, SIGINT or SIGHUP.

    """
