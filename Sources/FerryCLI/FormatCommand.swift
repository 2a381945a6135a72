import ArgumentParser
import FerryDaemon
import FerryRADOS
import FerryRADOSBackend

/// `ferry format rados://POOL[/NAMESPACE]`: an empty file system in an empty pool namespace.
struct FormatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "format",
        abstract: "Create an empty file system in a RADOS pool (rados://POOL[/NAMESPACE]).",
        discussion: "Refuses a namespace that already holds one. The layout is docs/backends/rados.md."
    )

    @Argument(help: "rados://POOL[/NAMESPACE]")
    var source: String

    @OptionGroup var ceph: CephOptions

    @Option(help: "Bytes per data object (a power of two, 64 KiB to 64 MiB).")
    var blockSize: Int = 4 << 20

    @Option(help: "Omap objects per directory (1 to 256).")
    var directoryShards: Int = 16

    func validate() throws {
        guard blockSize >= 65536, blockSize <= 64 << 20, blockSize & (blockSize - 1) == 0 else {
            throw ValidationError("--block-size must be a power of two from 65536 to 67108864")
        }
        guard (1...256).contains(directoryShards) else { throw ValidationError("--directory-shards must be 1 to 256") }
    }

    func run() throws {
        let rados = try RADOSSource(parsing: source, ceph: ceph.access)
        do {
            let pool = try RADOSPool(rados.target)
            try RADOSFormat.format(pool, blockSize: blockSize, shards: directoryShards)
        } catch {
            throw CLIError("format \(rados): \(error)")
        }
        print("formatted \(rados): block size \(blockSize), \(directoryShards) shards per directory")
    }
}
