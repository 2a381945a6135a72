/*
 * A hostile-but-legal size: a sparse file of 1 PiB with a few bytes in it, truncated down and
 * up, then unlinked. Every step costs what the data costs, so the whole sequence finishes in
 * well under a second on a local file system; a backend whose truncate or unlink walks the
 * logical size (one request per object of a petabyte) takes hours and blocks its export.
 *
 * The steps run in a worker; the check waits for it at most PETABYTE_BOUND seconds (a bound
 * against hangs, generous by two orders of magnitude, not a benchmark). A worker still
 * running then sits in a request the kernel cannot interrupt, holding its directory locked,
 * so the check gives up on it and tells the runner to leave the directory alone.
 */
#include "conformance.h"

#include <sys/mman.h>
#include <sys/wait.h>
#include <signal.h>

#define PETABYTE_BOUND 60
#define TiB (1LL << 40)

/* Which step the worker is in, and the size it used, shared with the waiting check. */
struct progress {
    char step[80];
    long long size;
};

static void step(struct progress *p, const char *what)
{
    snprintf(p->step, sizeof p->step, "%s", what);
}

/*
 * The largest size from 1 PiB down by halves that ftruncate accepts. EFBIG is the file
 * system's own limit (ext4 stops below 16 TiB); anything else, or EFBIG at 1 TiB, fails.
 */
static int grow(int fd, long long *size)
{
    for (long long s = 1LL << 50; s >= TiB; s /= 2) {
        if (ftruncate(fd, s) == 0) {
            *size = s;
            return CHECK_OK;
        }
        int e = errno;
        MUST_TRUE(e == EFBIG, "ftruncate to %lld bytes: %s (%s)", s, errno_name(e), strerror(e));
    }
    FAIL("ftruncate: EFBIG for every size down to 1 TiB");
}

static int petabyte_steps(struct progress *p)
{
    char buf[4096];
    struct stat st;
    step(p, "create f");
    int fd = open("f", O_RDWR | O_CREAT | O_EXCL, 0644);
    MUST(fd);
    MUST(pwrite_all(fd, "head", 4, 0));
    step(p, "ftruncate f up");
    long long size;
    if (grow(fd, &size) != CHECK_OK)
        return CHECK_FAIL;
    p->size = size;
    step(p, "write at the end of f");
    MUST(pwrite_all(fd, "tail", 4, size - 4));
    MUST(pwrite_all(fd, "middle", 6, size / 2 + 12345));
    step(p, "fstat f");
    MUST(fstat_fresh(fd, &st));
    MUST_EQ(st.st_size, size);
    /* Three small writes: anything near the logical size means the holes were allocated. */
    MUST_TRUE(st.st_blocks < 2048, "st_blocks = %lld for three small writes in a %lld-byte file",
              (long long)st.st_blocks, size);
    step(p, "read f back");
    MUST(pread_all(fd, buf, 4, 0));
    MUST_TRUE(memcmp(buf, "head", 4) == 0, "the first bytes read \"%.4s\"", buf);
    MUST(pread_all(fd, buf, 4, size - 4));
    MUST_TRUE(memcmp(buf, "tail", 4) == 0, "the last bytes read \"%.4s\"", buf);
    MUST(pread_all(fd, buf, 6, size / 2 + 12345));
    MUST_TRUE(memcmp(buf, "middle", 6) == 0, "the bytes in the middle read \"%.6s\"", buf);
    memset(buf, 0xaa, sizeof buf);
    MUST(pread_all(fd, buf, sizeof buf, size / 4));
    MUST_TRUE(is_zero(buf, sizeof buf), "the hole at %lld does not read as zeros", size / 4);
    MUST_EQ(pread(fd, buf, sizeof buf, size), 0);

    step(p, "ftruncate f down to 4 KiB");
    MUST(ftruncate(fd, 4096));
    MUST(fstat_fresh(fd, &st));
    MUST_EQ(st.st_size, 4096);
    step(p, "ftruncate f up again");
    MUST(ftruncate(fd, size));
    /* What lay beyond the cut is gone for good, not uncovered again. */
    MUST(pread_all(fd, buf, 4, size - 4));
    MUST_TRUE(is_zero(buf, 4), "after truncating down and up, the old last bytes came back");
    MUST(pread_all(fd, buf, 6, size / 2 + 12345));
    MUST_TRUE(is_zero(buf, 6), "after truncating down and up, the old middle bytes came back");
    MUST(pwrite_all(fd, "tail", 4, size - 4));
    MUST(close(fd));

    step(p, "truncate(2) g to the same size");
    MUST(put_file("g", "g", 1));
    MUST(truncate("g", size));
    step(p, "unlink f");
    MUST(unlink("f"));
    step(p, "unlink g");
    MUST(unlink("g"));
    step(p, "stat after unlink");
    MUST_ERRNO(lstat_fresh("f", &st), ENOENT);
    MUST_ERRNO(lstat_fresh("g", &st), ENOENT);
    step(p, "done");
    return CHECK_OK;
}

static int sparse_petabyte_unlink(void)
{
    struct progress *p = mmap(NULL, sizeof *p, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    MUST_TRUE(p != MAP_FAILED, "mmap: %s", strerror(errno));
    step(p, "start");
    /* The runner's alarm would kill us mid-wait; our own bound replaces it. */
    unsigned left = alarm(0);
    unsigned bound = left > 0 && left <= PETABYTE_BOUND ? left - (left > 1) : PETABYTE_BOUND;
    pid_t worker = fork();
    MUST(worker);
    if (worker == 0) {
        /* An abandoned worker outlives the program: it must not hold the output our caller
         * reads to end of file (it reports through report_fd, which the runner only drains). */
        int null = open("/dev/null", O_RDWR);
        if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
            _exit(CHECK_FAIL);
        _exit(petabyte_steps(p));
    }
    int r = wait_child_within(worker, bound, "petabyte worker");
    if (r != CHECK_TIMED_OUT)
        return r;
    kill(worker, SIGKILL);
    report("step \"%s\" (size %lld) still running after %u s: its cost follows the file's size, "
           "not its data", p->step, p->size, bound);
    return CHECK_ABANDONED;
}

const struct check petabyte_checks[] = {
    {"sparse_petabyte_unlink", sparse_petabyte_unlink},
    {NULL, NULL},
};
