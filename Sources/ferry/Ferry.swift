import ArgumentParser

/// `ferry`: the file server's one executable.
@main
struct Ferry: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ferry",
        abstract: "Serve file systems to virtual machines (virtio-fs) and host mounts (FUSE).",
        version: ferryVersion,
        subcommands: [MountCommand.self]
    )
}

let ferryVersion = "0.1.0"
