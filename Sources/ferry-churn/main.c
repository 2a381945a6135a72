/*
 * ferry-churn: several processes creating, replacing, renaming, hard-linking, deleting
 * and listing in shared and in private directories while the others look up, stat and
 * read; create/delete churn that reuses inode numbers; rm -rf of whole trees while the
 * others work. Every check that fails is printed with its operation and path.
 *
 *   ferry-churn --dir DIR [--workers N] [--ops N] [--seconds S] [--seed N]
 *               [--tree-width N] [--trees N]
 *
 * --ops bounds each worker's operations; --seconds is only a safety net (a run it cuts
 * short says so, and still fails only on failed checks). Same seed, same choices.
 * Output: FAIL lines, then one summary line "ferry-churn: ... N failures". Exit status 0
 * only if every check passed and nothing was left behind; 1 on a failure; 2 on bad usage.
 */
#include "churn.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>

static void usage(void)
{
    fprintf(stderr, "usage: ferry-churn --dir DIR [--workers N] [--ops N] [--seconds S] [--seed N] "
                    "[--tree-width N] [--trees N]\n");
    exit(2);
}

static unsigned number(const char *s)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (!*s || *end || v > 1000000000UL)
        usage();
    return (unsigned)v;
}

/* After the workers: every directory of the run must be empty, then it is removed. */
static void sweep(const char *root, unsigned workers)
{
    char dir[4096];
    for (unsigned i = 0; i < NSHARED + workers; i++) {
        if (i < NSHARED)
            snprintf(dir, sizeof dir, "%s/s%u", root, i);
        else
            snprintf(dir, sizeof dir, "%s/p%u", root, i - NSHARED);
        char (*names)[256];
        unsigned char *types;
        size_t count;
        if (list_dir(dir, &names, &types, &count) != 0) {
            fail("sweep", dir, "readdir: %s", errno_name(errno));
            continue;
        }
        for (size_t k = 0; k < count; k++)
            fail("sweep", dir, "left behind after every worker removed what it made: %s", names[k]);
        free(names);
        free(types);
        if (count == 0 ? rmdir(dir) != 0 : remove_tree(dir, 0) != 0)
            fail("sweep", dir, "rmdir: %s", errno_name(errno));
    }
    if (rmdir(root) != 0)
        fail("sweep", root, "rmdir: %s", errno_name(errno));
}

int main(int argc, char **argv)
{
    static struct config c = { .workers = 4, .ops = 1000, .seconds = 600, .tree_width = 20, .trees = 1 };
    const char *dir = NULL;
    int seeded = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (strcmp(a, "--dir") == 0) dir = v;
        else if (strcmp(a, "--workers") == 0) c.workers = number(v);
        else if (strcmp(a, "--ops") == 0) c.ops = number(v);
        else if (strcmp(a, "--seconds") == 0) c.seconds = number(v);
        else if (strcmp(a, "--seed") == 0) c.seed = number(v), seeded = 1;
        else if (strcmp(a, "--tree-width") == 0) c.tree_width = number(v);
        else if (strcmp(a, "--trees") == 0) c.trees = number(v);
        else usage();
    }
    if (!dir || c.workers == 0 || c.workers > MAXWORKERS || c.seconds == 0)
        usage();
    if (!seeded)
        c.seed = (uint64_t)time(NULL) ^ (uint64_t)getpid() << 16;
    c.seed %= 1000000000ULL;

    char root[4096];
    snprintf(root, sizeof root, "%s/churn-%llu-%d", dir, (unsigned long long)c.seed, (int)getpid());
    c.root = root;
    cfg = &c;
    struct counts *all = mmap(NULL, sizeof *all * (c.workers + 1), PROT_READ | PROT_WRITE,
                              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (all == MAP_FAILED) {
        perror("ferry-churn: mmap");
        return 1;
    }
    memset(all, 0, sizeof *all * (c.workers + 1));
    self = c.workers;
    me = &all[c.workers];   /* the parent's own failures */
    setvbuf(stderr, NULL, _IOLBF, 0);
    printf("ferry-churn: seed %llu, %u workers x %u ops, %u tree(s) of %u x %u each, in %s\n",
           (unsigned long long)c.seed, c.workers, c.ops, c.trees, c.tree_width, c.tree_width, root);
    fflush(stdout);

    char path[4200];
    if (mkdir(root, 0755) != 0) {
        fail("setup", root, "mkdir: %s", errno_name(errno));
        return 1;
    }
    for (unsigned i = 0; i < NSHARED + c.workers; i++) {
        if (i < NSHARED)
            snprintf(path, sizeof path, "%s/s%u", root, i);
        else
            snprintf(path, sizeof path, "%s/p%u", root, i - NSHARED);
        if (mkdir(path, 0755) != 0) {
            fail("setup", path, "mkdir: %s", errno_name(errno));
            return 1;
        }
    }

    pid_t pids[MAXWORKERS];
    for (unsigned i = 0; i < c.workers; i++) {
        pids[i] = fork();
        if (pids[i] < 0) {
            fail("setup", root, "fork: %s", errno_name(errno));
            pids[i] = 0;
            continue;
        }
        if (pids[i] == 0) {
            self = i;
            me = &all[i];
            rnd_seed(c.seed * 1000003ULL + i + 1);
            worker_run();
            _exit(0);
        }
    }
    struct counts sum = { 0 };
    int stopped = 0;
    for (unsigned i = 0; i < c.workers; i++) {
        int status;
        if (pids[i] == 0)
            continue;
        while (waitpid(pids[i], &status, 0) < 0 && errno == EINTR)
            ;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            self = i;
            fail("exit", root, "worker ended with %s %d", WIFEXITED(status) ? "status" : "signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
            self = c.workers;
        }
        stopped |= all[i].stopped_by_time;
    }
    sweep(root, c.workers);
    for (unsigned i = 0; i <= c.workers; i++) {
        uint64_t *d = &sum.ops, *s = &all[i].ops;
        for (size_t k = 0; k < offsetof(struct counts, stopped_by_time) / sizeof(uint64_t); k++)
            d[k] += s[k];
    }
    printf("ferry-churn: %llu ops (%llu creates, %llu replaces, %llu renames, %llu links, %llu unlinks, "
           "%llu mkdirs, %llu rmdirs, %llu listings, %llu lookups, %llu reads, %llu verifies, "
           "%llu/%llu creates got a freed inode number, %llu trees of %llu entries removed)%s, "
           "%llu failures\n",
           (unsigned long long)sum.ops, (unsigned long long)sum.creates, (unsigned long long)sum.replaces,
           (unsigned long long)sum.renames, (unsigned long long)sum.links, (unsigned long long)sum.unlinks,
           (unsigned long long)sum.mkdirs, (unsigned long long)sum.rmdirs, (unsigned long long)sum.readdirs,
           (unsigned long long)sum.lookups, (unsigned long long)sum.reads, (unsigned long long)sum.verifies,
           (unsigned long long)sum.reuse_seen, (unsigned long long)sum.reuse_rounds,
           (unsigned long long)sum.trees, (unsigned long long)sum.tree_entries,
           stopped ? " (cut short by --seconds)" : "", (unsigned long long)sum.failures);
    return sum.failures ? 1 : 0;
}
