/*
 * The largest legal sizes the kernel lets through to a file system: symlink targets of
 * PATH_MAX - 1 bytes, extended attribute names of 255 bytes and values of 64 KiB. One byte
 * more is refused by the kernel itself; up to that, only the file server can get it wrong.
 */
#include "conformance.h"

#include <limits.h>
#include <sys/xattr.h>

/* The target "././.../fffff" is PATH_MAX - 1 bytes and resolves to the file "fffff", so
 * following the link proves the server returned every byte, not only readlink's count. */
static int symlink_path_max(void)
{
    static char target[PATH_MAX + 1], buf[PATH_MAX + 16];
    const size_t len = PATH_MAX - 1;
    for (size_t i = 0; i + 5 < len; i += 2)
        memcpy(target + i, "./", 2);
    memcpy(target + len - 5, "fffff", 5);
    target[len] = '\0';
    MUST(put_file("fffff", "reached", 7));
    MUST(symlink(target, "l"));
    struct stat st;
    MUST(lstat_fresh("l", &st));
    MUST_TRUE(S_ISLNK(st.st_mode), "lstat: not a symlink (mode 0%o)", st.st_mode);
    MUST_EQ(st.st_size, (long long)len);
    ssize_t n = readlink("l", buf, sizeof buf);
    MUST(n);
    MUST_EQ(n, (long long)len);
    MUST_TRUE(memcmp(buf, target, len) == 0, "readlink of the %zu-byte target differs at byte %ld",
              len, first_difference((unsigned char *)buf, (unsigned char *)target, len));
    if (!file_is("l", "reached"))
        return CHECK_FAIL;

    /* Components of NAME_MAX bytes: 15 of them with their slashes, then one more. */
    size_t at = 0;
    while (at + NAME_MAX + 1 < len) {
        memset(target + at, 'a' + (int)(at / (NAME_MAX + 1)), NAME_MAX);
        target[at + NAME_MAX] = '/';
        at += NAME_MAX + 1;
    }
    memset(target + at, 'z', len - at);
    target[len] = '\0';
    MUST(symlink(target, "long-names"));
    n = readlink("long-names", buf, sizeof buf);
    MUST_EQ(n, (long long)len);
    MUST_TRUE(memcmp(buf, target, len) == 0, "readlink of the target of long names differs");
    MUST(lstat_fresh("long-names", &st));
    MUST_EQ(st.st_size, (long long)len);

    /* PATH_MAX bytes with its NUL does not fit: the kernel refuses it. */
    memset(target, 'x', PATH_MAX);
    target[PATH_MAX] = '\0';
    MUST_ERRNO(symlink(target, "too-long"), ENAMETOOLONG);
    MUST_ERRNO(lstat("too-long", &st), ENOENT);
    return CHECK_OK;
}

#define XATTR_VALUE_MAX 65536

static int has_name(const char *list, ssize_t len, const char *name)
{
    for (const char *p = list; p < list + len; p += strlen(p) + 1)
        if (strcmp(p, name) == 0)
            return 1;
    return 0;
}

/* A value of XATTR_VALUE_MAX bytes round-trips exactly, through path and descriptor, with
 * ERANGE for a buffer one byte short. Returns CHECK_SKIP when the file system says it has
 * no room for a value that size (ENOSPC). */
static int xattr_big_value(unsigned char *value, unsigned char *back)
{
    fill_pattern(value, XATTR_VALUE_MAX, 0xa77);
    errno = 0;
    if (setxattr("f", "user.big", value, XATTR_VALUE_MAX, XATTR_CREATE) < 0) {
        int e = errno;
        MUST_TRUE(e == ENOSPC, "setxattr of a %d-byte value: %s (%s)", XATTR_VALUE_MAX,
                  errno_name(e), strerror(e));
        MUST_ERRNO(getxattr("f", "user.big", NULL, 0), ENODATA);
        return CHECK_SKIP;
    }
    MUST_EQ(getxattr("f", "user.big", NULL, 0), XATTR_VALUE_MAX);
    MUST_ERRNO(getxattr("f", "user.big", back, XATTR_VALUE_MAX - 1), ERANGE);
    memset(back, 0, XATTR_VALUE_MAX);
    MUST_EQ(getxattr("f", "user.big", back, XATTR_VALUE_MAX), XATTR_VALUE_MAX);
    long d = first_difference(value, back, XATTR_VALUE_MAX);
    MUST_TRUE(d < 0, "the %d-byte value reads back different from byte %ld", XATTR_VALUE_MAX, d);

    fill_pattern(value, XATTR_VALUE_MAX, 0xb88);
    MUST(setxattr("f", "user.big", value, XATTR_VALUE_MAX, XATTR_REPLACE));
    int fd = open("f", O_RDONLY);
    MUST(fd);
    memset(back, 0, XATTR_VALUE_MAX);
    MUST_EQ(fgetxattr(fd, "user.big", back, XATTR_VALUE_MAX), XATTR_VALUE_MAX);
    MUST(close(fd));
    d = first_difference(value, back, XATTR_VALUE_MAX);
    MUST_TRUE(d < 0, "the replaced %d-byte value reads back different from byte %ld", XATTR_VALUE_MAX, d);
    MUST(removexattr("f", "user.big"));
    return CHECK_OK;
}

/* Names up to XATTR_NAME_MAX (255) bytes and values up to XATTR_SIZE_MAX (64 KiB) are
 * accepted; one byte more is ERANGE or E2BIG; listxattr and getxattr answer ERANGE to a
 * buffer too small by one byte and fill one of the exact size. */
static int xattr_limits(void)
{
    static unsigned char value[XATTR_VALUE_MAX + 1], back[XATTR_VALUE_MAX + 1];
    char name[XATTR_NAME_MAX + 2], list[8192];
    MUST(put_file("f", "x", 1));
    if (setxattr("f", "user.probe", "", 0, 0) < 0) {
        int e = errno;
        if (e == ENOTSUP)
            SKIP("setxattr user.probe: %s (%s): no extended attributes here", errno_name(e), strerror(e));
        FAIL("setxattr(user.probe): %s (%s)", errno_name(e), strerror(e));
    }
    MUST(removexattr("f", "user.probe"));

    memcpy(name, "user.", 5);
    memset(name + 5, 'n', XATTR_NAME_MAX - 5);
    name[XATTR_NAME_MAX] = '\0';
    MUST(setxattr("f", name, "v", 1, XATTR_CREATE));
    MUST_EQ(getxattr("f", name, back, sizeof back), 1);
    MUST_TRUE(back[0] == 'v', "the value of the 255-byte name reads back as 0x%02x", back[0]);
    ssize_t n = listxattr("f", list, sizeof list);
    MUST(n);
    MUST_TRUE(has_name(list, n, name), "listxattr lacks the 255-byte name");
    name[XATTR_NAME_MAX] = 'n';
    name[XATTR_NAME_MAX + 1] = '\0';
    MUST_ERRNO(setxattr("f", name, "v", 1, 0), ERANGE);
    MUST_ERRNO(getxattr("f", name, back, sizeof back), ERANGE);
    name[XATTR_NAME_MAX] = '\0';
    MUST(removexattr("f", name));

    int big = xattr_big_value(value, back);
    if (big == CHECK_FAIL)
        return CHECK_FAIL;
    MUST_ERRNO(setxattr("f", "user.big", value, XATTR_VALUE_MAX + 1, 0), E2BIG);
    MUST_ERRNO(getxattr("f", "user.big", NULL, 0), ENODATA);

    /* listxattr's size query is exact: that many bytes succeed, one fewer is ERANGE. */
    for (int i = 0; i < 12; i++) {
        snprintf(name, sizeof name, "user.attribute-%02d", i);
        MUST(setxattr("f", name, "v", 1, XATTR_CREATE));
    }
    ssize_t size = listxattr("f", NULL, 0);
    MUST(size);
    MUST_TRUE(size >= 12 * 18, "listxattr size query gave %zd for twelve 17-byte names", size);
    MUST_ERRNO(listxattr("f", list, size - 1), ERANGE);
    MUST_ERRNO(listxattr("f", list, 1), ERANGE);
    MUST_EQ(listxattr("f", list, size), size);
    for (int i = 0; i < 12; i++) {
        snprintf(name, sizeof name, "user.attribute-%02d", i);
        MUST_TRUE(has_name(list, size, name), "listxattr lacks %s", name);
    }
    int fd = open("f", O_RDONLY);
    MUST(fd);
    MUST_ERRNO(flistxattr(fd, list, size - 1), ERANGE);
    MUST_EQ(flistxattr(fd, list, size), size);
    MUST(close(fd));
    if (big == CHECK_SKIP)
        SKIP("setxattr of a %d-byte value: ENOSPC: the file system has no room for a value that "
             "size (ext4 stores at most a block unless made with ea_inode); all else passed",
             XATTR_VALUE_MAX);
    return CHECK_OK;
}

const struct check limit_checks[] = {
    {"symlink_path_max", symlink_path_max},
    {"xattr_limits", xattr_limits},
    {NULL, NULL},
};
