@testable import FerryCLI
import FerryDevFUSE
import Testing

/// `ferry mount`'s io_uring options and how the queue count is read from the kernel's CPU list.
@Suite struct URingOptionTests {
    @Test(arguments: [("0-1\n", 2), ("0", 1), ("0-3,8-11\n", 8), ("0,2,4-5", 4)])
    func possibleCPUListsAreCounted(_ list: String, _ count: Int) {
        #expect(URingSupport.cpuCount(inList: list) == count)
    }

    @Test(arguments: ["", "\n", "3-1", "a-b", "0-1-2"])
    func malformedCPUListsAreRefused(_ list: String) {
        #expect(URingSupport.cpuCount(inList: list) == nil)
    }

    @Test func theDefaultIsAuto() throws {
        let command = try MountCommand.parse(["/srv", "/mnt"])
        #expect(command.uring == .auto && command.uringQueues == nil && command.uringDepth == 4)
    }

    @Test func modesAndSizesParse() throws {
        let command = try MountCommand.parse(["--uring", "on", "--uring-queues", "1", "--uring-depth", "8", "/srv", "/mnt"])
        #expect(command.uring == .on && command.uringQueues == 1 && command.uringDepth == 8)
    }

    @Test(arguments: [["--uring", "maybe"], ["--uring-depth", "0"], ["--uring-depth", "65"], ["--uring-queues", "0"]])
    func badValuesAreRefused(_ arguments: [String]) {
        #expect(throws: (any Error).self) { try MountCommand.parse(arguments + ["/srv", "/mnt"]) }
    }
}
