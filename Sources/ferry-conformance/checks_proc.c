/* Behaviours that need several processes: locks, FIFOs, concurrent appends. */
#include "conformance.h"

#include <sys/file.h>
#include <sys/wait.h>

/* One byte through a pipe: the cheapest way to order two processes' steps. */
static int signal_step(int fd) { return write(fd, "s", 1) == 1 ? 0 : -1; }
static int await_step(int fd)
{
    char c;
    ssize_t n;
    while ((n = read(fd, &c, 1)) < 0 && errno == EINTR)
        ;
    return n == 1 ? 0 : -1;
}

static int lock_range(int fd, int cmd, short type, off_t start, off_t len)
{
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    return fcntl(fd, cmd, &fl);
}

static int lock_contender(pid_t holder, int go, int done)
{
    int fd = open("f", O_RDWR);
    MUST(fd);
    errno = 0;
    int r = lock_range(fd, F_SETLK, F_WRLCK, 150, 10);
    int e = errno;
    MUST_TRUE(r < 0 && (e == EAGAIN || e == EACCES),
              "F_SETLK on a range another process holds: expected EAGAIN/EACCES, got %s",
              r < 0 ? errno_name(e) : "success");
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 150, .l_len = 10};
    MUST(fcntl(fd, F_GETLK, &fl));
    MUST_EQ(fl.l_type, F_WRLCK);
    MUST_EQ(fl.l_pid, holder);
    MUST_EQ(fl.l_start, 100);
    MUST_EQ(fl.l_len, 100);
    /* Ranges that do not overlap are independent. */
    MUST(lock_range(fd, F_SETLK, F_WRLCK, 300, 10));
    MUST(lock_range(fd, F_SETLK, F_RDLCK, 0, 100));

    MUST(signal_step(done));
    MUST(await_step(go));
    MUST(lock_range(fd, F_SETLK, F_WRLCK, 150, 10));
    fl = (struct flock){.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 100, .l_len = 100};
    MUST(fcntl(fd, F_GETLK, &fl));
    /* Our own locks never conflict with us, so F_GETLK reports the range as free. */
    MUST_EQ(fl.l_type, F_UNLCK);
    MUST(close(fd));
    return CHECK_OK;
}

static int posix_locks(void)
{
    int go[2], done[2];
    MUST(put_file("f", "", 0));
    MUST(truncate("f", 4096));
    int fd = open("f", O_RDWR);
    MUST(fd);
    MUST(lock_range(fd, F_SETLK, F_WRLCK, 100, 100));
    MUST(pipe(go));
    MUST(pipe(done));
    pid_t holder = getpid();
    pid_t pid = fork();
    MUST(pid);
    if (pid == 0)
        _exit(lock_contender(holder, go[0], done[1]));
    close(done[1]);
    if (await_step(done[0]) < 0)
        {
        wait_child(pid, "lock contender");
        FAIL("the lock contender ended before reaching the release step");
    }
    /* The child's lock on 300..309 must now block us in turn. */
    errno = 0;
    int r = lock_range(fd, F_SETLK, F_WRLCK, 305, 1);
    int e = errno;
    MUST(lock_range(fd, F_SETLK, F_UNLCK, 100, 100));
    MUST(signal_step(go[1]));
    int res = wait_child(pid, "lock contender");
    if (res != CHECK_OK)
        return res;
    MUST_TRUE(r < 0 && (e == EAGAIN || e == EACCES),
              "F_SETLK on the child's range: expected EAGAIN/EACCES, got %s",
              r < 0 ? errno_name(e) : "success");
    /* The child is gone, so its locks are released. */
    MUST(lock_range(fd, F_SETLK, F_WRLCK, 0, 0));
    MUST(close(fd));
    return CHECK_OK;
}

static int flock_exclusive(void)
{
    MUST(put_file("f", "", 0));
    int a = open("f", O_RDONLY), b = open("f", O_RDONLY);
    MUST(a);
    MUST(b);
    /* flock locks belong to open file descriptions, so two opens conflict even in one process. */
    MUST(flock(a, LOCK_EX | LOCK_NB));
    MUST_ERRNO(flock(b, LOCK_EX | LOCK_NB), EWOULDBLOCK);
    MUST_ERRNO(flock(b, LOCK_SH | LOCK_NB), EWOULDBLOCK);
    MUST(flock(a, LOCK_UN));
    MUST(flock(b, LOCK_SH | LOCK_NB));
    MUST(flock(a, LOCK_SH | LOCK_NB));
    MUST(close(a));
    MUST(close(b));
    return CHECK_OK;
}

static int fifo(void)
{
    struct stat st;
    const char msg[] = "through the fifo, more than one word";
    char buf[128];
    MUST(mkfifo("p", 0644));
    MUST(lstat("p", &st));
    MUST_TRUE(S_ISFIFO(st.st_mode), "mkfifo made mode 0%o", st.st_mode);
    MUST_EQ(st.st_mode & 0777, 0644);
    pid_t pid = fork();
    MUST(pid);
    if (pid == 0) {
        int w = open("p", O_WRONLY);
        if (w < 0 || write_all(w, msg, sizeof msg) < 0) {
            report("writer: %s", strerror(errno));
            _exit(CHECK_FAIL);
        }
        _exit(close(w) == 0 ? CHECK_OK : CHECK_FAIL);
    }
    int r = open("p", O_RDONLY);
    MUST(r);
    size_t got = 0;
    for (;;) {
        ssize_t n = read(r, buf + got, sizeof buf - got);
        MUST(n);
        if (n == 0)
            break;
        got += n;
    }
    MUST(close(r));
    int res = wait_child(pid, "fifo writer");
    if (res != CHECK_OK)
        return res;
    MUST_EQ(got, sizeof msg);
    MUST_TRUE(memcmp(buf, msg, sizeof msg) == 0, "fifo data differs: \"%.*s\"", (int)got, buf);
    MUST(unlink("p"));
    return CHECK_OK;
}

#define WRITERS 4
#define RECORDS 2000
#define RECLEN 64

static void make_record(char *rec, int writer, int i)
{
    memset(rec, 'a' + writer, RECLEN);
    int n = snprintf(rec, RECLEN, "w%d r%05d ", writer, i);
    rec[n] = (char)('a' + writer); /* overwrite snprintf's NUL */
    rec[RECLEN - 1] = '\n';
}

static int appender(int writer)
{
    int fd = open("log", O_WRONLY | O_APPEND);
    MUST(fd);
    char rec[RECLEN];
    for (int i = 0; i < RECORDS; i++) {
        make_record(rec, writer, i);
        /* One write per record: O_APPEND makes each one atomic with respect to the others. */
        MUST_EQ(write(fd, rec, RECLEN), RECLEN);
    }
    MUST(close(fd));
    return CHECK_OK;
}

static int concurrent_append(void)
{
    MUST(put_file("log", "", 0));
    pid_t pids[WRITERS];
    for (int w = 0; w < WRITERS; w++) {
        pids[w] = fork();
        MUST(pids[w]);
        if (pids[w] == 0)
            _exit(appender(w));
    }
    int failed = 0;
    for (int w = 0; w < WRITERS; w++)
        failed |= wait_child(pids[w], "appender") != CHECK_OK;
    if (failed)
        return CHECK_FAIL;

    const size_t size = (size_t)WRITERS * RECORDS * RECLEN;
    struct stat st;
    MUST(stat("log", &st));
    MUST_EQ(st.st_size, (long long)size);
    char *data = malloc(size + 1);
    MUST_TRUE(data != NULL, "malloc");
    MUST_EQ(get_file("log", data, size + 1), (long long)size);
    int next[WRITERS] = {0};
    for (size_t off = 0; off < size; off += RECLEN) {
        int w = data[off + 1] - '0';
        char expect[RECLEN];
        MUST_TRUE(data[off] == 'w' && w >= 0 && w < WRITERS, "garbled record at offset %zu", off);
        make_record(expect, w, next[w]);
        /* Each writer's records must appear intact and in its own order. */
        MUST_TRUE(memcmp(data + off, expect, RECLEN) == 0,
                  "record at offset %zu: expected writer %d record %d, got \"%.20s\"", off, w,
                  next[w], data + off);
        next[w]++;
    }
    for (int w = 0; w < WRITERS; w++)
        MUST_EQ(next[w], RECORDS);
    free(data);
    return CHECK_OK;
}

const struct check proc_checks[] = {
    {"posix_locks", posix_locks},
    {"flock_exclusive", flock_exclusive},
    {"fifo", fifo},
    {"concurrent_append", concurrent_append},
    {NULL, NULL},
};
