/*
 * Timestamps a backend must store exactly: a symlink's own, before 1970 and after 2038, and
 * attributes changed through a descriptor whose name is gone. Results are read back with
 * lstat_fresh/fstat_fresh, so a server that echoes the request instead of what it stored
 * fails.
 */
#include "conformance.h"

#include <sys/xattr.h>
#include <time.h>

static int expect_times(const char *what, const struct stat *st, const struct timespec ts[2])
{
    MUST_TRUE(st->st_atim.tv_sec == ts[0].tv_sec && st->st_atim.tv_nsec == ts[0].tv_nsec,
              "%s: atime expected %lld.%09ld, got %lld.%09ld", what, (long long)ts[0].tv_sec,
              ts[0].tv_nsec, (long long)st->st_atim.tv_sec, st->st_atim.tv_nsec);
    MUST_TRUE(st->st_mtim.tv_sec == ts[1].tv_sec && st->st_mtim.tv_nsec == ts[1].tv_nsec,
              "%s: mtime expected %lld.%09ld, got %lld.%09ld", what, (long long)ts[1].tv_sec,
              ts[1].tv_nsec, (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
    return CHECK_OK;
}

static int expect_path_times(const char *path, const struct timespec ts[2])
{
    struct stat st;
    MUST(lstat_fresh(path, &st));
    return expect_times(path, &st, ts);
}

/* utimensat(AT_SYMLINK_NOFOLLOW) sets a symlink's own times (lutimes, touch -h, cp -a, tar,
 * rsync -a all use it) and leaves its target alone; without the flag it sets the target's.
 * Nothing here follows the link before its atime is read: following updates it (relatime). */
static int utimensat_symlink(void)
{
    const struct timespec file_ts[2] = {{1600000000, 111}, {1600000001, 222}};
    MUST(put_file("f", "x", 1));
    MUST(utimensat(AT_FDCWD, "f", file_ts, 0));
    MUST(symlink("f", "l"));
    const struct timespec link_ts[2] = {{1000000000, 123456789}, {1100000000, 987654321}};
    MUST(utimensat(AT_FDCWD, "l", link_ts, AT_SYMLINK_NOFOLLOW));
    EXPECT(expect_path_times("l", link_ts));
    EXPECT(expect_path_times("f", file_ts));

    /* UTIME_OMIT keeps one time exactly; UTIME_NOW takes the clock. */
    const struct timespec omit_mtime[2] = {{0, UTIME_OMIT}, {1200000000, 5}};
    MUST(utimensat(AT_FDCWD, "l", omit_mtime, AT_SYMLINK_NOFOLLOW));
    const struct timespec after_omit[2] = {link_ts[0], omit_mtime[1]};
    EXPECT(expect_path_times("l", after_omit));
    time_t now = time(NULL);
    const struct timespec now_omit[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
    MUST(utimensat(AT_FDCWD, "l", now_omit, AT_SYMLINK_NOFOLLOW));
    struct stat st;
    MUST(lstat_fresh("l", &st));
    MUST_TRUE(st.st_mtim.tv_sec >= now - 5 && st.st_mtim.tv_sec <= now + 5,
              "UTIME_NOW on the symlink: mtime %lld is not near now %lld",
              (long long)st.st_mtim.tv_sec, (long long)now);
    MUST_TRUE(st.st_atim.tv_sec == link_ts[0].tv_sec && st.st_atim.tv_nsec == link_ts[0].tv_nsec,
              "UTIME_OMIT on the symlink's atime changed it to %lld.%09ld",
              (long long)st.st_atim.tv_sec, st.st_atim.tv_nsec);
    EXPECT(expect_path_times("f", file_ts));

    /* A dangling symlink has times of its own too. */
    MUST(symlink("nowhere", "dangling"));
    MUST(utimensat(AT_FDCWD, "dangling", link_ts, AT_SYMLINK_NOFOLLOW));
    EXPECT(expect_path_times("dangling", link_ts));

    /* Without the flag the target's times change, and the link's mtime stays. */
    MUST(lstat_fresh("l", &st));
    const struct timespec through[2] = {{1300000000, 1}, {1400000000, 2}};
    MUST(utimensat(AT_FDCWD, "l", through, 0));
    EXPECT(expect_path_times("f", through));
    struct stat after;
    MUST(lstat_fresh("l", &after));
    MUST_TRUE(after.st_mtim.tv_sec == st.st_mtim.tv_sec && after.st_mtim.tv_nsec == st.st_mtim.tv_nsec,
              "utimensat through the symlink changed the link's own mtime");
    return CHECK_OK;
}

/* EOVERFLOW, EINVAL or ERANGE: the file system says it cannot store this time. */
static int refuses_time(int err) { return err == EOVERFLOW || err == EINVAL || err == ERANGE; }

/*
 * Sets each pair of times on one file and reads them back exactly. A time the file system
 * refuses (see refuses_time) must leave the stored times as they were; the check then
 * reports a skip naming what was refused, after verifying everything else. A time stored
 * wrongly (clamped, wrapped to unsigned, rounded) fails.
 */
static int times_round_trip(const struct timespec (*pairs)[2], size_t count)
{
    char refused[512] = "";
    size_t refused_len = 0;
    const struct timespec start[2] = {{1500000000, 1}, {1500000000, 2}};
    const struct timespec *stored = start;
    MUST(put_file("f", "x", 1));
    MUST(utimensat(AT_FDCWD, "f", start, 0));
    for (size_t i = 0; i < count; i++) {
        char times[80], what[96];
        snprintf(times, sizeof times, "atime %lld.%09ld, mtime %lld.%09ld",
                 (long long)pairs[i][0].tv_sec, pairs[i][0].tv_nsec, (long long)pairs[i][1].tv_sec,
                 pairs[i][1].tv_nsec);
        snprintf(what, sizeof what, "after setting %s", times);
        errno = 0;
        if (utimensat(AT_FDCWD, "f", pairs[i], 0) < 0) {
            int e = errno;
            MUST_TRUE(refuses_time(e), "utimensat(%s): %s (%s)", times, errno_name(e), strerror(e));
            if (refused_len < sizeof refused - 1)
                refused_len += snprintf(refused + refused_len, sizeof refused - refused_len,
                                        "%s%lld/%lld: %s", refused_len ? ", " : "",
                                        (long long)pairs[i][0].tv_sec,
                                        (long long)pairs[i][1].tv_sec, errno_name(e));
            EXPECT(expect_path_times("f", stored));
            continue;
        }
        stored = pairs[i];
        struct stat st;
        MUST(lstat_fresh("f", &st));
        EXPECT(expect_times(what, &st, stored));
    }
    if (refused_len)
        SKIP("the file system refused these times (seconds atime/mtime): %s", refused);
    return CHECK_OK;
}

/* Negative seconds, including -1 with a positive nanosecond part (23:59:59.5 on 31 Dec
 * 1969) where floor and truncation differ, back to 1906 (ext4 stores from 1901). */
static int times_before_1970(void)
{
    static const struct timespec pairs[][2] = {
        {{-1, 500000000}, {-2, 999999999}},
        {{-31536000, 1}, {-86400, 123456789}},
        {{-2000000000, 999999999}, {-1999999999, 0}},
    };
    return times_round_trip(pairs, sizeof pairs / sizeof pairs[0]);
}

/* Past the signed 32-bit limit (19 Jan 2038), past the unsigned one (7 Feb 2106), to 2200
 * (ext4 stores until 2446). */
static int times_after_2038(void)
{
    static const struct timespec pairs[][2] = {
        {{2147483647, 999999999}, {2147483648, 1}},
        {{4102444800, 123456789}, {4294967295, 999999999}},
        {{4294967296, 5}, {7258118400, 999999999}},
    };
    return times_round_trip(pairs, sizeof pairs / sizeof pairs[0]);
}

/* fchmod, futimens, fchown and fsetxattr reach the inode an open descriptor holds after its
 * last name is gone, and never a new file that took the name. */
static int unlinked_fd_attributes(void)
{
    struct stat st;
    char buf[16];
    int fd = open("f", O_RDWR | O_CREAT | O_EXCL, 0644);
    MUST(fd);
    MUST(write_all(fd, "data", 4));
    MUST(unlink("f"));

    MUST(fchmod(fd, 0600));
    MUST(fstat_fresh(fd, &st));
    MUST_EQ(st.st_mode & 07777, 0600);
    MUST_EQ(st.st_nlink, 0);
    const struct timespec ts[2] = {{1111111111, 1}, {1222222222, 2}};
    MUST(futimens(fd, ts));
    MUST(fstat_fresh(fd, &st));
    EXPECT(expect_times("the unlinked file after futimens", &st, ts));
    MUST(fchown(fd, 1234, 5678));
    MUST(fstat_fresh(fd, &st));
    MUST_EQ(st.st_uid, 1234);
    MUST_EQ(st.st_gid, 5678);

    /* A new file under the old name is a different inode and stays untouched. */
    MUST(put_file("f", "new", 3));
    MUST(chmod("f", 0644));
    struct stat fresh;
    MUST(lstat_fresh("f", &fresh));
    MUST(fchmod(fd, 0640));
    const struct timespec later[2] = {{1333333333, 3}, {1444444444, 4}};
    MUST(futimens(fd, later));
    MUST(fstat_fresh(fd, &st));
    MUST_EQ(st.st_mode & 07777, 0640);
    EXPECT(expect_times("the unlinked file after a second futimens", &st, later));
    struct stat now;
    MUST(lstat_fresh("f", &now));
    MUST_EQ(now.st_mode & 07777, 0644);
    MUST_EQ(now.st_uid, 0);
    MUST_TRUE(now.st_mtim.tv_sec == fresh.st_mtim.tv_sec && now.st_mtim.tv_nsec == fresh.st_mtim.tv_nsec,
              "futimens on the unlinked descriptor changed the new file's mtime");
    MUST_TRUE(now.st_ino != st.st_ino, "the new file has the unlinked file's inode number %llu",
              (unsigned long long)st.st_ino);

    /* Extended attributes too, where the file system has them (xattr_create_replace says
     * when it has not). */
    if (fsetxattr(fd, "user.k", "v1", 2, 0) == 0) {
        MUST_EQ(fgetxattr(fd, "user.k", buf, sizeof buf), 2);
        MUST_TRUE(memcmp(buf, "v1", 2) == 0, "fgetxattr on the unlinked file gave \"%.2s\"", buf);
        MUST_ERRNO(getxattr("f", "user.k", buf, sizeof buf), ENODATA);
        MUST(fremovexattr(fd, "user.k"));
        MUST_ERRNO(fgetxattr(fd, "user.k", buf, sizeof buf), ENODATA);
    } else {
        int e = errno;
        MUST_TRUE(e == ENOTSUP, "fsetxattr on the unlinked file: %s (%s)", errno_name(e), strerror(e));
        MUST_ERRNO(setxattr("f", "user.k", "v1", 2, 0), ENOTSUP);
    }

    MUST(pread_all(fd, buf, 4, 0));
    MUST_TRUE(memcmp(buf, "data", 4) == 0, "the unlinked file's data reads \"%.4s\"", buf);
    MUST(close(fd));
    if (!file_is("f", "new"))
        return CHECK_FAIL;
    return CHECK_OK;
}

const struct check time_checks[] = {
    {"utimensat_symlink", utimensat_symlink},
    {"times_before_1970", times_before_1970},
    {"times_after_2038", times_after_2038},
    {"unlinked_fd_attributes", unlinked_fd_attributes},
    {NULL, NULL},
};
