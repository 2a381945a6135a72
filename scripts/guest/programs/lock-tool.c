/* lock-tool: fcntl and flock locks for the lock tests, in a guest or on the host.
 *
 *   lock-tool hold FILE r|w START LEN HELD RELEASE   F_SETLK, create HELD, wait for RELEASE to exist, exit
 *   lock-tool getlk FILE r|w START LEN               print the first conflicting lock (or "unlocked")
 *   lock-tool setlk FILE r|w START LEN               F_SETLK once: "setlk: ok" or the error
 *   lock-tool wait FILE r|w START LEN [MARK]         F_SETLKW; then says whether MARK existed at the grant
 *   lock-tool flock-hold FILE HELD RELEASE           flock(LOCK_EX), as hold
 *   lock-tool flock-try FILE                         flock(LOCK_EX|LOCK_NB) once
 *   lock-tool flock-wait FILE [MARK]                 flock(LOCK_EX), as wait
 *
 * LEN 0 means to the end of the file. Exit status 0 when the lock was taken (or getlk
 * answered), 1 otherwise. Releasing is exiting: the close drops the lock.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static int open_file(const char *path, char type) {
    int fd = open(path, type == 'r' ? O_RDONLY : O_RDWR);
    if (fd < 0) { fprintf(stderr, "lock-tool: open %s: %s\n", path, strerror(errno)); exit(1); }
    return fd;
}

static struct flock range(char type, const char *start, const char *len) {
    struct flock fl = {0};
    fl.l_type = type == 'r' ? F_RDLCK : F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = strtoll(start, NULL, 0);
    fl.l_len = strtoll(len, NULL, 0);
    return fl;
}

static int exists(const char *path) { struct stat st; return stat(path, &st) == 0; }

static void touch(const char *path) {
    int fd = open(path, O_CREAT | O_WRONLY, 0644);
    if (fd < 0) { fprintf(stderr, "lock-tool: create %s: %s\n", path, strerror(errno)); exit(1); }
    close(fd);
}

/* Polls for RELEASE (every 50 ms, up to ten minutes: a bound only so a broken run ends). */
static void wait_for(const char *path) {
    for (int i = 0; i < 12000 && !exists(path); i++) usleep(50000);
}

static void granted(const char *what, const char *mark) {
    if (mark) printf("%s: granted, %s\n", what, exists(mark) ? "release seen" : "release NOT seen");
    else printf("%s: granted\n", what);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 3) { fprintf(stderr, "usage: see lock-tool.c\n"); return 2; }
    const char *cmd = argv[1], *path = argv[2];
    if (!strcmp(cmd, "hold") && argc == 8) {
        int fd = open_file(path, argv[3][0]);
        struct flock fl = range(argv[3][0], argv[4], argv[5]);
        if (fcntl(fd, F_SETLK, &fl) != 0) { printf("hold: %s\n", strerror(errno)); return 1; }
        touch(argv[6]);
        printf("hold: locked\n");
        wait_for(argv[7]);
        printf("hold: released\n");
        return 0;
    }
    if (!strcmp(cmd, "getlk") && argc == 6) {
        int fd = open_file(path, argv[3][0]);
        struct flock fl = range(argv[3][0], argv[4], argv[5]);
        if (fcntl(fd, F_GETLK, &fl) != 0) { printf("getlk: %s\n", strerror(errno)); return 1; }
        if (fl.l_type == F_UNLCK) { printf("getlk: unlocked\n"); return 0; }
        printf("getlk: %s start=%lld len=%lld pid=%d\n", fl.l_type == F_WRLCK ? "F_WRLCK" : "F_RDLCK",
               (long long)fl.l_start, (long long)fl.l_len, (int)fl.l_pid);
        return 0;
    }
    if (!strcmp(cmd, "setlk") && argc == 6) {
        int fd = open_file(path, argv[3][0]);
        struct flock fl = range(argv[3][0], argv[4], argv[5]);
        if (fcntl(fd, F_SETLK, &fl) != 0) { printf("setlk: %s\n", strerror(errno)); return 1; }
        printf("setlk: ok\n");
        return 0;
    }
    if (!strcmp(cmd, "wait") && (argc == 6 || argc == 7)) {
        int fd = open_file(path, argv[3][0]);
        struct flock fl = range(argv[3][0], argv[4], argv[5]);
        if (fcntl(fd, F_SETLKW, &fl) != 0) { printf("wait: %s\n", strerror(errno)); return 1; }
        granted("wait", argc == 7 ? argv[6] : NULL);
        return 0;
    }
    if (!strcmp(cmd, "flock-hold") && argc == 5) {
        int fd = open_file(path, 'r');
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) { printf("flock-hold: %s\n", strerror(errno)); return 1; }
        touch(argv[3]);
        printf("flock-hold: locked\n");
        wait_for(argv[4]);
        printf("flock-hold: released\n");
        return 0;
    }
    if (!strcmp(cmd, "flock-try") && argc == 3) {
        int fd = open_file(path, 'r');
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) { printf("flock-try: %s\n", strerror(errno)); return 1; }
        printf("flock-try: ok\n");
        return 0;
    }
    if (!strcmp(cmd, "flock-wait") && (argc == 3 || argc == 4)) {
        int fd = open_file(path, 'r');
        if (flock(fd, LOCK_EX) != 0) { printf("flock-wait: %s\n", strerror(errno)); return 1; }
        granted("flock-wait", argc == 4 ? argv[3] : NULL);
        return 0;
    }
    fprintf(stderr, "lock-tool: bad arguments (see lock-tool.c)\n");
    return 2;
}
