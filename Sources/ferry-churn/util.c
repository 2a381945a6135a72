/* Reporting, pseudo-random numbers, verifiable content, small I/O helpers. */
#include "churn.h"

#include <dirent.h>
#include <stdarg.h>
#include <time.h>

const struct config *cfg;
struct counts *me;
unsigned self;

const char *errno_name(int e)
{
    switch (e) {
    case 0: return "0";
    case ENOENT: return "ENOENT";
    case EEXIST: return "EEXIST";
    case ESTALE: return "ESTALE";
    case EIO: return "EIO";
    case ENOTEMPTY: return "ENOTEMPTY";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case EINVAL: return "EINVAL";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EBADF: return "EBADF";
    case ENOSPC: return "ENOSPC";
    case EMLINK: return "EMLINK";
    case ENFILE: return "ENFILE";
    case EMFILE: return "EMFILE";
    case EBUSY: return "EBUSY";
    case EXDEV: return "EXDEV";
    case ENOTCONN: return "ENOTCONN";
    case ENODEV: return "ENODEV";
    case ENXIO: return "ENXIO";
    case EROFS: return "EROFS";
    case EFBIG: return "EFBIG";
    case ELOOP: return "ELOOP";
    case ENOSYS: return "ENOSYS";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EAGAIN: return "EAGAIN";
    case EINTR: return "EINTR";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ECONNREFUSED: return "ECONNREFUSED";
    default: {
        static char other[32];
        snprintf(other, sizeof other, "errno %d", e);
        return other;
    }
    }
}

void fail(const char *op, const char *path, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    me->failures++;
    /* Only the first failures of a worker: one defect tends to repeat thousands of times. */
    if (me->failures <= 20)
        fprintf(stderr, "FAIL w%u %s %s: %s\n", self, op, path, msg);
    else if (me->failures == 21)
        fprintf(stderr, "FAIL w%u: more failures, not printed\n", self);
}

static uint64_t rnd_state;

void rnd_seed(uint64_t seed) { rnd_state = seed; }

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t rnd(void) { return splitmix(&rnd_state); }

static uint64_t fnv(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return h;
}

static void body_fill(char *out, size_t n, const char *id, unsigned gen)
{
    uint64_t s = fnv(id) ^ ((uint64_t)gen << 32) ^ gen;
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = splitmix(&s);
        size_t k = n - i < 8 ? n - i : 8;
        memcpy(out + i, &v, k);
    }
}

size_t content_make(char *buf, size_t cap, const char *id, unsigned gen, size_t body)
{
    int h = snprintf(buf, cap, "ferry-churn id=%s gen=%u body=%zu\n", id, gen, body);
    if (h < 0 || (size_t)h + body > cap)
        abort();
    body_fill(buf + h, body, id, gen);
    return (size_t)h + body;
}

int content_check(const char *buf, size_t len, const char *id, long want_gen, char *why, size_t whycap)
{
    char got_id[256];
    unsigned gen;
    size_t body;
    const char *nl = memchr(buf, '\n', len < 400 ? len : 400);
    if (!nl || sscanf(buf, "ferry-churn id=%255s gen=%u body=%zu\n", got_id, &gen, &body) != 3) {
        snprintf(why, whycap, "no content header in %zu bytes (first bytes: %.40s)", len,
                 len ? buf : "");
        return -1;
    }
    if (strcmp(got_id, id) != 0) {
        snprintf(why, whycap, "content belongs to %s gen %u, not %s", got_id, gen, id);
        return -1;
    }
    if (want_gen >= 0 && gen != (unsigned)want_gen) {
        snprintf(why, whycap, "content is generation %u, expected %ld", gen, want_gen);
        return -1;
    }
    size_t h = (size_t)(nl - buf) + 1;
    if (len != h + body) {
        snprintf(why, whycap, "%zu bytes, the header of gen %u says %zu", len, gen, h + body);
        return -1;
    }
    char *want = malloc(body + 1);
    body_fill(want, body, id, gen);
    size_t i = 0;
    while (i < body && want[i] == buf[h + i])
        i++;
    free(want);
    if (i < body) {
        snprintf(why, whycap, "gen %u differs at byte %zu of %zu", gen, h + i, len);
        return -1;
    }
    return 0;
}

int write_new(const char *op, const char *path, const char *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) {
        fail(op, path, "open(O_CREAT|O_EXCL): %s", errno_name(errno));
        return -1;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, buf + done, len - done);
        if (n <= 0) {
            fail(op, path, "write at %zu: %s", done, n < 0 ? errno_name(errno) : "wrote 0");
            close(fd);
            return -1;
        }
        done += (size_t)n;
    }
    if (close(fd) != 0) {
        fail(op, path, "close: %s", errno_name(errno));
        return -1;
    }
    return 0;
}

const char *read_all_step;

ssize_t read_all(const char *path, char *buf, size_t cap)
{
    read_all_step = "open";
    int fd = open(path, O_RDONLY | O_NOFOLLOW);
    if (fd < 0)
        return -1;
    read_all_step = "read";
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        if (n == 0 || (len += (size_t)n) == cap)
            break;
    }
    close(fd);
    return (ssize_t)len;
}

/* Every name in a directory but . and .., with its d_type; -1 with errno on failure. */
int list_dir(const char *path, char (**names)[256], unsigned char **types, size_t *count)
{
    DIR *d = opendir(path);
    if (!d)
        return -1;
    size_t cap = 64, n = 0;
    *names = malloc(cap * sizeof **names);
    *types = malloc(cap);
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (n == cap) {
            cap *= 2;
            *names = realloc(*names, cap * sizeof **names);
            *types = realloc(*types, cap);
        }
        snprintf((*names)[n], 256, "%s", e->d_name);
        (*types)[n++] = e->d_type;
        errno = 0;
    }
    int e2 = errno;
    closedir(d);
    *count = n;
    if (e2) {
        free(*names);
        free(*types);
        errno = e2;
        return -1;
    }
    return 0;
}

int time_is_up(void)
{
    static time_t end;
    if (!end)
        end = time(NULL) + cfg->seconds;
    if (time(NULL) < end)
        return 0;
    me->stopped_by_time = 1;
    return 1;
}
