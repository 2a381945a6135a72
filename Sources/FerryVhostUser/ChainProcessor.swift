import FerryCore
import FerryFUSE
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Runs FUSE requests out of descriptor chains. One per worker thread: it owns the
/// request buffer, the reply scratch and every iovec array, all allocated once, so a
/// request allocates nothing.
final class ChainProcessor: ReplyDeferral {
    static let headerSize = FUSEInHeader.size
    static let writeHeaderSize = FUSEInHeader.size + FUSEWriteIn.size
    static let outHeaderSize = FUSEOutHeader.size
    static let writeOpcode = FUSEOpcode.write.rawValue

    let handler: any FUSERequestHandler
    let logger: Logger
    let chain: ChainBuffers
    let request: UnsafeMutableRawBufferPointer
    let scratch: UnsafeMutableRawBufferPointer
    /// The writable vectors after the reply header (READ data lands there).
    private let replyVectors: UnsafeMutablePointer<iovec>
    /// WRITE data: the readable vectors after the first 80 bytes.
    private let payloadVectors: UnsafeMutablePointer<iovec>
    /// The queue this processor serves (set once by its worker) and the head of the chain
    /// being processed (set before each `process`): where a deferred reply goes. No queue
    /// (tests): requests cannot be deferred.
    var queue: Virtqueue?
    var head: UInt16 = 0

    init(handler: any FUSERequestHandler, maxWrite: Int, maxChain: Int, logger: Logger) {
        self.handler = handler
        self.logger = logger
        chain = ChainBuffers(capacity: maxChain)
        // Anything but WRITE data is copied here: the largest is SETXATTR (64 KiB value + names).
        request = .allocate(byteCount: max(maxWrite, 64 * 1024) + 4096, alignment: 4096)
        scratch = .allocate(byteCount: max(maxWrite + 4096, FUSEServerLimits.minimumScratch), alignment: 4096)
        replyVectors = .allocate(capacity: maxChain)
        payloadVectors = .allocate(capacity: maxChain)
    }

    deinit {
        request.deallocate(); scratch.deallocate(); replyVectors.deallocate(); payloadVectors.deallocate()
    }

    /// A deferred reply keeps the chain out of the used ring; the queue's worker puts it
    /// there when the reply comes (`Virtqueue.complete`).
    func deferReply() -> (any DeferredReply)? {
        guard let queue else { return nil }
        let unique = UInt64(littleEndian: request.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        queue.deferredHeads.withLock { $0[head] = unique }
        return DeferredChainReply(queue: queue, head: head, generation: queue.generation.load(ordering: .acquiring))
    }

    /// Handles the request in `chain` (already walked); returns the used length, nil when
    /// the reply was deferred (the chain is not used yet).
    func process(queue: Int) -> UInt32? {
        let readable = chain.readable, writable = chain.writable
        let readableBytes = chain.readableBytes, writableBytes = chain.writableBytes
        guard readableBytes >= Self.headerSize else {
            logger.warning("request shorter than a FUSE header; dropped", metadata: ["queue": "\(queue)", "bytes": "\(readableBytes)"])
            return 0
        }
        let header = UnsafeMutableRawBufferPointer(rebasing: request[0..<Self.headerSize])
        _ = IOVectors(base: readable.base, count: readable.count).copyOut(into: header)
        let opcode = UInt32(littleEndian: request.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        let unique = UInt64(littleEndian: request.loadUnaligned(fromByteOffset: 8, as: UInt64.self))

        let replyCount = writable.sliced(skipping: Self.outHeaderSize, into: replyVectors)
        var area = ReplyArea(scratch: scratch, readVectors: IOVectors(base: replyVectors, count: replyCount),
                             deferral: queue == nil ? nil : self)
        let disposition: ReplyDisposition
        if opcode == Self.writeOpcode && readableBytes > Self.writeHeaderSize {
            let head = UnsafeMutableRawBufferPointer(rebasing: request[0..<Self.writeHeaderSize])
            _ = IOVectors(base: readable.base, count: readable.count).copyOut(into: head)
            let n = readable.sliced(skipping: Self.writeHeaderSize, into: payloadVectors)
            disposition = handler.handle(request: UnsafeRawBufferPointer(head), payload: IOVectors(base: payloadVectors, count: n), reply: &area)
        } else if readableBytes <= request.count {
            let whole = UnsafeMutableRawBufferPointer(rebasing: request[0..<readableBytes])
            _ = IOVectors(base: readable.base, count: readable.count).copyOut(into: whole)
            disposition = handler.handle(request: UnsafeRawBufferPointer(whole), reply: &area)
        } else {
            logger.warning("request larger than the request buffer; answered EINVAL",
                           metadata: ["queue": "\(queue)", "bytes": "\(readableBytes)", "opcode": "\(opcode)"])
            scratch.storeBytes(of: UInt32(Self.outHeaderSize).littleEndian, toByteOffset: 0, as: UInt32.self)
            scratch.storeBytes(of: Int32(-EINVAL).littleEndian, toByteOffset: 4, as: Int32.self)
            scratch.storeBytes(of: unique.littleEndian, toByteOffset: 8, as: UInt64.self)
            disposition = .inline(length: Self.outHeaderSize)
        }

        let out = IOVectors(base: writable.base, count: writable.count)
        switch disposition {
        case .none:
            return 0
        case .deferred:
            return nil
        case .inline(let length):
            guard length <= writableBytes else {
                logger.warning("reply does not fit the guest's buffers; dropped",
                               metadata: ["queue": "\(queue)", "reply": "\(length)", "room": "\(writableBytes)", "opcode": "\(opcode)"])
                return 0
            }
            out.copyIn(UnsafeRawBufferPointer(rebasing: scratch[0..<length]))
            return UInt32(length)
        case .data(let dataLength):
            let total = Self.outHeaderSize + dataLength
            guard writableBytes >= Self.outHeaderSize, total <= writableBytes else {
                logger.warning("reply does not fit the guest's buffers; dropped",
                               metadata: ["queue": "\(queue)", "reply": "\(total)", "room": "\(writableBytes)", "opcode": "\(opcode)"])
                return 0
            }
            out.copyIn(UnsafeRawBufferPointer(rebasing: scratch[0..<Self.outHeaderSize]))
            return UInt32(total)
        }
    }
}
