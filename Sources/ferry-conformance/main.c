/*
 * ferry-conformance: POSIX behaviours a correct file server must show, checked on a
 * directory (a FUSE or virtio-fs mount, or a native directory as the baseline).
 *
 *   ferry-conformance --list
 *   ferry-conformance --dir DIR [--check NAME]... [--skip NAME]... [--timeout SECONDS]
 *                     [--entries N]
 *
 * Each check runs in a forked child (its own process group, under alarm()) inside a
 * fresh subdirectory of DIR, so a hang or crash fails that check and not the suite.
 * Output: one "ok NAME" / "FAIL NAME: ..." / "skip NAME: ..." line per check, then
 * "N passed, N failed[, N skipped]". Exit status 1 if any check failed, 2 on bad usage.
 * --entries sets how many entries the wide-directory check lists (100,000 by default).
 */
#include "conformance.h"

#include <signal.h>
#include <sys/wait.h>

extern int report_fd;

/* The petabyte check comes last: a backend whose unlink cost follows the file's size stays
 * busy with it long after the check has given up, and nothing should run behind that. */
static const struct check *const tables[] = {
    io_checks, file_checks, name_checks, rename_checks, link_checks, attr_checks, proc_checks,
    owner_checks, time_checks, limit_checks, bigdir_checks, petabyte_checks,
};

long big_dir_entries = 100000;

#define FOREACH_CHECK(c) \
    for (size_t t_ = 0; t_ < sizeof tables / sizeof tables[0]; t_++) \
        for (const struct check *c = tables[t_]; c->name; c++)

static const struct check *find_check(const char *name)
{
    FOREACH_CHECK(c)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: ferry-conformance --list\n"
                 "       ferry-conformance --dir DIR [--check NAME]... [--skip NAME]... "
                 "[--timeout SECONDS] [--entries N]\n");
}

/* Collapse the child's report lines into one line for the summary format. */
static void drain(int fd, char *msg, size_t cap)
{
    size_t len = 0;
    msg[0] = '\0';
    for (;;) {
        char buf[512];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n && len + 3 < cap; i++) {
            if (buf[i] == '\n') {
                msg[len++] = ';';
                msg[len++] = ' ';
            } else {
                msg[len++] = buf[i];
            }
        }
    }
    while (len > 0 && (msg[len - 1] == ' ' || msg[len - 1] == ';'))
        len--;
    msg[len] = '\0';
}

static int run_one(const struct check *c, const char *dir, unsigned timeout)
{
    char path[4096], msg[8192];
    if (snprintf(path, sizeof path, "%s/%s.XXXXXX", dir, c->name) >= (int)sizeof path) {
        printf("FAIL %s: directory path too long\n", c->name);
        return CHECK_FAIL;
    }
    if (!mkdtemp(path)) {
        printf("FAIL %s: mkdtemp(%s): %s (%s)\n", c->name, path, errno_name(errno), strerror(errno));
        return CHECK_FAIL;
    }
    /* mkdtemp gives 0700; checks that drop privileges need to search their directory. */
    chmod(path, 0755);

    int pipefd[2];
    if (pipe(pipefd) < 0) {
        printf("FAIL %s: pipe: %s\n", c->name, strerror(errno));
        return CHECK_FAIL;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        printf("FAIL %s: fork: %s\n", c->name, strerror(errno));
        return CHECK_FAIL;
    }
    if (pid == 0) {
        setpgid(0, 0);
        close(pipefd[0]);
        report_fd = pipefd[1];
        umask(022);
        if (chdir(path) < 0) {
            report("chdir(%s): %s", path, strerror(errno));
            _exit(CHECK_FAIL);
        }
        alarm(timeout);
        _exit(c->run());
    }
    close(pipefd[1]);

    int status, result;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    /* Helpers a failed check left behind (lock holders, writers) must not outlive it. */
    kill(-pid, SIGKILL);
    fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
    drain(pipefd[0], msg, sizeof msg);
    close(pipefd[0]);

    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        size_t l = strlen(msg);
        snprintf(msg + l, sizeof msg - l, "%skilled by signal %d (%s)%s", l ? "; " : "", sig,
                 strsignal(sig), sig == SIGALRM ? ": timed out" : "");
        result = CHECK_FAIL;
    } else {
        result = WEXITSTATUS(status);
        if (result != CHECK_OK && result != CHECK_SKIP && result != CHECK_ABANDONED)
            result = CHECK_FAIL;
    }

    if (result == CHECK_ABANDONED) {
        size_t l = strlen(msg);
        snprintf(msg + l, sizeof msg - l, "%sleft %s in place: a request in it has not returned",
                 l ? "; " : "", path);
        result = CHECK_FAIL;
    } else if (remove_tree(path) < 0 && result == CHECK_OK) {
        snprintf(msg, sizeof msg, "cleanup: removing %s: %s (%s)", path, errno_name(errno),
                 strerror(errno));
        result = CHECK_FAIL;
    }

    if (result == CHECK_OK)
        printf("ok %s\n", c->name);
    else if (result == CHECK_SKIP)
        printf("skip %s: %s\n", c->name, msg[0] ? msg : "no reason given");
    else
        printf("FAIL %s: %s\n", c->name, msg[0] ? msg : "failed without a message");
    fflush(stdout);
    return result;
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    const char *only[512], *skip[512];
    size_t n_only = 0, n_skip = 0;
    unsigned timeout = 60;

    setvbuf(stdout, NULL, _IOLBF, 0);
    /*
     * Launchers (test runners, plugin hosts) may hand us a blocked signal mask or ignored
     * signals; the per-check alarm and the checks' own children need the defaults.
     */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGALRM, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--list") == 0) {
            FOREACH_CHECK(c)
                puts(c->name);
            return 0;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (i + 1 < argc && strcmp(a, "--dir") == 0) {
            dir = argv[++i];
        } else if (i + 1 < argc && strcmp(a, "--timeout") == 0) {
            timeout = (unsigned)strtoul(argv[++i], NULL, 10);
        } else if (i + 1 < argc && strcmp(a, "--entries") == 0) {
            big_dir_entries = strtol(argv[++i], NULL, 10);
            if (big_dir_entries < 1 || big_dir_entries > 1000000) {
                fprintf(stderr, "ferry-conformance: --entries takes 1 to 1000000\n");
                return 2;
            }
        } else if (i + 1 < argc && (strcmp(a, "--check") == 0 || strcmp(a, "--skip") == 0)) {
            const char *name = argv[++i];
            if (!find_check(name)) {
                fprintf(stderr, "ferry-conformance: no check named '%s' (see --list)\n", name);
                return 2;
            }
            if (a[2] == 'c' && n_only < 512)
                only[n_only++] = name;
            else if (a[2] == 's' && n_skip < 512)
                skip[n_skip++] = name;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!dir) {
        usage(stderr);
        return 2;
    }

    unsigned passed = 0, failed = 0, skipped = 0;
    FOREACH_CHECK(c) {
        int wanted = n_only == 0;
        for (size_t i = 0; i < n_only; i++)
            wanted |= strcmp(only[i], c->name) == 0;
        for (size_t i = 0; i < n_skip; i++)
            wanted &= strcmp(skip[i], c->name) != 0;
        if (!wanted)
            continue;
        switch (run_one(c, dir, timeout ? timeout : 60)) {
        case CHECK_OK: passed++; break;
        case CHECK_SKIP: skipped++; break;
        default: failed++; break;
        }
    }
    if (skipped)
        printf("%u passed, %u failed, %u skipped\n", passed, failed, skipped);
    else
        printf("%u passed, %u failed\n", passed, failed);
    return failed ? 1 : 0;
}
