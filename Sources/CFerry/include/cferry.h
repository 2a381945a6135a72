// Thin C shims for what Swift cannot call directly: raw syscalls that glibc wraps
// process-wide (setgroups), variadic functions, and structs with flexible arrays.
// Every function returns -1 and sets errno on failure, like the call it wraps.
#pragma once
// Only integer-typed includes here: system headers belong to the Glibc module, and
// pulling them into this module (with other feature macros) makes their types clash.
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
// struct statx and struct statx_timestamp: glibc declares them only under _GNU_SOURCE.
#include <linux/stat.h>

/// openat2(2) with RESOLVE_* flags; glibc 2.36 has no wrapper.
int ferry_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve);

/// Per-thread credentials. glibc's setgroups/setresuid change every thread of the
/// process; the raw syscalls change only the calling thread, which is what a worker
/// serving one caller at a time needs.
int ferry_thread_setgroups(size_t count, const uint32_t *groups);
int ferry_thread_setfsuid(uint32_t uid);   // returns the previous fsuid
int ferry_thread_setfsgid(uint32_t gid);   // returns the previous fsgid

/// name_to_handle_at(2) into a caller buffer of `*len` bytes (at most 128).
/// On success *len, *type and *mount_id are set.
int ferry_name_to_handle(int dirfd, const char *name, int flags,
                         unsigned char *out, unsigned int *len, int *type, int *mount_id);
/// open_by_handle_at(2) from the bytes ferry_name_to_handle produced.
int ferry_open_by_handle(int mount_fd, const unsigned char *bytes, unsigned int len, int type, int flags);

int ferry_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags);
ssize_t ferry_copy_file_range(int fd_in, int64_t *off_in, int fd_out, int64_t *off_out, size_t len, unsigned int flags);
int ferry_fallocate(int fd, int mode, int64_t offset, int64_t len);
int ferry_syncfs(int fd);
ssize_t ferry_getdents64(int fd, void *buf, size_t count);
int ferry_fcntl_int(int fd, int cmd, int arg);
/// `lock` points to a `struct flock`.
int ferry_fcntl_lock(int fd, int cmd, void *lock);
/// flock(2) (Swift sees `flock` as the struct's name).
int ferry_flock(int fd, int operation);
int ferry_ioctl_ptr(int fd, unsigned long request, void *arg);
int ferry_open(const char *path, int flags, uint32_t mode);
int ferry_openat(int dirfd, const char *path, int flags, uint32_t mode);
/// `out` points to a `struct statx`.
int ferry_statx(int dirfd, const char *path, int flags, unsigned int mask, void *out);
/// Extended attributes on an open fd (glibc's <sys/xattr.h> is not in Swift's Glibc module).
int ferry_fsetxattr(int fd, const char *name, const void *value, size_t size, int flags);
ssize_t ferry_fgetxattr(int fd, const char *name, void *value, size_t size);
ssize_t ferry_flistxattr(int fd, char *list, size_t size);
int ferry_fremovexattr(int fd, const char *name);
/// Raises CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH in the calling thread's effective set
/// (from its permitted set). The kernel drops them whenever the thread's fsuid leaves 0.
int ferry_thread_raise_dac(void);
int ferry_umount2(const char *target, int flags);
pid_t ferry_gettid(void);

/// O_DIRECT as this architecture's <fcntl.h> defines it (it differs between architectures,
/// and Swift's Glibc module hides it without _GNU_SOURCE).
extern const int ferry_o_direct;

/// Constants that are macros or enums Swift may not import cleanly.
enum {
    FERRY_RENAME_NOREPLACE = 1,
    FERRY_RENAME_EXCHANGE = 2,
    FERRY_RENAME_WHITEOUT = 4,
    FERRY_AT_EMPTY_PATH = 0x1000,
    FERRY_AT_SYMLINK_NOFOLLOW = 0x100,
    FERRY_AT_REMOVEDIR = 0x200,
    FERRY_AT_SYMLINK_FOLLOW = 0x400,
    FERRY_O_PATH = 010000000,
    FERRY_O_TMPFILE = 020200000,
    FERRY_RESOLVE_NO_XDEV = 0x01,
    FERRY_RESOLVE_NO_MAGICLINKS = 0x02,
    FERRY_RESOLVE_NO_SYMLINKS = 0x04,
    FERRY_RESOLVE_BENEATH = 0x08,
    FERRY_RESOLVE_IN_ROOT = 0x10,
    FERRY_FALLOC_FL_KEEP_SIZE = 0x01,
    FERRY_FALLOC_FL_PUNCH_HOLE = 0x02,
    FERRY_FALLOC_FL_ZERO_RANGE = 0x10,
    FERRY_SEEK_DATA = 3,
    FERRY_SEEK_HOLE = 4,
    FERRY_F_OFD_GETLK = 36,
    FERRY_F_OFD_SETLK = 37,
    FERRY_F_OFD_SETLKW = 38,
    FERRY_MAX_HANDLE_SZ = 128,
    FERRY_STATX_BASIC_STATS = 0x7ff,
    FERRY_STATX_MNT_ID = 0x1000,
    FERRY_UTIME_NOW = (1 << 30) - 1,
    FERRY_UTIME_OMIT = (1 << 30) - 2,
};

// ---- vhost-user transport (FerryVhostUser) ----

/// recvmsg(2) of up to `len` bytes (one call; a stream may return fewer) with SCM_RIGHTS:
/// up to `maxfds` received descriptors land in `fds` (O_CLOEXEC), their count in
/// `*nfds`; descriptors beyond `maxfds` are closed. Returns bytes read, 0 on EOF, -1.
ssize_t ferry_recvmsg_fds(int sock, void *buf, size_t len, int *fds, size_t maxfds, size_t *nfds);
/// sendmsg(2) of `len` bytes with `nfds` descriptors as SCM_RIGHTS (nfds may be 0).
ssize_t ferry_sendmsg_fds(int sock, const void *buf, size_t len, const int *fds, size_t nfds);
/// memfd_create(2) and eventfd(2) (glibc headers Swift may not import).
int ferry_memfd_create(const char *name, unsigned int flags);
int ferry_eventfd(unsigned int initval, int flags);
/// posix_spawn_file_actions_addclosefrom_np(3) (glibc 2.34+, hidden from Swift without
/// _GNU_SOURCE): the child closes every descriptor from `lowfd` up. `actions` is a
/// posix_spawn_file_actions_t *. Returns 0 or an error number, as posix_spawn's calls do.
int ferry_spawn_actions_close_from(void *actions, int lowfd);
/// Memory ordering for shared rings: acquire load / release store of a 16-bit index,
/// and full, acquire and release fences (atomic_thread_fence).
uint16_t ferry_load_acquire_u16(const void *p);
void ferry_store_release_u16(void *p, uint16_t v);
void ferry_fence_seq_cst(void);
void ferry_fence_acquire(void);
void ferry_fence_release(void);

enum {
    FERRY_EFD_CLOEXEC = 02000000,
    FERRY_EFD_NONBLOCK = 04000,
    FERRY_MFD_CLOEXEC = 1,
};

// ---- vhost-user front-end (FerryVhostFrontend) ----
/// Connects a SOCK_STREAM unix socket to `path`; returns the fd.
int ferry_fe_connect_unix(const char *path);
/// mmap(2) of `len` bytes of `fd` read-write MAP_SHARED; NULL on failure.
void *ferry_fe_mmap_shared(int fd, size_t len);
/// Waits up to `timeout_ms` (-1: forever) for `fd` to be readable. 1: readable, 0: timeout.
int ferry_fe_wait_readable(int fd, int timeout_ms);

// ---- busy polling (FerryVhostUser queue threads) ----
/// A spin-wait hint to the CPU (x86 PAUSE, arm64 YIELD).
static inline void ferry_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
/// CLOCK_MONOTONIC in nanoseconds (vDSO, no syscall).
uint64_t ferry_monotonic_ns(void);
/// Names the calling thread (at most 15 bytes show) for /proc/PID/task/TID/comm.
int ferry_set_thread_name(const char *name);
/// Relaxed 64-bit counters shared by request threads (statistics, quota ledgers).
uint64_t ferry_atomic_add_u64(uint64_t *p, uint64_t value);
uint64_t ferry_atomic_load_u64(const uint64_t *p);
/// Atomic byte-wide OR into memory another process shares (vhost-user's dirty-page log).
void ferry_atomic_or_u8(uint8_t *p, uint8_t value);
