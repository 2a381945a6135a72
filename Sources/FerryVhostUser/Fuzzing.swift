import FerryCore
import FerryVirtio
import Logging

/// Entry points for the fuzz targets (Sources/FerryFuzz), which drive the device's own
/// parsing code with arbitrary bytes. Not API: reachable only with `@_spi(Fuzzing)`.
@_spi(Fuzzing) public enum VhostUserFuzzing {
    static let memorySize = 64 * 1024
    static let guestBase: UInt64 = 0x1_0000
    static let queueSize: UInt16 = 16

    /// `input` laid out as 64 KiB of guest memory at guest-physical 0x10000 with a 16-entry
    /// split virtqueue at its start (descriptors, then the avail ring, then the used ring),
    /// every head the avail ring offers walked as the queue thread walks it. Answers how
    /// many chains were well formed.
    public static func walkChains(_ input: UnsafeRawBufferPointer) -> Int {
        let host = UnsafeMutableRawPointer.allocate(byteCount: memorySize, alignment: 4096)
        defer { host.deallocate() }
        host.initializeMemory(as: UInt8.self, repeating: 0, count: memorySize)
        host.copyMemory(from: input.baseAddress ?? UnsafeRawPointer(host), byteCount: min(input.count, memorySize))
        let region = MappedRegion(unmanaged: host, description: MemoryRegionDescription(
            guestPhysicalAddress: guestBase, size: UInt64(memorySize), userAddress: guestBase, mmapOffset: 0))
        let memory = GuestMemory(regions: [region])
        let n = Int(queueSize)
        let availableOffset = SplitVirtqueue.descriptorTableBytes(size: n)
        let usedOffset = (availableOffset + SplitVirtqueue.availableRingBytes(size: n) + 3) & ~3
        let ring = RingView(size: queueSize, descriptors: host, available: host + availableOffset, used: host + usedOffset)
        let chain = ChainBuffers(capacity: 256)
        var good = 0
        let offered = min(Int(ring.availableIndex), 4 * n)
        for i in 0..<offered {
            do {
                try DescriptorChain.walk(head: ring.availableHead(at: UInt16(i)), ring: ring, memory: memory,
                                         indirectAllowed: true, into: chain)
                good += 1
            } catch {
                continue
            }
        }
        return good
    }

    /// `input` read as a stream of vhost-user messages (header, then payload), each handed
    /// to a fresh device without descriptors, as the socket loop does. Answers how many were
    /// handled before the device closed the connection (or the input ran out).
    public static func handleMessages(_ input: UnsafeRawBufferPointer, handler: any FUSERequestHandler) -> Int {
        var logger = Logger(label: "ferry.fuzz")
        logger.logLevel = .critical
        let device = VhostUserFSDevice(handler: handler, options: VhostUserFSOptions(maxRequestQueues: 2, maxQueueSize: 64), logger: logger)
        defer { device.reset(notifyHandler: false) }
        var offset = 0
        var handled = 0
        while input.count - offset >= VhostUserHeader.size {
            guard let header = VhostUserHeader.decode(UnsafeRawBufferPointer(rebasing: input[offset..<(offset + VhostUserHeader.size)])) else { break }
            offset += VhostUserHeader.size
            // The socket loop refuses these before the device sees them.
            guard header.flags & VhostUserHeader.versionMask == VhostUserHeader.version,
                  header.size <= UInt32(VhostUserHeader.maximumPayload) else { break }
            let size = min(Int(header.size), input.count - offset)
            var fds: [Int32] = []
            let reply = device.handle(request: header.request, flags: header.flags,
                                      payload: UnsafeRawBufferPointer(rebasing: input[offset..<(offset + size)]), fds: &fds)
            offset += size
            handled += 1
            if case .close = reply { break }
        }
        return handled
    }
}
