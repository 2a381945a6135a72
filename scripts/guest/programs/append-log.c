/* The guest side of the live-migration tests: appends "line N\n" to a file through one open
 * descriptor, fsyncing it every 20 lines and printing "progress N" on the console then, until a
 * line arrives on the control serial port (the host sends one to the destination after the
 * move); then appends 100 lines more, closes, reads the file back and prints
 * "lines=N bad=M" (M: lines that are not "line <their index>"). Exit 0 when all is in order.
 *
 * usage: append-log FILE CONTROL-TTY [MAX-LINES]
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

static int told(int control) {
    char buffer[64];
    ssize_t n = read(control, buffer, sizeof buffer);
    return n > 0;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: append-log FILE CONTROL-TTY [MAX-LINES]\n"); return 2; }
    long max = argc > 3 ? atol(argv[3]) : 100000;
    int control = open(argv[2], O_RDONLY | O_NONBLOCK | O_NOCTTY);
    if (control < 0) { printf("open %s: %s\n", argv[2], strerror(errno)); return 1; }
    struct termios t;
    if (tcgetattr(control, &t) == 0) { t.c_lflag &= ~(tcflag_t)ECHO; tcsetattr(control, TCSANOW, &t); }
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0) { printf("open %s: %s\n", argv[1], strerror(errno)); return 1; }

    long i = 0, stop = -1;
    for (;;) {
        char line[32];
        int len = snprintf(line, sizeof line, "line %ld\n", i);
        ssize_t w = write(fd, line, (size_t)len);
        if (w != len) { printf("write failed at %ld: %s\n", i, w < 0 ? strerror(errno) : "short"); return 1; }
        i++;
        if (i % 20 == 0) {
            if (fsync(fd) != 0) { printf("fsync failed at %ld: %s\n", i, strerror(errno)); return 1; }
            printf("progress %ld\n", i);
            fflush(stdout);
        }
        if (stop < 0 && told(control)) { stop = i + 100; printf("told at %ld\n", i); fflush(stdout); }
        if (stop >= 0 && i >= stop) break;
        if (i >= max) { printf("never told to stop (%ld lines)\n", i); return 1; }
        usleep(5000);
    }
    if (fsync(fd) != 0 || close(fd) != 0) { printf("fsync/close failed: %s\n", strerror(errno)); return 1; }

    FILE *f = fopen(argv[1], "r");
    if (!f) { printf("reopen: %s\n", strerror(errno)); return 1; }
    char buffer[64], expected[32];
    long lines = 0, bad = 0;
    while (fgets(buffer, sizeof buffer, f)) {
        snprintf(expected, sizeof expected, "line %ld\n", lines);
        if (strcmp(buffer, expected) != 0) bad++;
        lines++;
    }
    fclose(f);
    printf("lines=%ld bad=%ld\n", lines, bad);
    return bad == 0 && lines == i ? 0 : 1;
}
