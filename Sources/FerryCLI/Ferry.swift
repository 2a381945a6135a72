import ArgumentParser

/// `ferry`: the file server's one executable. The executable target only calls
/// `Ferry.main()`; the commands live in this library so tests can drive them.
public struct Ferry: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "ferry",
        abstract: "Serve file systems to virtual machines (virtio-fs) and host mounts (FUSE).",
        version: ferryVersion,
        subcommands: [MountCommand.self, BenchCommand.self]
    )

    public init() {}
}

let ferryVersion = "0.1.0"
