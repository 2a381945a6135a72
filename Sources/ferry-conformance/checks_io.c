/* Data-path checks: what reads return after writes, truncation, holes and copies. */
#include "conformance.h"

#include <sys/mman.h>

#define MiB (1024L * 1024L)

static int append(void)
{
    MUST(put_file("f", "hello", 5));
    int fd = open("f", O_WRONLY | O_APPEND);
    MUST(fd);
    /* O_APPEND must win over the file offset, even one we moved explicitly. */
    MUST(lseek(fd, 0, SEEK_SET));
    MUST_EQ(write(fd, "world", 5), 5);
    MUST_EQ(lseek(fd, 0, SEEK_CUR), 10);
    /* Linux appends pwrite() data on an O_APPEND fd regardless of the offset given. */
    MUST_EQ(pwrite(fd, "!!", 2, 1), 2);
    MUST(close(fd));
    if (!file_is("f", "helloworld!!"))
        return CHECK_FAIL;
    return CHECK_OK;
}

static int truncate_up_down(void)
{
    unsigned char pat[100], buf[10000];
    struct stat st;
    fill_pattern(pat, sizeof pat, 7);
    int fd = open("f", O_RDWR | O_CREAT, 0644);
    MUST(fd);
    MUST(write_all(fd, pat, sizeof pat));

    MUST(ftruncate(fd, 10000));
    MUST(fstat(fd, &st));
    MUST_EQ(st.st_size, 10000);
    MUST(pread_all(fd, buf, 10000, 0));
    MUST_TRUE(memcmp(buf, pat, 100) == 0, "ftruncate up changed the first 100 bytes");
    MUST_TRUE(is_zero(buf + 100, 9900), "ftruncate up: bytes 100..9999 are not zero");

    MUST(truncate("f", 50));
    MUST(stat("f", &st));
    MUST_EQ(st.st_size, 50);
    MUST_EQ(pread(fd, buf, sizeof buf, 0), 50);
    MUST_TRUE(memcmp(buf, pat, 50) == 0, "truncate down changed the remaining 50 bytes");
    MUST_EQ(pread(fd, buf, sizeof buf, 50), 0);

    /* Growing again must not resurrect the bytes cut off before. */
    MUST(truncate("f", 100));
    MUST(pread_all(fd, buf, 100, 0));
    MUST_TRUE(is_zero(buf + 50, 50), "truncate down then up: bytes 50..99 came back non-zero");

    MUST(ftruncate(fd, 0));
    MUST(fstat(fd, &st));
    MUST_EQ(st.st_size, 0);
    MUST(truncate("f", MiB + 3));
    MUST(stat("f", &st));
    MUST_EQ(st.st_size, MiB + 3);
    MUST(pread_all(fd, buf, 3, MiB));
    MUST_TRUE(is_zero(buf, 3), "the last bytes after truncate up are not zero");
    MUST(close(fd));
    return CHECK_OK;
}

static int sparse_file(void)
{
    const off_t GiB = 1024L * MiB;
    unsigned char pat[4096], buf[65536];
    struct stat st;
    fill_pattern(pat, sizeof pat, 11);
    int fd = open("f", O_RDWR | O_CREAT, 0644);
    MUST(fd);
    MUST(pwrite_all(fd, pat, sizeof pat, GiB));
    MUST(fstat(fd, &st));
    MUST_EQ(st.st_size, GiB + 4096);
    MUST(stat("f", &st));
    MUST_EQ(st.st_size, GiB + 4096);
    /* 1 GiB allocated would be 2M blocks; anything under 1 MiB means the hole is real. */
    MUST_TRUE(st.st_blocks < 2048, "st_blocks = %lld for one 4 KiB block at 1 GiB; expected a hole",
              (long long)st.st_blocks);
    const off_t probes[] = {0, 4096, 512 * MiB + 123, GiB - (off_t)sizeof buf};
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        memset(buf, 0xaa, sizeof buf);
        MUST(pread_all(fd, buf, sizeof buf, probes[i]));
        MUST_TRUE(is_zero(buf, sizeof buf), "reading the hole at %lld gave non-zero bytes",
                  (long long)probes[i]);
    }
    MUST(pread_all(fd, buf, 4096, GiB));
    MUST_TRUE(memcmp(buf, pat, 4096) == 0, "the data at 1 GiB reads back different");
    MUST(close(fd));
    return CHECK_OK;
}

static int big_random_file(void)
{
    const size_t size = 48 * MiB;
    unsigned char *data = malloc(size), *back = malloc(size);
    MUST_TRUE(data && back, "cannot allocate 2 x 48 MiB");
    fill_pattern(data, size, 0x5eed1234abcdull);

    int fd = open("big", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    MUST(fd);
    /* Odd chunk sizes so no write lines up with a page or a FUSE max_write. */
    uint64_t rng = 42;
    size_t off = 0;
    while (off < size) {
        size_t chunk = 1 + xorshift64(&rng) % 200003;
        if (chunk > size - off)
            chunk = size - off;
        MUST(write_all(fd, data + off, chunk));
        off += chunk;
    }
    MUST(close(fd));

    struct stat st;
    MUST(stat("big", &st));
    MUST_EQ(st.st_size, (long long)size);

    fd = open("big", O_RDONLY);
    MUST(fd);
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, back + got, size - got > 1000003 ? 1000003 : size - got);
        if (n < 0 && errno == EINTR)
            continue;
        MUST(n);
        MUST_TRUE(n > 0, "sequential read hit EOF at %zu of %zu", got, size);
        got += n;
    }
    char extra;
    MUST_EQ(read(fd, &extra, 1), 0);
    long d = first_difference(data, back, size);
    MUST_TRUE(d < 0, "sequential read: first wrong byte at offset %ld", d);

    for (int i = 0; i < 2000; i++) {
        size_t len = 1 + xorshift64(&rng) % 300007;
        size_t at = xorshift64(&rng) % size;
        if (len > size - at)
            len = size - at;
        MUST(pread_all(fd, back, len, at));
        d = first_difference(data + at, back, len);
        MUST_TRUE(d < 0, "pread #%d (%zu bytes at %zu): first wrong byte at offset %zu", i, len,
                  at, at + d);
    }
    MUST(close(fd));
    free(data);
    free(back);
    MUST(unlink("big"));
    return CHECK_OK;
}

static int mmap_shared(void)
{
    const size_t len = 64 * 1024 + 100;
    unsigned char pat[64 * 1024 + 100], buf[64 * 1024 + 100];
    fill_pattern(pat, len, 99);
    int fd = open("f", O_RDWR | O_CREAT, 0644);
    MUST(fd);
    MUST(ftruncate(fd, len));
    unsigned char *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    MUST_TRUE(map != MAP_FAILED, "mmap MAP_SHARED: %s", strerror(errno));
    memcpy(map, pat, len);
    MUST(msync(map, len, MS_SYNC));
    MUST(munmap(map, len));
    MUST(close(fd));

    /* A fresh open, so the bytes must come from the file, not the mapping. */
    MUST_EQ(get_file("f", buf, sizeof buf), (long long)len);
    long d = first_difference(pat, buf, len);
    MUST_TRUE(d < 0, "read() after msync: first wrong byte at %ld", d);

    /* And the other direction: a write() must show through a new mapping. */
    fd = open("f", O_RDWR);
    MUST(fd);
    MUST(pwrite_all(fd, "MAPPED", 6, 4096));
    map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    MUST_TRUE(map != MAP_FAILED, "mmap read-only: %s", strerror(errno));
    MUST_TRUE(memcmp(map + 4096, "MAPPED", 6) == 0, "mapping does not show data written with write()");
    MUST(munmap(map, len));
    MUST(close(fd));
    return CHECK_OK;
}

static int fsync_and_fdatasync(void)
{
    unsigned char pat[100000], buf[100000];
    fill_pattern(pat, sizeof pat, 3);
    int fd = open("f", O_RDWR | O_CREAT, 0644);
    MUST(fd);
    MUST(write_all(fd, pat, sizeof pat));
    MUST(fsync(fd));
    MUST(pwrite_all(fd, "x", 1, 5));
    pat[5] = 'x';
    MUST(fdatasync(fd));
    MUST(close(fd));

    /* fsync on a read-only descriptor and on a directory is legal and used by editors. */
    fd = open("f", O_RDONLY);
    MUST(fd);
    MUST(fsync(fd));
    MUST(fdatasync(fd));
    MUST(close(fd));
    int dfd = open(".", O_RDONLY | O_DIRECTORY);
    MUST(dfd);
    MUST(fsync(dfd));
    MUST(close(dfd));

    MUST_EQ(get_file("f", buf, sizeof buf), (long long)sizeof buf);
    MUST_TRUE(memcmp(buf, pat, sizeof pat) == 0, "data after fsync/fdatasync differs");
    return CHECK_OK;
}

static int fallocate_punch_hole(void)
{
    const size_t len = MiB;
    unsigned char *pat = malloc(len), *buf = malloc(len);
    struct stat st;
    MUST_TRUE(pat && buf, "malloc");
    fill_pattern(pat, len, 17);
    int fd = open("f", O_RDWR | O_CREAT, 0644);
    MUST(fd);
    MUST(fallocate(fd, 0, 0, len));
    MUST(fstat(fd, &st));
    MUST_EQ(st.st_size, (long long)len);
    MUST(pread_all(fd, buf, len, 0));
    MUST_TRUE(is_zero(buf, len), "fallocated range does not read as zeros");

    MUST(pwrite_all(fd, pat, len, 0));
    /* KEEP_SIZE beyond EOF reserves space without changing the size. */
    MUST(fallocate(fd, FALLOC_FL_KEEP_SIZE, len, len));
    MUST(fstat(fd, &st));
    MUST_EQ(st.st_size, (long long)len);

    const off_t hole = 64 * 1024, hole_len = 192 * 1024;
    MUST(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, hole, hole_len));
    MUST(fstat(fd, &st));
    MUST_EQ(st.st_size, (long long)len);
    MUST(pread_all(fd, buf, len, 0));
    MUST_TRUE(memcmp(buf, pat, hole) == 0, "bytes before the punched hole changed");
    MUST_TRUE(is_zero(buf + hole, hole_len), "the punched hole does not read as zeros");
    MUST_TRUE(memcmp(buf + hole + hole_len, pat + hole + hole_len, len - hole - hole_len) == 0,
              "bytes after the punched hole changed");
    /* Without KEEP_SIZE, punching is invalid by definition. */
    MUST_ERRNO(fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 4096), EOPNOTSUPP);
    MUST(close(fd));
    free(pat);
    free(buf);
    return CHECK_OK;
}

static int seek_data_hole(void)
{
    const off_t second = 8 * MiB;
    unsigned char pat[4096];
    fill_pattern(pat, sizeof pat, 5);
    int fd = open("f", O_RDWR | O_CREAT, 0644);
    MUST(fd);
    MUST(pwrite_all(fd, pat, sizeof pat, 0));
    MUST(pwrite_all(fd, pat, sizeof pat, second));
    MUST(fsync(fd));

    off_t h = lseek(fd, 0, SEEK_HOLE);
    MUST(h);
    MUST_TRUE(h >= 4096 && h < second,
              "SEEK_HOLE from 0: expected a hole in [4096, %lld), got %lld", (long long)second,
              (long long)h);
    off_t d = lseek(fd, h, SEEK_DATA);
    MUST(d);
    /* Allow allocation granularity: data may be reported from a block boundary below. */
    MUST_TRUE(d > h && d <= second && d > second - MiB,
              "SEEK_DATA from the hole at %lld: expected about %lld, got %lld", (long long)h,
              (long long)second, (long long)d);
    off_t end = lseek(fd, second, SEEK_HOLE);
    MUST_EQ(end, (long long)second + 4096);
    MUST_EQ(lseek(fd, 0, SEEK_DATA), 0);
    MUST_ERRNO(lseek(fd, second + 4096, SEEK_DATA), ENXIO);
    MUST(close(fd));
    return CHECK_OK;
}

static int copy_file_range_check(void)
{
    const size_t len = 3 * MiB + 17, src_len = 4 * MiB;
    const off_t src_off = 12345, dst_off = 777;
    unsigned char *pat = malloc(src_len), *buf = malloc(len + dst_off);
    MUST_TRUE(pat && buf, "malloc");
    fill_pattern(pat, src_len, 23);
    MUST(put_file("src", pat, src_len));
    MUST(put_file("dst", "0123456789", 10));

    int in = open("src", O_RDONLY), out = open("dst", O_RDWR);
    MUST(in);
    MUST(out);
    loff_t ioff = src_off, ooff = dst_off;
    size_t left = len;
    while (left > 0) {
        ssize_t n = copy_file_range(in, &ioff, out, &ooff, left, 0);
        MUST(n);
        MUST_TRUE(n > 0, "copy_file_range returned 0 with %zu bytes left", left);
        left -= n;
    }
    MUST_EQ(ioff, src_off + (off_t)len);
    MUST_EQ(ooff, dst_off + (off_t)len);
    struct stat st;
    MUST(fstat(out, &st));
    MUST_EQ(st.st_size, dst_off + (off_t)len);
    MUST(close(out));
    MUST(close(in));

    MUST_EQ(get_file("dst", buf, len + dst_off), (long long)(len + dst_off));
    MUST_TRUE(memcmp(buf, "0123456789", 10) == 0, "copy_file_range changed bytes before the target offset");
    MUST_TRUE(is_zero(buf + 10, dst_off - 10), "the gap before the target offset is not zero");
    long diff = first_difference(buf + dst_off, pat + src_off, len);
    MUST_TRUE(diff < 0, "copied range: first wrong byte at %ld", diff);
    free(pat);
    free(buf);
    return CHECK_OK;
}

/*
 * O_DIRECT with block-aligned buffers, offsets and lengths (what databases and QEMU do):
 * data round-trips, a direct write is seen through a descriptor that had cached the old
 * bytes, a buffered write is seen by a direct read, and a direct read at end of file is
 * short. Unaligned direct I/O is left out: ext4 refuses it and FUSE accepts it.
 */
static int o_direct(void)
{
    const size_t blk = 4096, len = 64 * blk;
    unsigned char *pat, *buf;
    MUST_TRUE(posix_memalign((void **)&pat, blk, len) == 0 && posix_memalign((void **)&buf, blk, len) == 0,
              "posix_memalign");
    fill_pattern(pat, len, 31);
    int fd = open("f", O_RDWR | O_CREAT | O_EXCL | O_DIRECT, 0644);
    MUST(fd);
    int flags = fcntl(fd, F_GETFL);
    MUST(flags);
    MUST_TRUE(flags & O_DIRECT, "F_GETFL does not show O_DIRECT (flags 0%o)", flags);
    MUST(pwrite_all(fd, pat, len, 0));
    MUST(pread_all(fd, buf, len, 0));
    long d = first_difference(pat, buf, len);
    MUST_TRUE(d < 0, "direct read after direct write: first wrong byte at %ld", d);

    /* A buffered descriptor caches the file; a direct write must not leave it stale. */
    int cached = open("f", O_RDWR);
    MUST(cached);
    MUST(pread_all(cached, buf, len, 0));
    MUST_TRUE(first_difference(pat, buf, len) < 0, "buffered read of direct-written data differs");
    fill_pattern(pat + 16 * blk, 2 * blk, 32);
    MUST(pwrite_all(fd, pat + 16 * blk, 2 * blk, 16 * blk));
    MUST(pread_all(cached, buf, len, 0));
    d = first_difference(pat, buf, len);
    MUST_TRUE(d < 0, "buffered read after an overlapping direct write: first wrong byte at %ld", d);

    /* A buffered write still in the page cache is what a direct read returns. */
    MUST(pwrite_all(cached, "buffered", 8, 3 * blk + 100));
    memcpy(pat + 3 * blk + 100, "buffered", 8);
    MUST(pread_all(fd, buf, blk, 3 * blk));
    d = first_difference(pat + 3 * blk, buf, blk);
    MUST_TRUE(d < 0, "direct read after a buffered write: first wrong byte at %ld", 3 * (long)blk + d);

    /* The file ends 100 bytes into a block: a direct read there is short, past it empty. */
    MUST(pwrite_all(cached, pat, 100, len));
    MUST(fsync(cached));
    memset(buf, 0xee, 2 * blk);
    MUST_EQ(pread(fd, buf, 2 * blk, len), 100);
    MUST_TRUE(memcmp(buf, pat, 100) == 0, "direct read of the last 100 bytes differs");
    MUST_EQ(pread(fd, buf, blk, len + blk), 0);
    struct stat st;
    MUST(fstat(fd, &st));
    MUST_EQ(st.st_size, (long long)(len + 100));

    /* O_DIRECT can be switched on later with F_SETFL. */
    MUST(fcntl(cached, F_SETFL, fcntl(cached, F_GETFL) | O_DIRECT));
    MUST_TRUE(fcntl(cached, F_GETFL) & O_DIRECT, "F_SETFL O_DIRECT did not stick");
    MUST(pread_all(cached, buf, len, 0));
    d = first_difference(pat, buf, len);
    MUST_TRUE(d < 0, "direct read through F_SETFL O_DIRECT: first wrong byte at %ld", d);
    MUST(close(cached));
    MUST(close(fd));
    free(pat);
    free(buf);
    return CHECK_OK;
}

const struct check io_checks[] = {
    {"append", append},
    {"truncate_up_down", truncate_up_down},
    {"sparse_file", sparse_file},
    {"big_random_file", big_random_file},
    {"mmap_shared", mmap_shared},
    {"fsync_and_fdatasync", fsync_and_fdatasync},
    {"fallocate_punch_hole", fallocate_punch_hole},
    {"seek_data_hole", seek_data_hole},
    {"copy_file_range", copy_file_range_check},
    {"o_direct", o_direct},
    {NULL, NULL},
};
