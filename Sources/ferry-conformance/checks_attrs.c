/* Ownership, permissions, timestamps and extended attributes. */
#include "conformance.h"
#include <grp.h>

#include <sys/xattr.h>
#include <time.h>

static int chmod_chown(void)
{
    struct stat st;
    MUST(put_file("f", "x", 1));
    MUST(chmod("f", 0640));
    MUST(stat("f", &st));
    MUST_EQ(st.st_mode & 07777, 0640);
    MUST(chmod("f", 04711));
    MUST(stat("f", &st));
    MUST_EQ(st.st_mode & 07777, 04711);
    int fd = open("f", O_RDONLY);
    MUST(fd);
    MUST(fchmod(fd, 0751));
    MUST(fstat(fd, &st));
    MUST_EQ(st.st_mode & 07777, 0751);

    MUST(chown("f", 1234, 5678));
    MUST(stat("f", &st));
    MUST_EQ(st.st_uid, 1234);
    MUST_EQ(st.st_gid, 5678);
    /* -1 leaves that id alone. */
    MUST(fchown(fd, (uid_t)-1, 99));
    MUST(fstat(fd, &st));
    MUST_EQ(st.st_uid, 1234);
    MUST_EQ(st.st_gid, 99);
    MUST(close(fd));

    /* lchown changes the link itself, not what it points to. */
    MUST(symlink("f", "l"));
    MUST(lchown("l", 4321, 8765));
    MUST(lstat("l", &st));
    MUST_EQ(st.st_uid, 4321);
    MUST_EQ(st.st_gid, 8765);
    MUST(stat("f", &st));
    MUST_EQ(st.st_uid, 1234);

    MUST(mkdir("d", 0700));
    MUST(chmod("d", 01777));
    MUST(stat("d", &st));
    MUST_EQ(st.st_mode & 07777, 01777);
    return CHECK_OK;
}

static int utimens_nsec(void)
{
    struct stat st, before;
    MUST(put_file("f", "x", 1));
    struct timespec ts[2] = {{1234567890, 123456789}, {1500000000, 987654321}};
    MUST(utimensat(AT_FDCWD, "f", ts, 0));
    MUST(stat("f", &st));
    MUST_EQ(st.st_atim.tv_sec, 1234567890);
    MUST_EQ(st.st_atim.tv_nsec, 123456789);
    MUST_EQ(st.st_mtim.tv_sec, 1500000000);
    MUST_EQ(st.st_mtim.tv_nsec, 987654321);

    /* UTIME_NOW for atime only; UTIME_OMIT must leave mtime exactly as it was. */
    time_t now = time(NULL);
    struct timespec now_omit[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
    MUST(utimensat(AT_FDCWD, "f", now_omit, 0));
    MUST(stat("f", &st));
    MUST_TRUE(st.st_atim.tv_sec >= now - 5 && st.st_atim.tv_sec <= now + 5,
              "UTIME_NOW: atime %lld is not near now %lld", (long long)st.st_atim.tv_sec, (long long)now);
    MUST_EQ(st.st_mtim.tv_sec, 1500000000);
    MUST_EQ(st.st_mtim.tv_nsec, 987654321);

    /* And the other way round through futimens. */
    before = st;
    int fd = open("f", O_RDONLY);
    MUST(fd);
    struct timespec omit_set[2] = {{0, UTIME_OMIT}, {2000000000, 1}};
    MUST(futimens(fd, omit_set));
    MUST(fstat(fd, &st));
    MUST_EQ(st.st_atim.tv_sec, before.st_atim.tv_sec);
    MUST_EQ(st.st_atim.tv_nsec, before.st_atim.tv_nsec);
    MUST_EQ(st.st_mtim.tv_sec, 2000000000);
    MUST_EQ(st.st_mtim.tv_nsec, 1);
    MUST(close(fd));

    /* A symlink's own times, without touching the target. */
    MUST(symlink("f", "l"));
    struct timespec old[2] = {{1000000000, 5}, {1000000000, 6}};
    MUST(utimensat(AT_FDCWD, "l", old, AT_SYMLINK_NOFOLLOW));
    MUST(lstat("l", &st));
    MUST_EQ(st.st_mtim.tv_sec, 1000000000);
    MUST_EQ(st.st_mtim.tv_nsec, 6);
    MUST(stat("f", &st));
    MUST_EQ(st.st_mtim.tv_sec, 2000000000);
    return CHECK_OK;
}

static int xattr_create_replace(void)
{
    char buf[256];
    MUST(put_file("f", "x", 1));
    if (setxattr("f", "user.x", "v1", 2, XATTR_CREATE) < 0) {
        int e = errno;
        if (e == ENOTSUP || e == EOPNOTSUPP)
            SKIP("setxattr user.x: %s (%s); mount without xattr support?", errno_name(e), strerror(e));
        FAIL("setxattr(user.x, XATTR_CREATE): expected success, got %s (%s)", errno_name(e), strerror(e));
    }
    MUST_ERRNO(setxattr("f", "user.x", "v2", 2, XATTR_CREATE), EEXIST);
    MUST_ERRNO(setxattr("f", "user.y", "v", 1, XATTR_REPLACE), ENODATA);
    MUST_ERRNO(getxattr("f", "user.y", buf, sizeof buf), ENODATA);
    MUST(setxattr("f", "user.x", "value2", 6, XATTR_REPLACE));
    /* A size query (size 0) returns the length without copying. */
    MUST_EQ(getxattr("f", "user.x", NULL, 0), 6);
    MUST_ERRNO(getxattr("f", "user.x", buf, 3), ERANGE);
    ssize_t n = getxattr("f", "user.x", buf, sizeof buf);
    MUST_EQ(n, 6);
    MUST_TRUE(memcmp(buf, "value2", 6) == 0, "getxattr gave \"%.*s\"", (int)n, buf);

    /* Binary values with NULs and an empty value are legal. */
    MUST(setxattr("f", "user.bin", "a\0b\0", 4, 0));
    MUST_EQ(getxattr("f", "user.bin", buf, sizeof buf), 4);
    MUST_TRUE(memcmp(buf, "a\0b\0", 4) == 0, "binary xattr value differs");
    MUST(setxattr("f", "user.empty", "", 0, 0));
    MUST_EQ(getxattr("f", "user.empty", buf, sizeof buf), 0);

    n = listxattr("f", buf, sizeof buf);
    MUST(n);
    int found_x = 0, found_bin = 0, found_empty = 0;
    for (char *p = buf; p < buf + n; p += strlen(p) + 1) {
        found_x |= strcmp(p, "user.x") == 0;
        found_bin |= strcmp(p, "user.bin") == 0;
        found_empty |= strcmp(p, "user.empty") == 0;
    }
    MUST_TRUE(found_x && found_bin && found_empty, "listxattr lacks one of user.x/user.bin/user.empty");
    MUST_EQ(listxattr("f", NULL, 0), n);

    MUST(removexattr("f", "user.x"));
    MUST_ERRNO(getxattr("f", "user.x", buf, sizeof buf), ENODATA);
    MUST_ERRNO(removexattr("f", "user.x"), ENODATA);
    /* Symlinks cannot carry user.* attributes on Linux. */
    MUST(symlink("f", "l"));
    MUST_ERRNO(lsetxattr("l", "user.x", "v", 1, 0), EPERM);
    return CHECK_OK;
}

static int nobody_in_root_dir(void *arg)
{
    (void)arg;
    MUST_ERRNO(open("ro/new", O_WRONLY | O_CREAT, 0644), EACCES);
    MUST_ERRNO(mkdir("ro/newdir", 0755), EACCES);
    MUST_ERRNO(unlink("ro/f"), EACCES);
    MUST_ERRNO(rename("ro/f", "ro/g"), EACCES);
    MUST_ERRNO(open("ro/f", O_WRONLY), EACCES);
    MUST_ERRNO(open("ro/secret", O_RDONLY), EACCES);
    if (!file_is("ro/f", "readable"))
        return CHECK_FAIL;
    MUST(access("ro/f", R_OK));
    MUST_ERRNO(access("ro/f", W_OK), EACCES);
    MUST_ERRNO(chmod("ro/f", 0777), EPERM);
    return CHECK_OK;
}

static int other_uid_refused(void)
{
    MUST(mkdir("ro", 0755));
    MUST(chmod("ro", 0755));
    MUST(put_file("ro/f", "readable", 8));
    MUST(chmod("ro/f", 0644));
    MUST(put_file("ro/secret", "s", 1));
    MUST(chmod("ro/secret", 0600));
    int r = run_as_nobody(nobody_in_root_dir, NULL);
    if (r != CHECK_OK)
        return r;
    struct stat st;
    MUST_ERRNO(stat("ro/new", &st), ENOENT);
    return CHECK_OK;
}

static int setgid_directory(void)
{
    struct stat st;
    MUST(mkdir("d", 0755));
    MUST(chown("d", 0, 4321));
    MUST(chmod("d", 02775));
    MUST(stat("d", &st));
    MUST_EQ(st.st_mode & 07777, 02775);
    MUST(put_file("d/f", "x", 1));
    MUST(stat("d/f", &st));
    MUST_EQ(st.st_gid, 4321);
    MUST(mkdir("d/sub", 0755));
    MUST(stat("d/sub", &st));
    MUST_EQ(st.st_gid, 4321);
    MUST_TRUE(st.st_mode & S_ISGID, "new subdirectory lost S_ISGID (mode 0%o)", st.st_mode & 07777);
    /* Inheritance continues one level further down. */
    MUST(put_file("d/sub/g", "y", 1));
    MUST(stat("d/sub/g", &st));
    MUST_EQ(st.st_gid, 4321);
    return CHECK_OK;
}

#define SUPPLEMENTARY_GID 4444

static int nobody_refused_in_team(void *arg)
{
    (void)arg;
    MUST_ERRNO(open("team/by-outsider", O_CREAT | O_WRONLY, 0644), EACCES);
    return CHECK_OK;
}

static int supplementary_member_creates(void *arg)
{
    (void)arg;
    MUST(put_file("team/by-member", "m", 1));
    MUST(mkdir("team/dir-by-member", 0755));
    struct stat st;
    MUST(stat("team/by-member", &st));
    MUST_EQ(st.st_uid, NOBODY);
    return CHECK_OK;
}

/* A user whose only right to a directory comes from a supplementary group can create in
 * it. A server that acts with the caller's primary group alone (or, worse, with its own
 * groups: CVE-2022-0358) gets this wrong in one direction or the other. */
static int supplementary_group_create(void)
{
    MUST(mkdir("team", 0770));
    MUST(chown("team", 0, SUPPLEMENTARY_GID));
    MUST(chmod("team", 0770));
    pid_t pid = fork();
    if (pid < 0)
        return CHECK_FAIL;
    if (pid == 0) {
        gid_t groups[1] = {SUPPLEMENTARY_GID};
        if (setgroups(1, groups) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
            _exit(CHECK_FAIL);
        _exit(supplementary_member_creates(NULL));
    }
    int r = wait_child(pid, "supplementary-group child");
    if (r != CHECK_OK)
        return r;
    /* And someone outside the group is still refused. */
    return run_as_nobody(nobody_refused_in_team, NULL);
}

static int nobody_writes(void *arg)
{
    (void)arg;
    int fd = open("f", O_WRONLY);
    MUST(fd);
    MUST(write_all(fd, "changed", 7)); /* over "original": "changedl" */
    MUST(close(fd));
    return CHECK_OK;
}

static int write_clears_setuid(void)
{
    struct stat st;
    MUST(put_file("f", "original", 8));
    MUST(chmod("f", 06777));
    MUST(stat("f", &st));
    MUST_EQ(st.st_mode & 07777, 06777);
    int r = run_as_nobody(nobody_writes, NULL);
    if (r != CHECK_OK)
        return r;
    MUST(stat("f", &st));
    MUST_TRUE(!(st.st_mode & S_ISUID), "S_ISUID survived a write by uid %d (mode 0%o)", NOBODY,
              st.st_mode & 07777);
    /* With group execute set, setgid means "setgid program" and is cleared too. */
    MUST_TRUE(!(st.st_mode & S_ISGID), "S_ISGID survived a write by uid %d (mode 0%o)", NOBODY,
              st.st_mode & 07777);
    MUST_EQ(st.st_mode & 0777, 0777);
    if (!file_is("f", "changedl"))
        return CHECK_FAIL;
    /* A root writer keeps the bits (it has CAP_FSETID). */
    MUST(chmod("f", 06777));
    MUST(put_file("f", "root", 4));
    MUST(stat("f", &st));
    MUST_EQ(st.st_mode & 07777, 06777);
    return CHECK_OK;
}

const struct check attr_checks[] = {
    {"chmod_chown", chmod_chown},
    {"utimens_nsec", utimens_nsec},
    {"xattr_create_replace", xattr_create_replace},
    {"other_uid_refused", other_uid_refused},
    {"setgid_directory", setgid_directory},
    {"supplementary_group_create", supplementary_group_create},
    {"write_clears_setuid", write_clears_setuid},
    {NULL, NULL},
};
