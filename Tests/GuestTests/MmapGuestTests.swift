import FerryTestSupport
import Foundation
import Testing

/// Shared mmap on an export served with `--cache=never` (files opened in direct I/O mode):
/// the 6.12 guest offers FUSE_DIRECT_IO_ALLOW_MMAP, and Ferry takes it unless told not to.
@Suite(.serialized, .requires(.root, .qemu))
struct MmapGuestTests {
    /// A 6.12 image of its own with scripts/guest/programs/mmap-shared.c in /opt/ferry/bin.
    static let image: Result<String, HarnessError> = {
        do {
            let program = try Guest.compileGuestProgram("mmap-shared")
            return Guest.buildImage(kernel: .linux6_12, directory: Guest.repo + "/.build/guest-mmap-6.12", extras: [program])
        } catch {
            return .failure(HarnessError("\(error)"))
        }
    }()

    static let command = "mmap-shared write /mnt/mapped && mmap-shared read /mnt/host.txt"

    func serve(_ extra: [String]) throws -> (export: String, daemon: Daemon) {
        let export = try makeTemporaryDirectory("ferry-guest-export")
        try "from the host\n".write(toFile: export + "/host.txt", atomically: false, encoding: .utf8)
        return (export, try Daemon.ferry(export: export, extra: ["--cache=never"] + extra))
    }

    @Test
    func sharedMmapReadsAndWritesInA612GuestWithCacheNever() async throws {
        try await GuestSlots.run(minutes: 10) {
            let (export, ferry) = try serve([])
            let run = try Guest.run(socket: ferry.socket, command: Self.command, timeout: 300,
                                    machine: .linux612, image: try Self.image.get())
            #expect(ferry.stop() == 0, "\(ferry.log)")
            #expect(run.status == 0, "\(run.output)")
            #expect(run.output.contains("mmap-shared: read from the host"), "\(run.output)")
            // What the guest wrote through its mapping reached the host file.
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: export + "/mapped")))
            #expect(bytes == [UInt8](repeating: UInt8(ascii: "a"), count: 4096) + [UInt8](repeating: UInt8(ascii: "B"), count: 4096))
        }
    }

    /// virtiofsd's default, kept behind --no-allow-mmap: the kernel refuses the mapping.
    @Test
    func withoutAllowMmapASharedMappingFailsWithENODEV() async throws {
        try await GuestSlots.run(minutes: 10) {
            let (_, ferry) = try serve(["--no-allow-mmap"])
            let run = try Guest.run(socket: ferry.socket, command: Self.command, timeout: 300,
                                    machine: .linux612, image: try Self.image.get())
            #expect(ferry.stop() == 0, "\(ferry.log)")
            #expect(run.status == 1, "\(run.output)")
            #expect(run.output.contains("mmap-shared: mmap MAP_SHARED read-write: No such device"), "\(run.output)")
        }
    }
}
