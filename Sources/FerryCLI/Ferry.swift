import ArgumentParser
import FerryDaemon
#if canImport(Glibc)
import Glibc
#endif

/// `ferry`: the file server's one executable. The executable target only calls
/// `ferryMain()`; the commands live in this library so tests can drive them.
public struct Ferry: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "ferry",
        abstract: "Serve file systems to virtual machines (virtio-fs) and host mounts (FUSE).",
        version: ferryVersion,
        subcommands: [
            ServeCommand.self, ReloadCommand.self, ExportsCommand.self, CheckConfigCommand.self, SeccompProfileCommand.self,
            MountCommand.self, VirtiofsdCommand.self, FormatCommand.self, FsckCommand.self, BenchCommand.self,
        ]
    )

    public init() {}
}

let ferryVersion = "0.1.0"

/// The executable's entry point. Invoked through a link named `virtiofsd` (or
/// `ferry-virtiofsd`), it is `ferry virtiofsd` with all its arguments; `ferry virtiofsd ...`
/// also bypasses ArgumentParser so virtiofsd's own `-h`, `-V` and `-o` forms work.
public func ferryMain() -> Never {
    let arguments = CommandLine.arguments
    let invokedAs = arguments.first.map { $0.split(separator: "/").last.map(String.init) ?? $0 } ?? ""
    if virtiofsdLinkNames.contains(invokedAs) {
        exit(runVirtiofsd(Array(arguments.dropFirst())))
    }
    if arguments.count >= 2, arguments[1] == VirtiofsdCommand.configuration.commandName {
        exit(runVirtiofsd(Array(arguments.dropFirst(2))))
    }
    Ferry.main()
    exit(0)
}
