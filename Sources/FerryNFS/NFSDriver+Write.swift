#if canImport(Glibc)
import Glibc
#endif
import CNFS
import FerryCore

// WRITE and COMMIT. WRITEs go out UNSTABLE (the server may keep them in memory) and a copy
// is kept (RetainedWrites.swift) until a COMMIT whose verifier matches theirs. FLUSH (close),
// FSYNC and RELEASE commit, and so does a WRITE once enough is uncommitted ("COMMIT-behind",
// sent along with that WRITE), which keeps the retained memory small and recycled. If the
// verifier changed, the server restarted and may have lost those writes: they are sent again
// FILE_SYNC before anything is forgotten. Nothing acknowledged by FSYNC is lost.
extension NFSDriver {
    public func write(_ file: NFSFile, offset: UInt64, from buffers: IOVectors, killSuidGid: Bool, _ caller: Credentials) throws(Errno) -> Int {
        let total = buffers.totalLength
        if total == 0 { return 0 }
        if let error = file.writeError.withLock({ $0 }) { throw error }
        let stable = file.synchronous ? FILE_SYNC : UNSTABLE
        makeRoomBehind(file.inode, for: offset..<offset + UInt64(total))
        // Contiguous data is sent from where it is and copied to retained memory while the WRITE
        // is in flight; scattered data is copied first and sent from the copy (a WRITE needs
        // contiguous bytes). Either way one copy, into memory that is recycled, never fresh.
        let contiguous = buffers.count == 1 ? UnsafeRawBufferPointer(start: buffers.base[0].iov_base, count: total) : nil
        var space = stable == UNSTABLE || contiguous == nil ? file.uncommitted.withLock { $0.reserve(total, from: retainPool) } : nil
        var late: RetainSpace?
        func finish(_ reserved: RetainSpace?) {
            if let reserved { file.uncommitted.withLock { $0.finish(reserved, pool: retainPool) } }
        }
        defer { finish(space); finish(late) }
        if contiguous == nil { buffers.copyOut(into: space!.bytes) }
        let source = contiguous ?? UnsafeRawBufferPointer(space!.bytes)
        func copyWhileInFlight() {
            if let contiguous, let space { space.bytes.copyMemory(from: contiguous) }
        }

        let behind = stable == UNSTABLE ? file.uncommitted.withLock { $0.bytes >= commitBehind ? $0.newest : nil } : nil
        // Write-behind unless this WRITE commits behind or must clear set-id bits (it needs the reply's mode).
        if let reserved = space, stable == UNSTABLE, behind == nil, !killSuidGid, writeBehindLimit > 0 {
            try sendBehind(file, source, at: offset, space: reserved, caller, whileInFlight: copyWhileInFlight)
            space = nil   // the write behind holds the reservation now
            return total
        }
        var sent: [SentPiece]? = nil
        if let behind {
            // Only one COMMIT of a file settles at a time; if another is under way, this WRITE goes alone.
            sent = try file.committing.withLockIfAvailable { _ throws(Errno) -> [SentPiece] in
                let (pieces, committed) = try send(file, source, at: offset, stable: stable, caller, commit: true, whileInFlight: copyWhileInFlight)
                commitsBehind.wrappingAdd(1, ordering: .relaxed)
                do throws(Errno) {
                    try settle(file, through: behind, committed: committed!.get(), caller)
                } catch {
                    // Still retained: the next COMMIT (at the latest FSYNC's or close's) tries again.
                    logger.debug("NFS COMMIT-behind did not settle: \(error)")
                }
                return pieces
            }
        }
        if sent == nil { sent = try send(file, source, at: offset, stable: stable, caller, whileInFlight: copyWhileInFlight).pieces }
        let pieces = sent!

        let took = taken(pieces)
        if took.written == 0, let error = took.error { throw error }
        if took.unstable {
            // A server may answer less stable than asked (FILE_SYNC, sent without a copy): keep one then too.
            let kept = space ?? file.uncommitted.withLock { u in
                let reserved = u.reserve(total, from: retainPool)
                late = reserved
                return reserved
            }
            if space == nil { buffers.copyOut(into: kept.bytes) }
            let pending = keepUnstable(file, kept, pieces[..<took.counted], offset: offset)
            // COMMIT-behind cannot keep up (a COMMIT failing, or always busy): commit now.
            if pending > uncommittedLimit { try commit(file, caller) }
        }
        if killSuidGid {
            let handle = file.inode.handle
            _ = try clearSetID(handle, try attributesOrFetch(took.after, handle, caller), caller)
        }
        return took.written
    }

    struct WriteReply { var count: Int; var committed: stable_how; var verifier: UInt64; var after: Attributes? }
    struct SentPiece { var start: Int; var length: Int; var result: Result<WriteReply, Errno> }

    /// What the server took of a WRITE's pieces: those up to the first error or short
    /// piece (`error` is that error, nil when all were taken or one was short).
    func taken(_ pieces: [SentPiece]) -> (written: Int, counted: Int, unstable: Bool, after: Attributes?, error: Errno?) {
        var written = 0, counted = 0, unstable = false
        var after: Attributes?
        for piece in pieces {
            switch piece.result {
            case .failure(let error):
                return (written, counted, unstable, after, error)
            case .success(let reply):
                written += reply.count
                after = reply.after ?? after
                counted += 1
                unstable = unstable || reply.committed == UNSTABLE
                if reply.count < piece.length { return (written, counted, unstable, after, nil) }
            }
        }
        return (written, counted, unstable, after, nil)
    }

    /// Keeps the pieces the server took UNSTABLE (their bytes at their place in `space`, a
    /// copy of the data written at `offset`) until a COMMIT; returns the file's uncommitted bytes.
    func keepUnstable(_ file: NFSFile, _ space: RetainSpace, _ pieces: ArraySlice<SentPiece>, offset: UInt64) -> Int {
        file.uncommitted.withLock { u -> Int in
            for piece in pieces {
                guard case .success(let reply) = piece.result, reply.committed == UNSTABLE else { continue }
                u.keep(space, at: piece.start, count: reply.count, offset: offset + UInt64(piece.start), verifier: reply.verifier)
            }
            return u.bytes
        }
    }

    /// WRITEs `data` at `offset` in pieces the server accepts, all in flight at once, and
    /// with `commit` a COMMIT of the file after them (its verifier is returned).
    /// `whileInFlight` runs once the calls are on their way, before their replies are awaited.
    func send(_ file: NFSFile, _ data: UnsafeRawBufferPointer, at offset: UInt64, stable: stable_how, _ caller: Credentials,
              commit: Bool = false, whileInFlight: () -> Void = {}) throws(Errno) -> (pieces: [SentPiece], committed: Result<UInt64, Errno>?) {
        let handle = file.inode.handle
        return try client.perform(caller) { connection, deadline throws(ConnectionFailure) -> ([SentPiece], Result<UInt64, Errno>?) in
            let replies = WriteReplies(count: data.count, piece: writeMax)
            var calls = try queueWrites(handle, data, at: offset, stable: stable, into: replies, on: connection)
            var committed: Result<UInt64, Errno>? = nil
            if commit { calls.append(try queueCommit(handle, on: connection) { committed = $0 }) }
            try connection.pushOut(calls)
            whileInFlight()
            try connection.wait(for: calls, deadline: deadline)
            return (replies.pieces, commit ? committed ?? .failure(.io) : nil)
        }
    }

    /// Queues the WRITE calls of `data` at `offset` on `connection`, one per piece the server
    /// accepts; their replies go to `replies` as they are taken in, by whoever services the
    /// connection then.
    func queueWrites(_ handle: FileHandle, _ data: UnsafeRawBufferPointer, at offset: UInt64, stable: stable_how,
                     into replies: WriteReplies, on connection: NFSConnection) throws(ConnectionFailure) -> [PendingCall] {
        var calls: [PendingCall] = []
        calls.reserveCapacity(replies.pieces.count + 1)
        for (i, piece) in replies.pieces.enumerated() {
            let (start, length) = (piece.start, piece.length)
            if v4 != nil {
                let pieceOffset = offset + UInt64(start)
                let piece = UnsafeRawBufferPointer(rebasing: data[start..<start + length])
                // The data is copied into the call's record here: `data` need not outlive the send.
                calls.append(try client.send4(on: connection, deadline: client.newDeadline, reserving: length + 1024, { c, _ in
                    c.putfh(handle)
                    c.write(offset: pieceOffset, stable: stable.rawValue, data: piece)
                    c.getattr(NFS4Attribute.forAttributes)
                }, decode: { r in
                    do throws(NFS4Error) {
                        try r.putfh()
                        let ok = try r.write()
                        let after = try? r.getattr().attributes
                        replies.pieces[i].result = .success(WriteReply(count: min(Int(ok.count), length), committed: stable_how(ok.committed),
                                                                       verifier: ok.verifier, after: after))
                    } catch {
                        replies.pieces[i].result = .failure(self.client.failure(error))
                    }
                }))
                continue
            }
            calls.append(try connection.send({ rpc, cb, token in
                handle.withNFS { fh in
                    var args = WRITE3args()
                    args.file = fh
                    args.offset = offset + UInt64(start)
                    args.count = count3(length)
                    args.stable = stable
                    args.data.data_len = u_int(length)
                    // Sound: libnfs copies the data into the call before returning.
                    args.data.data_val = UnsafeMutablePointer(mutating: (data.baseAddress! + start).assumingMemoryBound(to: CChar.self))
                    return rpc_nfs3_write_async(rpc, cb, &args, token)
                }
            }, onSuccess: { reply in
                let res = reply.assumingMemoryBound(to: WRITE3res.self).pointee
                guard res.status == NFS3_OK else { replies.pieces[i].result = .failure(self.client.failure(nfs3: res.status)); return }
                let ok = res.WRITE3res_u.resok
                replies.pieces[i].result = .success(WriteReply(count: min(Int(ok.count), length), committed: ok.committed,
                                                               verifier: verifier(ok.verf), after: attributes(ok.file_wcc.after)))
            }))
        }
        return calls
    }

    /// Queues a COMMIT of the whole file; `done` gets the verifier of the reply.
    func queueCommit(_ handle: FileHandle, on connection: NFSConnection,
                     _ done: @escaping (Result<UInt64, Errno>) -> Void) throws(ConnectionFailure) -> PendingCall {
        if v4 != nil {
            return try client.send4(on: connection, deadline: client.newDeadline, { c, _ in c.putfh(handle); c.commit() }, decode: { r in
                do throws(NFS4Error) {
                    try r.putfh()
                    done(.success(try r.commit()))
                } catch {
                    done(.failure(self.client.failure(error)))
                }
            })
        }
        return try connection.send({ rpc, cb, token in
            handle.withNFS { fh in
                var args = COMMIT3args(file: fh, offset: 0, count: 0)
                return rpc_nfs3_commit_async(rpc, cb, &args, token)
            }
        }, onSuccess: { reply in
            let res = reply.assumingMemoryBound(to: COMMIT3res.self).pointee
            done(res.status == NFS3_OK ? .success(verifier(res.COMMIT3res_u.resok.verf)) : .failure(self.client.failure(nfs3: res.status)))
        })
    }

    public func flush(_ file: NFSFile, lockOwner: UInt64, _ caller: Credentials) throws(Errno) {
        dropLocks(file, owner: lockOwner, caller)
        try sync(file, caller)
    }

    public func fsync(_ file: NFSFile, dataOnly: Bool, _ caller: Credentials) throws(Errno) {
        try sync(file, caller)
    }

    /// FSYNC, FLUSH and RELEASE: waits for the file's writes behind, COMMITs, and returns a
    /// write-behind failure (once: it is forgotten when returned).
    func sync(_ file: NFSFile, _ caller: Credentials) throws(Errno) {
        drainWritesBehind(file.inode)
        var failed: Errno?
        do throws(Errno) { try commit(file, caller) } catch { failed = error }
        if let error = file.writeError.withLock({ e in defer { e = nil }; return e }) { throw error }
        if let failed { throw failed }
    }

    /// COMMITs what this file wrote UNSTABLE and settles it (see `settle`).
    func commit(_ file: NFSFile, _ caller: Credentials) throws(Errno) {
        try file.committing.withLock { _ throws(Errno) in
            guard let through = file.uncommitted.withLock({ $0.newest }) else { return }
            let handle = file.inode.handle
            let committed = try client.perform(caller) { connection, deadline throws(ConnectionFailure) -> Result<UInt64, Errno> in
                var result: Result<UInt64, Errno> = .failure(.io)
                let call = try queueCommit(handle, on: connection) { result = $0 }
                try connection.wait(for: [call], deadline: deadline)
                return result
            }.get()
            try settle(file, through: through, committed: committed, caller)
        }
    }

    /// Forgets the retained writes up to `through` that a COMMIT with verifier `committed`
    /// covered. Pieces written under another verifier were written before a server restart
    /// and may be gone: they are sent again FILE_SYNC, in their original order, first.
    /// The caller holds `file.committing`, so no other COMMIT recycles their memory meanwhile.
    func settle(_ file: NFSFile, through: UInt64, committed: UInt64, _ caller: Credentials) throws(Errno) {
        // From the first piece the server may have lost, every later piece goes again too, in
        // the order the guest wrote them: a piece written after the restart (the new
        // verifier) may overlap a lost one, and must stay on top.
        let lost = file.uncommitted.withLock { u -> [UncommittedWrites.Piece] in
            let pieces = Array(u.pieces.prefix { $0.sequence <= through })
            guard let first = pieces.firstIndex(where: { $0.verifier != committed }) else { return [] }
            return Array(pieces[first...])
        }
        if !lost.isEmpty {
            logger.warning("NFS write verifier changed (server restarted): sending \(lost.count) uncommitted writes again")
            for piece in lost {
                for s in try send(file, UnsafeRawBufferPointer(piece.space.bytes), at: piece.offset, stable: FILE_SYNC, caller).pieces {
                    switch s.result {
                    case .failure(let error): throw error
                    case .success(let reply): if reply.count < s.length { throw .io }
                    }
                }
            }
            resentAfterVerifierChange.wrappingAdd(lost.count, ordering: .relaxed)
        }
        file.uncommitted.withLock { $0.settle(through: through, pool: retainPool) }
    }
}
