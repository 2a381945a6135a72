import CNFS
import FerryCore

// Write-behind, as the kernel's NFS client does: an UNSTABLE WRITE is answered once its
// calls are on the socket and its data copied into retained memory, without waiting for
// the server. The copy is kept either way (to send again should the server restart before
// COMMIT), so nothing is held that a synchronous WRITE would not hold. The replies are taken
// in later, oldest first, by `drainWritesBehind`: before FSYNC, FLUSH and RELEASE commit,
// before a READ, GETATTR, SETATTR or LOOKUP of the file, before a WRITE that overlaps one
// still unanswered, and whenever a file has more than `writeBehindLimit` bytes unanswered.
// A failure (the server's error, or no answer within the export's timeout) is kept for the
// file: WRITEs fail with it, and the next FSYNC or FLUSH returns it. A connection that broke
// with the calls outstanding is made again and the data sent again from the copy.

/// The replies to one WRITE's calls, one per piece, filled in by the calls' callbacks under
/// the lock of the connection they were sent on (whoever services it then), read by the
/// request or drain that holds that lock afterwards.
/// @unchecked Sendable: `pieces` is touched only under the lock of the connection the calls went out on.
final class WriteReplies: @unchecked Sendable {
    var pieces: [NFSDriver.SentPiece]

    init(count: Int, piece: Int) {
        pieces = stride(from: 0, to: count, by: piece).map { start in
            NFSDriver.SentPiece(start: start, length: min(piece, count - start), result: .failure(.io))
        }
    }
}

/// A WRITE answered before the server answered it: its calls are outstanding on
/// `connection`, and `space` (a reservation in its file's retained memory) holds a copy of
/// its data until the replies are taken in.
/// @unchecked Sendable: immutable; its `calls` and `space` are used only under `connection`'s lock or
/// `file`'s write-behind lock, by whoever takes the replies in.
final class BehindWrite: @unchecked Sendable {
    let file: NFSFile
    let connection: NFSConnection
    let calls: [PendingCall]
    let replies: WriteReplies
    let space: RetainSpace
    let offset: UInt64
    let caller: Credentials

    init(file: NFSFile, connection: NFSConnection, calls: [PendingCall], replies: WriteReplies, space: RetainSpace,
         offset: UInt64, caller: Credentials) {
        self.file = file; self.connection = connection; self.calls = calls; self.replies = replies
        self.space = space; self.offset = offset; self.caller = caller
    }

    var range: Range<UInt64> { offset..<offset + UInt64(space.count) }
}

/// A file's writes behind, oldest first.
struct WritesBehind {
    private(set) var queue: [BehindWrite] = []
    /// Bytes in `queue`.
    private(set) var bytes = 0

    mutating func append(_ write: BehindWrite) {
        queue.append(write)
        bytes += write.space.count
    }

    mutating func removeFirst() {
        bytes -= queue.removeFirst().space.count
    }

    func overlaps(_ range: Range<UInt64>) -> Bool { queue.contains { $0.range.overlaps(range) } }
}

extension NFSDriver {
    /// Sends an UNSTABLE WRITE of `data` at `offset` and returns once its calls are written
    /// to the socket and `whileInFlight` has copied the data into `space` (which the write
    /// behind then owns), without waiting for the replies.
    func sendBehind(_ file: NFSFile, _ data: UnsafeRawBufferPointer, at offset: UInt64, space: RetainSpace,
                    _ caller: Credentials, whileInFlight: () -> Void) throws(Errno) {
        let handle = file.inode.handle
        var copied = false
        let write = try client.perform(caller) { connection, deadline throws(ConnectionFailure) -> BehindWrite in
            let replies = WriteReplies(count: data.count, piece: writeMax)
            let calls = try queueWrites(handle, data, at: offset, stable: UNSTABLE, into: replies, on: connection)
            try connection.pushOut(calls)
            if !copied { whileInFlight(); copied = true }
            try connection.flushOut(calls, deadline: deadline)
            return BehindWrite(file: file, connection: connection, calls: calls, replies: replies, space: space,
                               offset: offset, caller: caller)
        }
        file.inode.writesBehind.withLock { $0.append(write) }
        writesBehind.wrappingAdd(1, ordering: .relaxed)
    }

    /// Before a WRITE of `range`: waits for a write behind that overlaps it (the server may
    /// apply WRITEs on different connections in any order), and for the oldest ones until
    /// the new one fits within `writeBehindLimit`.
    func makeRoomBehind(_ inode: NFSInode, for range: Range<UInt64>) {
        let (bytes, overlapping) = inode.writesBehind.withLock { ($0.bytes, $0.overlaps(range)) }
        if bytes == 0 { return }
        drainWritesBehind(inode, keeping: overlapping ? 0 : writeBehindLimit - range.count)
    }

    /// Takes in the replies of the writes behind of `inode`, oldest first, until no more
    /// than `keeping` bytes are unanswered.
    func drainWritesBehind(_ inode: NFSInode, keeping: Int = 0) {
        if inode.writesBehind.withLock({ $0.bytes <= keeping }) { return }
        inode.drainingBehind.withLock { _ in
            while let write = inode.writesBehind.withLock({ $0.bytes > keeping ? $0.queue.first : nil }) {
                takeIn(write)
                // Before the write leaves the queue: whoever then finds it gone finds the clock moved.
                inode.lastTakenIn.store(takeInClock.add(1, ordering: .sequentiallyConsistent).newValue, ordering: .sequentiallyConsistent)
                inode.writesBehind.withLock { $0.removeFirst() }
            }
        }
    }

    /// Waits for one write behind's replies and does what a synchronous WRITE does with them:
    /// keeps what the server took UNSTABLE until a COMMIT. If its connection broke, the data
    /// is sent again from the copy (on a new connection if need be); a failure is kept for the file.
    private func takeIn(_ write: BehindWrite) {
        let file = write.file
        defer { file.uncommitted.withLock { $0.finish(write.space, pool: retainPool) } }
        let connection = write.connection
        let deadline = client.newDeadline
        var failure: Errno?
        var pieces: [SentPiece]?
        if connection.lock(until: deadline) {
            do throws(ConnectionFailure) {
                try connection.wait(for: write.calls, deadline: deadline)
                // Calls cancelled by an earlier drop of the connection were finished before the wait.
                if write.calls.allSatisfy({ $0.status == RPC_STATUS_SUCCESS }) { pieces = write.replies.pieces }
            } catch {
                if case .timedOut = error { failure = .io; client.timeouts.add(1, ordering: .relaxed) }
            }
            connection.unlock()
        } else {
            failure = .io
            client.timeouts.add(1, ordering: .relaxed)
        }
        if pieces == nil && failure == nil {
            client.callsRetried.add(1, ordering: .relaxed)
            do throws(Errno) {
                pieces = try send(file, UnsafeRawBufferPointer(write.space.bytes), at: write.offset, stable: UNSTABLE, write.caller).pieces
            } catch {
                failure = error
            }
        }
        if let pieces {
            let took = taken(pieces)
            _ = keepUnstable(file, write.space, pieces[..<took.counted], offset: write.offset)
            if took.written < write.space.count { failure = took.error ?? .io }
        }
        guard let failure else { return }
        logger.warning("NFS write-behind WRITE of \(write.space.count) bytes at \(write.offset) failed: \(failure)")
        file.writeError.withLock { if $0 == nil { $0 = failure } }
    }
}
