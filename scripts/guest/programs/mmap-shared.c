/* mmap-shared: checks that a file can be mapped MAP_SHARED, read and written through the
 * mapping, and that what was written through it is what read(2) sees afterwards.
 *
 *   mmap-shared write FILE   make FILE (8 KiB of 'a'), map it shared read-write, check it
 *                            reads 'a', write 'B' over the second page, msync, unmap, and
 *                            check with read(2): 4 KiB of 'a' then 4 KiB of 'B'
 *   mmap-shared read FILE    map FILE shared read-only and print its first line
 *
 * Prints "mmap-shared: ok" and exits 0, or the failing step with strerror and exits 1.
 * Built with gcc -static for the test guest (build-image --extra). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { PAGE = 4096, SIZE = 2 * PAGE };

static int fail(const char *step) {
    printf("mmap-shared: %s: %s\n", step, strerror(errno));
    return 1;
}

static int writeThroughMapping(const char *path) {
    static char buffer[SIZE];
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return fail("open");
    memset(buffer, 'a', SIZE);
    if (write(fd, buffer, SIZE) != SIZE) return fail("write");
    char *map = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) return fail("mmap MAP_SHARED read-write");
    for (int i = 0; i < SIZE; i++) {
        if (map[i] != 'a') { errno = EIO; return fail("read through the mapping"); }
    }
    memset(map + PAGE, 'B', PAGE);
    if (msync(map, SIZE, MS_SYNC) != 0) return fail("msync");
    if (munmap(map, SIZE) != 0) return fail("munmap");
    if (close(fd) != 0) return fail("close");

    fd = open(path, O_RDONLY);
    if (fd < 0) return fail("reopen");
    if (read(fd, buffer, SIZE) != SIZE) return fail("read back");
    close(fd);
    for (int i = 0; i < SIZE; i++) {
        if (buffer[i] != (i < PAGE ? 'a' : 'B')) { errno = EIO; return fail("what the mapping wrote"); }
    }
    printf("mmap-shared: ok\n");
    return 0;
}

static int readThroughMapping(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return fail("open");
    off_t size = lseek(fd, 0, SEEK_END);
    if (size <= 0) { errno = EINVAL; return fail("size"); }
    char *map = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) return fail("mmap MAP_SHARED read-only");
    const char *end = memchr(map, '\n', (size_t)size);
    printf("mmap-shared: read %.*s\n", (int)(end ? end - map : size), map);
    munmap(map, (size_t)size);
    close(fd);
    printf("mmap-shared: ok\n");
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc == 3 && strcmp(argv[1], "write") == 0) return writeThroughMapping(argv[2]);
    if (argc == 3 && strcmp(argv[1], "read") == 0) return readThroughMapping(argv[2]);
    fprintf(stderr, "usage: mmap-shared write|read FILE\n");
    return 2;
}
