/*
 * A directory of big_dir_entries entries (100,000 unless --entries says otherwise) listed
 * with small getdents64 calls while another process adds and removes other entries in it.
 * POSIX leaves open whether entries added or removed during a listing are returned, but an
 * entry present for the whole listing is returned exactly once: a server whose directory
 * cookies are positions in a list that shifts skips or repeats entries here.
 */
#include "conformance.h"

#include <dirent.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

/* Churn names are never reused, so any name listed twice is a duplicate. */
#define CHURN_MAX 4000000L
#define CHURN_WINDOW 16

struct linux_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* What the churner has done, shared with the lister. */
struct churn_state {
    atomic_long changes;
};

static int churn(int dfd, int stop_fd, struct churn_state *state)
{
    char name[32];
    long next = 0;
    for (;;) {
        struct pollfd p = {.fd = stop_fd, .events = POLLIN};
        if (poll(&p, 1, 0) > 0 || next >= CHURN_MAX)
            break;
        snprintf(name, sizeof name, "x%07ld", next);
        MUST_TRUE(mknodat(dfd, name, S_IFREG | 0644, 0) == 0, "churner: creating %s: %s", name, strerror(errno));
        if (next >= CHURN_WINDOW) {
            snprintf(name, sizeof name, "x%07ld", next - CHURN_WINDOW);
            MUST_TRUE(unlinkat(dfd, name, 0) == 0, "churner: removing %s: %s", name, strerror(errno));
        }
        next++;
        atomic_fetch_add(&state->changes, 1);
    }
    for (long i = next > CHURN_WINDOW ? next - CHURN_WINDOW : 0; i < next; i++) {
        snprintf(name, sizeof name, "x%07ld", i);
        MUST_TRUE(unlinkat(dfd, name, 0) == 0, "churner: removing %s: %s", name, strerror(errno));
    }
    return CHECK_OK;
}

/* Returns the index of "e%07ld" or "x%07ld" names, -1 for anything else. */
static long parse_name(const char *name, char prefix)
{
    if (name[0] != prefix || strlen(name) != 8)
        return -1;
    char *end;
    long i = strtol(name + 1, &end, 10);
    return *end == '\0' ? i : -1;
}

/*
 * One whole listing of `fd` from offset 0 with getdents64 calls of `bufsize` bytes. With a
 * churner (`state` not NULL), waits after each call until it has made another change, so
 * every call sees a directory different from the last one's.
 */
static int list_once(int fd, size_t bufsize, long n, unsigned char *seen, unsigned char *churn_seen,
                     struct churn_state *state, pid_t churner, int pass)
{
    static char buf[65536] __attribute__((aligned(8)));
    memset(seen, 0, n);
    memset(churn_seen, 0, CHURN_MAX);
    MUST_EQ(lseek(fd, 0, SEEK_SET), 0);
    int dots = 0, dotdots = 0;
    long calls = 0;
    for (;;) {
        long nread = syscall(SYS_getdents64, fd, buf, bufsize);
        MUST_TRUE(nread >= 0, "pass %d: getdents64 call %ld: %s (%s)", pass, calls, errno_name(errno),
                  strerror(errno));
        if (nread == 0)
            break;
        calls++;
        for (long at = 0; at < nread;) {
            struct linux_dirent64 *e = (struct linux_dirent64 *)(buf + at);
            at += e->d_reclen;
            if (strcmp(e->d_name, ".") == 0) {
                dots++;
                continue;
            }
            if (strcmp(e->d_name, "..") == 0) {
                dotdots++;
                continue;
            }
            long i = parse_name(e->d_name, 'e');
            if (i >= 0 && i < n) {
                MUST_TRUE(seen[i] == 0, "pass %d: \"%s\" listed twice", pass, e->d_name);
                MUST_TRUE(e->d_type == DT_REG || e->d_type == DT_UNKNOWN,
                          "pass %d: \"%s\" has d_type %d", pass, e->d_name, e->d_type);
                seen[i] = 1;
                continue;
            }
            i = parse_name(e->d_name, 'x');
            MUST_TRUE(i >= 0 && i < CHURN_MAX, "pass %d: unexpected entry \"%s\"", pass, e->d_name);
            MUST_TRUE(churn_seen[i] == 0, "pass %d: \"%s\" listed twice", pass, e->d_name);
            churn_seen[i] = 1;
        }
        if (!state)
            continue;
        long before = atomic_load(&state->changes);
        struct timespec pause = {0, 200 * 1000};
        while (atomic_load(&state->changes) == before) {
            int status;
            MUST_TRUE(waitpid(churner, &status, WNOHANG) == 0,
                      "pass %d: the churner ended during the listing", pass);
            nanosleep(&pause, NULL);
        }
    }
    MUST_TRUE(dots == 1 && dotdots == 1, "pass %d: . and .. listed %d and %d times", pass, dots, dotdots);
    long missing = 0, first = -1;
    for (long i = 0; i < n; i++)
        if (!seen[i] && missing++ == 0)
            first = i;
    MUST_TRUE(missing == 0, "pass %d (%ld getdents64 calls of %zu bytes): %ld of %ld entries never "
              "listed, the first e%07ld", pass, calls, bufsize, missing, n, first);
    return CHECK_OK;
}

static int readdir_churn(void)
{
    const long n = big_dir_entries;
    char name[32];
    /* The runner's timeout guards against hangs in checks of fixed size; this one scales with
     * --entries, so its guard does too: 20 ms an entry on top (a loaded ext4 takes 0.5 ms to
     * create, list and remove one; a RADOS namespace over 10 ms). */
    alarm(alarm(0) + (unsigned)(n / 50));
    unsigned char *seen = calloc(n, 1), *churn_seen = malloc(CHURN_MAX);
    MUST_TRUE(seen && churn_seen, "malloc");
    MUST(mkdir("d", 0755));
    int dfd = open("d", O_RDONLY | O_DIRECTORY);
    MUST(dfd);
    for (long i = 0; i < n; i++) {
        snprintf(name, sizeof name, "e%07ld", i);
        MUST_TRUE(mknodat(dfd, name, S_IFREG | 0644, 0) == 0, "creating entry %ld: %s", i, strerror(errno));
    }

    struct churn_state *state = mmap(NULL, sizeof *state, PROT_READ | PROT_WRITE,
                                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    MUST_TRUE(state != MAP_FAILED, "mmap: %s", strerror(errno));
    atomic_init(&state->changes, 0);
    int stop[2];
    MUST(pipe(stop));
    pid_t churner = fork();
    MUST(churner);
    if (churner == 0) {
        close(stop[1]);
        _exit(churn(dfd, stop[0], state));
    }
    close(stop[0]);

    /* Several whole passes, each with its own buffer size, the second on the same descriptor
     * rewound: a listing must restart cleanly from offset 0. */
    int lister = open("d", O_RDONLY | O_DIRECTORY);
    MUST(lister);
    int r = list_once(lister, 512, n, seen, churn_seen, state, churner, 1);
    if (r == CHECK_OK)
        r = list_once(lister, 1000, n, seen, churn_seen, state, churner, 2);
    close(stop[1]);
    int c = wait_child(churner, "churner");
    if (r != CHECK_OK)
        return r;
    if (c != CHECK_OK)
        return c;
    MUST(close(lister));

    /* Quiet again: a fresh descriptor lists exactly the entries and nothing the churner left. */
    lister = open("d", O_RDONLY | O_DIRECTORY);
    MUST(lister);
    r = list_once(lister, 4096, n, seen, churn_seen, NULL, 0, 3);
    if (r != CHECK_OK)
        return r;
    for (long i = 0; i < CHURN_MAX; i++)
        MUST_TRUE(!churn_seen[i], "x%07ld is still listed after the churner removed it", i);
    MUST(close(lister));

    for (long i = 0; i < n; i++) {
        snprintf(name, sizeof name, "e%07ld", i);
        MUST_TRUE(unlinkat(dfd, name, 0) == 0, "removing entry %ld: %s", i, strerror(errno));
    }
    MUST(close(dfd));
    MUST(rmdir("d"));
    free(seen);
    free(churn_seen);
    return CHECK_OK;
}

const struct check bigdir_checks[] = {
    {"readdir_churn", readdir_churn},
    {NULL, NULL},
};
