#if canImport(Glibc)
import Glibc
#endif
import CNFS
import FerryCore

// Who a call acts as when the kernel has already decided that the caller may make a change
// the NFS server cannot check for itself. FUSE tells a server the caller's uid and gid only
// (plus one group on creation, FUSE_CREATE_SUPP_GROUP), never the supplementary groups, and
// the kernel (default_permissions, always on for virtio-fs and `ferry mount`) has checked
// them already; the NFS server checks again with what AUTH_SYS carries. Where the group the
// kernel relied on is known from the request, the call carries it; a call never acts as
// root for a caller who is not root, so the server's own rules (root squash, owners) stay.
extension NFSDriver {
    /// `body` with `caller` whose AUTH_SYS groups include `gid` first (AUTH_SYS carries 16).
    /// A hostile guest gains nothing: it could name that group as its primary gid anyway.
    func withGroup<R>(_ gid: UInt32, added caller: Credentials, _ body: (Credentials) throws(Errno) -> R) throws(Errno) -> R {
        try withGroups([gid], added: caller, body)
    }

    /// `body` with `caller` whose AUTH_SYS groups include each of `gids` first.
    func withGroups<R>(_ gids: [UInt32], added caller: Credentials, _ body: (Credentials) throws(Errno) -> R) throws(Errno) -> R {
        var missing: [UInt32] = []
        for gid in gids where gid != caller.gid && !caller.groups.contains(gid) && !missing.contains(gid) { missing.append(gid) }
        if caller.uid == 0 || missing.isEmpty { return try body(caller) }
        let groups = missing + Array(caller.groups)
        return try groups.withUnsafeBufferPointer { buffer throws(Errno) in
            var vouched = caller
            vouched.groups = buffer
            return try body(vouched)
        }
    }

    /// A SETATTR as chown(2) and chmod(2) by the caller would make it. A group change goes
    /// with the target group among the caller's groups: the kernel allowed it because the
    /// caller owns the file and is a member (or it is root). The server then makes the change
    /// as that user, so the set-id bits of a regular file are cleared as chown(2) clears them.
    /// A mode with S_ISGID that the server dropped (it did not know the caller is in the
    /// file's group, which the kernel checked before it let S_ISGID through) is sent again
    /// with the file's group (only with `trustClientGroups`: the file's group may be one a
    /// guest with mapped ids could not name; the target of a chgrp went through the id map).
    ///
    /// chown(2) keeps S_ISGID without group execute (it marks mandatory locking and grants
    /// nothing) when the caller is in the file's group (Linux's setattr_should_drop_sgid).
    /// The server's host judges that by the AUTH_SYS groups, which lack the supplementary
    /// groups FUSE does not send: with `trustClientGroups` the file's group goes along too
    /// (one GETATTR first, for a chown by someone other than root). An owner outside that
    /// group then keeps the bit where Linux drops it: nothing is gained by it, while dropping
    /// it from a member would lose what the owner set.
    func setattrAsKernelAllowed(_ handle: FileHandle, _ s: sattr3, times: ClientTimes, _ caller: Credentials) throws(Errno) -> Attributes {
        var groups: [UInt32] = []
        if s.gid.set_it != 0 { groups.append(s.gid.set_gid3_u.gid) }
        if s.uid.set_it != 0 || s.gid.set_it != 0, s.mode.set_it == 0, caller.uid != 0, client.options.trustClientGroups {
            let before = try getattr(handle, caller)
            let setgid = UInt32(S_ISGID), groupExecute = UInt32(S_IXGRP)
            if before.isRegularFile, before.mode & (setgid | groupExecute) == setgid { groups.append(before.gid) }
        }
        let sent = { (caller: Credentials) throws(Errno) -> Attributes in
            try self.attributesOrFetch(try self.setattr(handle, s, times: times, caller), handle, caller)
        }
        let after = try withGroups(groups, added: caller, sent)
        let setgid = UInt32(S_ISGID)
        guard client.options.trustClientGroups, s.mode.set_it != 0, s.mode.set_mode3_u.mode & setgid != 0,
              after.mode & setgid == 0, caller.uid != 0 else { return after }
        var again = unchangedAttributes()
        again.mode = s.mode
        return try withGroup(after.gid, added: caller) { vouched throws(Errno) in
            try attributesOrFetch(try setattr(handle, again, vouched), handle, vouched)
        }
    }

    /// Clears what a write or truncate by someone without CAP_FSETID clears (the kernel asked:
    /// FUSE_WRITE_KILL_SUIDGID, FATTR_KILL_SUIDGID, FUSE_OPEN_KILL_SUIDGID): S_ISUID, and
    /// S_ISGID when group execute is set. Sent as the file's owner, who may always drop these
    /// bits; the writer may not own the file (the server would refuse the writer a chmod).
    func clearSetID(_ handle: FileHandle, _ attributes: Attributes, _ caller: Credentials) throws(Errno) -> Attributes {
        let mode = attributes.mode
        var clear = mode & UInt32(S_ISUID)
        if mode & UInt32(S_ISGID | S_IXGRP) == UInt32(S_ISGID | S_IXGRP) { clear |= UInt32(S_ISGID) }
        guard attributes.isRegularFile, clear != 0 else { return attributes }
        var s = unchangedAttributes()
        s.mode.set_it = 1; s.mode.set_mode3_u.mode = mode & 0o7777 & ~clear
        let owner = Credentials(uid: attributes.uid, gid: attributes.gid, pid: caller.pid)
        return try attributesOrFetch(try setattr(handle, s, owner), handle, owner)
    }
}

extension NFSDriver {
    /// `body` as `caller`, and if the server refuses it (EACCES) once more with `directory`'s
    /// group among the caller's. The kernel let the request through (default_permissions):
    /// when the group class of `directory` is what allowed it, the caller is in that group,
    /// which the server cannot know (FUSE_CREATE_SUPP_GROUP carries it on creation only, not
    /// on the LOOKUP before it). Only a refusal costs the extra GETATTR and call. A guest that
    /// forges requests gains nothing: it could name that group as its primary gid anyway;
    /// with ids mapped or squashed it could not, so then nothing is added (`trustClientGroups`).
    func inDirectory<R>(_ directory: FileHandle, _ caller: Credentials,
                        _ body: (Credentials) throws(Errno) -> R) throws(Errno) -> R {
        do {
            return try body(caller)
        } catch {
            guard error == .accessDenied, caller.uid != 0, client.options.trustClientGroups else { throw error }
            let gid = try getattr(directory, caller).gid
            guard gid != caller.gid, !caller.groups.contains(gid) else { throw error }
            return try withGroup(gid, added: caller, body)
        }
    }
}
