#if canImport(Glibc)
import Glibc
#endif
import CFerry
import FerryCore

/// The fs credentials (fsuid, fsgid, supplementary groups) the current thread runs with,
/// cached so that switching to the same caller again costs no syscall.
///
/// fsuid/fsgid and the group list are per-thread in the kernel; we change them with the
/// raw syscalls (`ferry_thread_*`) so other threads keep theirs.
final class ThreadCredentialState {
    static let groupCapacity = 64
    /// `UInt32.max` means "unknown" (never set by us on this thread).
    var uid: UInt32 = .max
    var gid: UInt32 = .max
    /// -1: unknown; otherwise the number of groups in `groups` the thread has.
    var groupCount: Int = -1
    let groups: UnsafeMutablePointer<UInt32>

    init() {
        groups = .allocate(capacity: Self.groupCapacity)
    }
    deinit { groups.deallocate() }

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        let rc = pthread_key_create(&key) { pointer in
            guard let pointer else { return }
            Unmanaged<ThreadCredentialState>.fromOpaque(pointer).release()
        }
        precondition(rc == 0, "pthread_key_create failed")
        return key
    }()

    /// This thread's state; allocated once per thread.
    @inline(__always)
    static var current: ThreadCredentialState {
        if let pointer = pthread_getspecific(key) {
            return Unmanaged<ThreadCredentialState>.fromOpaque(pointer).takeUnretainedValue()
        }
        let state = ThreadCredentialState()
        pthread_setspecific(key, Unmanaged.passRetained(state).toOpaque())
        return state
    }

    /// Makes the thread's fs credentials those of `caller`. Syscalls only for what changed.
    /// With `trustClient`, the client kernel has already checked permissions (FUSE's
    /// default_permissions, which virtio-fs always uses) with the caller's full group list,
    /// which FUSE never sends us. Re-checking on the host with the primary group alone would
    /// refuse access granted through a supplementary group, so the thread keeps its DAC
    /// capabilities; it still acts as the caller for ownership, setgid inheritance and
    /// setuid clearing (CAP_FSETID is not kept).
    @inline(__always)
    func become(uid: UInt32, gid: UInt32, groups callerGroups: UnsafeBufferPointer<UInt32>, trustClient: Bool) {
        if !groupsMatch(callerGroups) { setGroups(callerGroups) }
        if self.gid != gid {
            _ = ferry_thread_setfsgid(gid)
            self.gid = gid
        }
        if self.uid != uid {
            _ = ferry_thread_setfsuid(uid)
            self.uid = uid
            dacRaised = false       // leaving fsuid 0 dropped them; moving between others kept them
        }
        self.trustClient = trustClient
        if uid != 0 && trustClient != dacRaised { setDAC(trustClient) }
    }

    /// Whether this thread currently holds CAP_DAC_* while its fsuid is not 0.
    private var dacRaised = false
    private var trustClient = false

    private func setDAC(_ raised: Bool) {
        if raised {
            if ferry_thread_raise_dac() != 0 { preconditionFailure("capset failed: errno \(errno)") }
        } else {
            // Dropping them again: go through fsuid 0 and back, which is what clears them.
            _ = ferry_thread_setfsuid(0)
            _ = ferry_thread_setfsuid(uid)
        }
        dacRaised = raised
    }

    @inline(__always)
    private func groupsMatch(_ callerGroups: UnsafeBufferPointer<UInt32>) -> Bool {
        if groupCount != callerGroups.count { return false }
        for i in 0..<groupCount where groups[i] != callerGroups[i] { return false }
        return true
    }

    private func setGroups(_ callerGroups: UnsafeBufferPointer<UInt32>) {
        let rc = ferry_thread_setgroups(callerGroups.count, callerGroups.baseAddress)
        if rc != 0 {
            // Without CAP_SETGID we cannot drop or set groups; that is a deployment error
            // (the daemon must run as root) and acting with the wrong groups is unsafe.
            preconditionFailure("setgroups failed: errno \(errno)")
        }
        if callerGroups.count <= Self.groupCapacity {
            for i in 0..<callerGroups.count { groups[i] = callerGroups[i] }
            groupCount = callerGroups.count
        } else {
            groupCount = -1  // too many to remember: set again next time
        }
    }

    /// Runs `body` with fsuid 0 (so the thread has its fs capabilities, e.g.
    /// CAP_DAC_READ_SEARCH for open_by_handle_at), then restores the caller's fsuid.
    @inline(__always)
    func asDaemon<R>(_ body: () throws(Errno) -> R) throws(Errno) -> R {
        let saved = uid
        if saved == 0 { return try body() }
        _ = ferry_thread_setfsuid(0)
        defer {
            let e = errno
            _ = ferry_thread_setfsuid(saved)
            dacRaised = false
            if trustClient { setDAC(true) }
            errno = e
        }
        return try body()
    }
}
