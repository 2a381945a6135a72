/* Helpers shared by the checks: reporting, deterministic data, whole-buffer I/O. */
#include "conformance.h"

#include <ftw.h>
#include <grp.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <time.h>

int report_fd = 2;

void report(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof buf - 2)
        n = sizeof buf - 2;
    buf[n++] = '\n';
    /* One write per message so concurrent reporters do not interleave mid-line. */
    ssize_t w = write(report_fd, buf, n);
    (void)w;
}

const char *errno_name(int err)
{
    /* Our own table: strerrorname_np is glibc-only and recent. */
    switch (err) {
#define E(x) case x: return #x;
    E(EPERM) E(ENOENT) E(ESRCH) E(EINTR) E(EIO) E(ENXIO) E(E2BIG) E(EBADF) E(ECHILD)
    E(EAGAIN) E(ENOMEM) E(EACCES) E(EFAULT) E(EBUSY) E(EEXIST) E(EXDEV) E(ENODEV)
    E(ENOTDIR) E(EISDIR) E(EINVAL) E(ENFILE) E(EMFILE) E(ETXTBSY) E(EFBIG) E(ENOSPC)
    E(ESPIPE) E(EROFS) E(EMLINK) E(EPIPE) E(ERANGE) E(ENAMETOOLONG) E(ENOSYS)
    E(ENOTEMPTY) E(ELOOP) E(ENODATA) E(EOPNOTSUPP) E(EOVERFLOW) E(ESTALE) E(EDQUOT)
    E(ENOTSOCK) E(EADDRINUSE) E(ENOTCONN)
#undef E
    case 0: return "no error";
    default: return "E?";
    }
}

uint64_t xorshift64(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

void fill_pattern(unsigned char *buf, size_t len, uint64_t seed)
{
    uint64_t s = seed ? seed : 0x9e3779b97f4a7c15ull;
    size_t i = 0;
    while (i + 8 <= len) {
        uint64_t v = xorshift64(&s);
        memcpy(buf + i, &v, 8);
        i += 8;
    }
    if (i < len) {
        uint64_t v = xorshift64(&s);
        memcpy(buf + i, &v, len - i);
    }
}

int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0) {
            errno = EIO;
            return -1;
        }
        p += n;
        len -= n;
    }
    return 0;
}

int pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            return -1;
        }
        p += n;
        len -= n;
        off += n;
    }
    return 0;
}

int pread_all(int fd, void *buf, size_t len, off_t off)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0) {
            /* A short file where we expected data: report it as a distinct error. */
            errno = ENODATA;
            return -1;
        }
        p += n;
        len -= n;
        off += n;
    }
    return 0;
}

int put_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return -1;
    if (write_all(fd, data, len) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return close(fd);
}

ssize_t get_file(const char *path, void *buf, size_t cap)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, (char *)buf + got, cap - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        if (n == 0 || got + n == cap) {
            got += n;
            break;
        }
        got += n;
    }
    close(fd);
    return (ssize_t)got;
}

int file_is(const char *path, const char *expected)
{
    char buf[4096];
    ssize_t n = get_file(path, buf, sizeof buf);
    if (n < 0) {
        report("read %s: %s", path, strerror(errno));
        return 0;
    }
    size_t len = strlen(expected);
    if ((size_t)n != len || memcmp(buf, expected, len) != 0) {
        report("%s: expected contents \"%s\", got %zd bytes \"%.*s\"", path, expected, n,
               (int)(n > 64 ? 64 : n), buf);
        return 0;
    }
    return 1;
}

static int remove_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    /* Directories come last (FTW_DEPTH); an unreadable one (FTW_DNR) is still removed. */
    if (type == FTW_DP || type == FTW_D || type == FTW_DNR)
        return rmdir(path);
    return unlink(path);
}

int remove_tree(const char *path)
{
    return nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

int is_zero(const void *p, size_t len)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < len; i++)
        if (b[i])
            return 0;
    return 1;
}

long first_difference(const unsigned char *a, const unsigned char *b, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (a[i] != b[i])
            return (long)i;
    return -1;
}

int wait_child(pid_t pid, const char *what)
{
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            report("waitpid(%s): %s", what, strerror(errno));
            return CHECK_FAIL;
        }
    }
    if (WIFSIGNALED(status)) {
        report("%s: killed by signal %d", what, WTERMSIG(status));
        return CHECK_FAIL;
    }
    return WEXITSTATUS(status);
}

int run_as(uid_t uid, gid_t gid, const gid_t *groups, size_t ngroups, int (*fn)(void *), void *arg)
{
    pid_t pid = fork();
    if (pid < 0) {
        report("fork: %s", strerror(errno));
        return CHECK_FAIL;
    }
    if (pid == 0) {
        /* Order matters: groups and gid must go while we are still root. */
        if (setgroups(ngroups, groups) < 0 || setgid(gid) < 0 || setuid(uid) < 0) {
            report("dropping to uid %d gid %d with %zu supplementary group(s): %s", (int)uid,
                   (int)gid, ngroups, strerror(errno));
            _exit(CHECK_FAIL);
        }
        _exit(fn(arg));
    }
    return wait_child(pid, "unprivileged child");
}

int run_as_nobody(int (*fn)(void *), void *arg)
{
    return run_as(NOBODY, NOBODY, NULL, 0, fn, arg);
}

int wait_child_within(pid_t pid, unsigned seconds, const char *what)
{
    struct timespec start, now, pause = {0, 20 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r < 0 && errno != EINTR) {
            report("waitpid(%s): %s", what, strerror(errno));
            return CHECK_FAIL;
        }
        if (r == pid) {
            if (WIFSIGNALED(status)) {
                report("%s: killed by signal %d", what, WTERMSIG(status));
                return CHECK_FAIL;
            }
            return WEXITSTATUS(status);
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long elapsed_ns = (now.tv_sec - start.tv_sec) * 1000000000LL + (now.tv_nsec - start.tv_nsec);
        if (elapsed_ns >= (long long)seconds * 1000000000LL)
            return CHECK_TIMED_OUT;
        nanosleep(&pause, NULL);
    }
}

/* Copies what the checks compare; statx has no struct stat of its own. */
static void from_statx(const struct statx *sx, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_mode = sx->stx_mode;
    st->st_nlink = sx->stx_nlink;
    st->st_uid = sx->stx_uid;
    st->st_gid = sx->stx_gid;
    st->st_size = (off_t)sx->stx_size;
    st->st_blocks = (blkcnt_t)sx->stx_blocks;
    st->st_ino = sx->stx_ino;
    st->st_atim.tv_sec = sx->stx_atime.tv_sec;
    st->st_atim.tv_nsec = sx->stx_atime.tv_nsec;
    st->st_mtim.tv_sec = sx->stx_mtime.tv_sec;
    st->st_mtim.tv_nsec = sx->stx_mtime.tv_nsec;
    st->st_ctim.tv_sec = sx->stx_ctime.tv_sec;
    st->st_ctim.tv_nsec = sx->stx_ctime.tv_nsec;
}

int lstat_fresh(const char *path, struct stat *st)
{
    struct statx sx;
    if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW | AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, &sx) < 0)
        return -1;
    from_statx(&sx, st);
    return 0;
}

int fstat_fresh(int fd, struct stat *st)
{
    struct statx sx;
    if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, &sx) < 0)
        return -1;
    from_statx(&sx, st);
    return 0;
}
