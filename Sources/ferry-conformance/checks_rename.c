/* rename() and renameat2(): replacement, moves, the error cases and the flags. */
#include "conformance.h"

#include <sys/syscall.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

/* Through syscall() because older libcs (and static busybox guests) lack the wrapper. */
static int rename2(const char *from, const char *to, unsigned flags)
{
    return (int)syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, flags);
}

static int rename_over_file(void)
{
    struct stat a, st;
    char buf[8];
    MUST(put_file("a", "AAAA", 4));
    MUST(put_file("b", "BB", 2));
    MUST(stat("a", &a));
    int old = open("b", O_RDONLY);
    MUST(old);
    MUST(rename("a", "b"));
    MUST_ERRNO(stat("a", &st), ENOENT);
    MUST(stat("b", &st));
    MUST_EQ(st.st_ino, a.st_ino);
    if (!file_is("b", "AAAA"))
        return CHECK_FAIL;
    /* The replaced inode stays readable through a descriptor opened before. */
    MUST_EQ(pread(old, buf, sizeof buf, 0), 2);
    MUST_TRUE(memcmp(buf, "BB", 2) == 0, "the replaced file's open fd reads \"%.2s\"", buf);
    MUST(close(old));
    /* Renaming a name onto another link of the same inode is a no-op. */
    MUST(link("b", "c"));
    MUST(rename("b", "c"));
    MUST(stat("b", &st));
    MUST(stat("c", &st));
    return CHECK_OK;
}

static int rename_into_other_dir(void)
{
    struct stat before, after;
    MUST(mkdir("d1", 0755));
    MUST(mkdir("d2", 0755));
    MUST(put_file("d1/f", "moving", 6));
    MUST(stat("d1/f", &before));
    MUST(rename("d1/f", "d2/g"));
    MUST_ERRNO(stat("d1/f", &after), ENOENT);
    MUST(stat("d2/g", &after));
    MUST_EQ(after.st_ino, before.st_ino);
    if (!file_is("d2/g", "moving"))
        return CHECK_FAIL;
    MUST(rmdir("d1"));
    /* A directory moved elsewhere must have ".." pointing at its new parent. */
    MUST(mkdir("d3", 0755));
    MUST(mkdir("d3/sub", 0755));
    MUST(rename("d3/sub", "d2/sub"));
    struct stat parent, dotdot, d3;
    MUST(stat("d2", &parent));
    MUST(stat("d2/sub/..", &dotdot));
    MUST_EQ(dotdot.st_ino, parent.st_ino);
    MUST(stat("d3", &d3));
    MUST_EQ(d3.st_nlink, 2);
    MUST(stat("d2", &parent));
    MUST_EQ(parent.st_nlink, 3);
    return CHECK_OK;
}

static int rename_dir_over_nonempty(void)
{
    struct stat st;
    MUST(mkdir("a", 0755));
    MUST(put_file("a/x", "x", 1));
    MUST(mkdir("b", 0755));
    MUST(put_file("b/f", "f", 1));
    MUST_ERRNO(rename("a", "b"), ENOTEMPTY);
    if (!file_is("a/x", "x") || !file_is("b/f", "f"))
        return CHECK_FAIL;
    /* An empty target directory is replaced. */
    MUST(mkdir("c", 0755));
    MUST(rename("a", "c"));
    if (!file_is("c/x", "x"))
        return CHECK_FAIL;
    MUST_ERRNO(stat("a", &st), ENOENT);
    /* Type mismatches. */
    MUST(put_file("file", "", 0));
    MUST_ERRNO(rename("c", "file"), ENOTDIR);
    MUST_ERRNO(rename("file", "c"), EISDIR);
    MUST_ERRNO(rename("missing", "z"), ENOENT);
    return CHECK_OK;
}

static int rename_dir_into_itself(void)
{
    MUST(mkdir("a", 0755));
    MUST(mkdir("a/b", 0755));
    MUST_ERRNO(rename("a", "a/b/c"), EINVAL);
    MUST_ERRNO(rename("a", "a/c"), EINVAL);
    struct stat st;
    MUST(stat("a/b", &st));
    MUST_TRUE(S_ISDIR(st.st_mode), "a/b is no longer a directory");
    return CHECK_OK;
}

static int rename_noreplace(void)
{
    MUST(put_file("a", "A", 1));
    MUST(put_file("b", "B", 1));
    MUST_ERRNO(rename2("a", "b", RENAME_NOREPLACE), EEXIST);
    if (!file_is("a", "A") || !file_is("b", "B"))
        return CHECK_FAIL;
    MUST(rename2("a", "c", RENAME_NOREPLACE));
    struct stat st;
    MUST_ERRNO(stat("a", &st), ENOENT);
    if (!file_is("c", "A"))
        return CHECK_FAIL;
    MUST_ERRNO(rename2("b", "c", RENAME_NOREPLACE | RENAME_EXCHANGE), EINVAL);
    return CHECK_OK;
}

static int rename_exchange(void)
{
    struct stat a, b, a2, b2;
    MUST(put_file("a", "first", 5));
    MUST(mkdir("b", 0755));
    MUST(put_file("b/inside", "in", 2));
    MUST(stat("a", &a));
    MUST(stat("b", &b));
    MUST(rename2("a", "b", RENAME_EXCHANGE));
    MUST(stat("a", &a2));
    MUST(stat("b", &b2));
    MUST_EQ(a2.st_ino, b.st_ino);
    MUST_EQ(b2.st_ino, a.st_ino);
    MUST_TRUE(S_ISDIR(a2.st_mode) && S_ISREG(b2.st_mode), "types were not swapped");
    if (!file_is("b", "first") || !file_is("a/inside", "in"))
        return CHECK_FAIL;
    MUST(put_file("c", "third", 5));
    MUST(rename2("b", "c", RENAME_EXCHANGE));
    if (!file_is("b", "third") || !file_is("c", "first"))
        return CHECK_FAIL;
    MUST_ERRNO(rename2("c", "missing", RENAME_EXCHANGE), ENOENT);
    return CHECK_OK;
}

const struct check rename_checks[] = {
    {"rename_over_file", rename_over_file},
    {"rename_into_other_dir", rename_into_other_dir},
    {"rename_dir_over_nonempty", rename_dir_over_nonempty},
    {"rename_dir_into_itself", rename_dir_into_itself},
    {"rename_noreplace", rename_noreplace},
    {"rename_exchange", rename_exchange},
    {NULL, NULL},
};
