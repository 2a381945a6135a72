#define _GNU_SOURCE
#include "cferry.h"
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <linux/openat2.h>
#include <linux/capability.h>
#include <sys/prctl.h>

const int ferry_o_direct = O_DIRECT;

int ferry_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve) {
    struct open_how how = { .flags = flags, .mode = mode, .resolve = resolve };
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

int ferry_thread_setgroups(size_t count, const uint32_t *groups) {
    return (int)syscall(SYS_setgroups, count, groups);
}

int ferry_thread_setfsuid(uint32_t uid) { return (int)syscall(SYS_setfsuid, uid); }
int ferry_thread_setfsgid(uint32_t gid) { return (int)syscall(SYS_setfsgid, gid); }

int ferry_name_to_handle(int dirfd, const char *name, int flags,
                         unsigned char *out, unsigned int *len, int *type, int *mount_id) {
    // struct file_handle ends in a flexible array; build it on the stack at full size.
    union { struct file_handle fh; unsigned char raw[sizeof(struct file_handle) + MAX_HANDLE_SZ]; } u;
    if (*len > MAX_HANDLE_SZ) *len = MAX_HANDLE_SZ;
    u.fh.handle_bytes = *len;
    if (name_to_handle_at(dirfd, name, &u.fh, mount_id, flags) != 0) return -1;
    memcpy(out, u.fh.f_handle, u.fh.handle_bytes);
    *len = u.fh.handle_bytes;
    *type = u.fh.handle_type;
    return 0;
}

int ferry_open_by_handle(int mount_fd, const unsigned char *bytes, unsigned int len, int type, int flags) {
    union { struct file_handle fh; unsigned char raw[sizeof(struct file_handle) + MAX_HANDLE_SZ]; } u;
    if (len > MAX_HANDLE_SZ) { errno = EINVAL; return -1; }
    u.fh.handle_bytes = len;
    u.fh.handle_type = type;
    memcpy(u.fh.f_handle, bytes, len);
    return open_by_handle_at(mount_fd, &u.fh, flags);
}

int ferry_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags) {
    return (int)syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, flags);
}

ssize_t ferry_copy_file_range(int fd_in, int64_t *off_in, int fd_out, int64_t *off_out, size_t len, unsigned int flags) {
    return copy_file_range(fd_in, (off64_t *)off_in, fd_out, (off64_t *)off_out, len, flags);
}

int ferry_fallocate(int fd, int mode, int64_t offset, int64_t len) { return fallocate(fd, mode, offset, len); }
int ferry_syncfs(int fd) { return syncfs(fd); }
ssize_t ferry_getdents64(int fd, void *buf, size_t count) { return getdents64(fd, buf, count); }
int ferry_fcntl_int(int fd, int cmd, int arg) { return fcntl(fd, cmd, arg); }
int ferry_fcntl_lock(int fd, int cmd, void *lock) { return fcntl(fd, cmd, lock); }
int ferry_flock(int fd, int operation) { return flock(fd, operation); }
int ferry_ioctl_ptr(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }
int ferry_open(const char *path, int flags, uint32_t mode) { return open(path, flags, (mode_t)mode); }
int ferry_openat(int dirfd, const char *path, int flags, uint32_t mode) { return openat(dirfd, path, flags, (mode_t)mode); }
int ferry_statx(int dirfd, const char *path, int flags, unsigned int mask, void *out) {
    return statx(dirfd, path, flags, mask, (struct statx *)out);
}
int ferry_umount2(const char *target, int flags) { return umount2(target, flags); }
pid_t ferry_gettid(void) { return (pid_t)syscall(SYS_gettid); }

int ferry_fsetxattr(int fd, const char *name, const void *value, size_t size, int flags) {
    return fsetxattr(fd, name, value, size, flags);
}
ssize_t ferry_fgetxattr(int fd, const char *name, void *value, size_t size) {
    return fgetxattr(fd, name, value, size);
}
ssize_t ferry_flistxattr(int fd, char *list, size_t size) { return flistxattr(fd, list, size); }
int ferry_fremovexattr(int fd, const char *name) { return fremovexattr(fd, name); }

int ferry_thread_raise_dac(void) {
    struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &header, data) != 0) return -1;
    uint32_t wanted = (1u << CAP_DAC_OVERRIDE) | (1u << CAP_DAC_READ_SEARCH);
    data[0].effective |= wanted & data[0].permitted;
    return (int)syscall(SYS_capset, &header, data);
}
// ---- vhost-user transport (FerryVhostUser) ----
#include <sys/socket.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <stdatomic.h>
#include <spawn.h>

ssize_t ferry_recvmsg_fds(int sock, void *buf, size_t len, int *fds, size_t maxfds, size_t *nfds) {
    union { struct cmsghdr align; char raw[CMSG_SPACE(sizeof(int) * 32)]; } control;
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    struct msghdr msg = { 0 };
    msg.msg_iov = &iov; msg.msg_iovlen = 1;
    msg.msg_control = control.raw; msg.msg_controllen = sizeof control.raw;
    *nfds = 0;
    ssize_t n;
    do { n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC); } while (n < 0 && errno == EINTR);
    if (n < 0) return -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int *received = (int *)CMSG_DATA(c);
        for (size_t i = 0; i < count; i++) {
            int fd; memcpy(&fd, received + i, sizeof fd);
            if (*nfds < maxfds) fds[(*nfds)++] = fd; else close(fd);
        }
    }
    return n;
}

ssize_t ferry_sendmsg_fds(int sock, const void *buf, size_t len, const int *fds, size_t nfds) {
    union { struct cmsghdr align; char raw[CMSG_SPACE(sizeof(int) * 8)]; } control;
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    struct msghdr msg = { 0 };
    msg.msg_iov = &iov; msg.msg_iovlen = 1;
    if (nfds > 8) { errno = EINVAL; return -1; }
    if (nfds > 0) {
        memset(&control, 0, sizeof control);
        msg.msg_control = control.raw; msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET; c->cmsg_type = SCM_RIGHTS; c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    ssize_t n;
    do { n = sendmsg(sock, &msg, MSG_NOSIGNAL); } while (n < 0 && errno == EINTR);
    return n;
}

int ferry_memfd_create(const char *name, unsigned int flags) { return memfd_create(name, flags); }
int ferry_eventfd(unsigned int initval, int flags) { return eventfd(initval, flags); }
int ferry_spawn_actions_close_from(void *actions, int lowfd) {
    return posix_spawn_file_actions_addclosefrom_np((posix_spawn_file_actions_t *)actions, lowfd);
}
uint16_t ferry_load_acquire_u16(const void *p) { return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE); }
void ferry_store_release_u16(void *p, uint16_t v) { __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE); }
void ferry_fence_seq_cst(void) { atomic_thread_fence(memory_order_seq_cst); }
void ferry_fence_acquire(void) { atomic_thread_fence(memory_order_acquire); }
void ferry_fence_release(void) { atomic_thread_fence(memory_order_release); }

// ---- vhost-user front-end (FerryVhostFrontend) ----
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <poll.h>

int ferry_fe_connect_unix(const char *path) {
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof addr.sun_path) { errno = ENAMETOOLONG; return -1; }
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) { int e = errno; close(fd); errno = e; return -1; }
    return fd;
}


void *ferry_fe_mmap_shared(int fd, size_t len) {
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}
int ferry_fe_wait_readable(int fd, int timeout_ms) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    int r;
    do { r = poll(&p, 1, timeout_ms); } while (r < 0 && errno == EINTR);
    return r;
}

#include <time.h>
uint64_t ferry_monotonic_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}
uint64_t ferry_atomic_add_u64(uint64_t *p, uint64_t value) {
    return __atomic_add_fetch(p, value, __ATOMIC_RELAXED);
}
uint64_t ferry_atomic_load_u64(const uint64_t *p) {
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}
void ferry_atomic_or_u8(uint8_t *p, uint8_t value) {
    // Release: the guest memory written before is visible to whoever sees the bit.
    __atomic_fetch_or(p, value, __ATOMIC_RELEASE);
}

int ferry_set_thread_name(const char *name) { return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0); }
