/* File lifecycle checks: create, open flags, unlink while open, directories, statfs, exec. */
#include "conformance.h"

#include <sys/statvfs.h>
#include <sys/wait.h>

static int create_excl(void)
{
    struct stat st;
    int fd = open("f", O_WRONLY | O_CREAT | O_EXCL, 0640);
    MUST(fd);
    MUST(write_all(fd, "data", 4));
    MUST(close(fd));
    MUST(stat("f", &st));
    MUST_EQ(st.st_mode & 07777, 0640);
    MUST_EQ(st.st_uid, getuid());
    MUST_ERRNO(open("f", O_WRONLY | O_CREAT | O_EXCL, 0640), EEXIST);
    /* O_CREAT without O_EXCL opens the existing file and must not truncate it. */
    fd = open("f", O_WRONLY | O_CREAT, 0600);
    MUST(fd);
    MUST(close(fd));
    if (!file_is("f", "data"))
        return CHECK_FAIL;
    MUST(stat("f", &st));
    MUST_EQ(st.st_mode & 07777, 0640);

    MUST(mkdir("d", 0755));
    MUST_ERRNO(open("d", O_WRONLY | O_CREAT | O_EXCL, 0644), EEXIST);
    /* O_EXCL never follows a symlink, even a dangling one. */
    MUST(symlink("missing", "l"));
    MUST_ERRNO(open("l", O_WRONLY | O_CREAT | O_EXCL, 0644), EEXIST);
    MUST_ERRNO(access("missing", F_OK), ENOENT);
    return CHECK_OK;
}

static int o_trunc(void)
{
    struct stat st;
    char big[1000];
    memset(big, 'z', sizeof big);
    MUST(put_file("f", big, sizeof big));
    int fd = open("f", O_WRONLY | O_TRUNC);
    MUST(fd);
    MUST(fstat(fd, &st));
    MUST_EQ(st.st_size, 0);
    MUST(write_all(fd, "x", 1));
    MUST(close(fd));
    if (!file_is("f", "x"))
        return CHECK_FAIL;
    fd = open("f", O_RDWR | O_CREAT | O_TRUNC, 0644);
    MUST(fd);
    MUST(close(fd));
    MUST(stat("f", &st));
    MUST_EQ(st.st_size, 0);
    return CHECK_OK;
}

static int unlinked_open_file(void)
{
    struct stat st;
    char buf[64];
    int fd = open("f", O_RDWR | O_CREAT, 0644);
    MUST(fd);
    MUST(write_all(fd, "before", 6));
    MUST(unlink("f"));
    MUST_ERRNO(stat("f", &st), ENOENT);
    MUST(fstat(fd, &st));
    MUST_EQ(st.st_nlink, 0);
    MUST_EQ(st.st_size, 6);
    MUST(pwrite_all(fd, " after", 6, 6));
    MUST(pread_all(fd, buf, 12, 0));
    MUST_TRUE(memcmp(buf, "before after", 12) == 0, "reading the unlinked file gave \"%.12s\"", buf);
    MUST(ftruncate(fd, 3));
    MUST(fstat(fd, &st));
    MUST_EQ(st.st_size, 3);
    /* The name is free again while the old inode lives on. */
    MUST(put_file("f", "new", 3));
    MUST(pread_all(fd, buf, 3, 0));
    MUST_TRUE(memcmp(buf, "bef", 3) == 0, "the unlinked inode changed when the name was reused");
    MUST(close(fd));
    if (!file_is("f", "new"))
        return CHECK_FAIL;
    return CHECK_OK;
}

static int statfs_check(void)
{
    struct statvfs sv, fsv;
    MUST(statvfs(".", &sv));
    MUST_TRUE(sv.f_bsize > 0, "f_bsize is 0");
    MUST_TRUE(sv.f_frsize > 0, "f_frsize is 0");
    MUST_TRUE(sv.f_blocks > 0, "f_blocks is 0");
    MUST_TRUE(sv.f_bfree <= sv.f_blocks, "f_bfree %llu > f_blocks %llu",
              (unsigned long long)sv.f_bfree, (unsigned long long)sv.f_blocks);
    MUST_TRUE(sv.f_bavail <= sv.f_bfree, "f_bavail %llu > f_bfree %llu",
              (unsigned long long)sv.f_bavail, (unsigned long long)sv.f_bfree);
    MUST_TRUE(sv.f_namemax >= 255, "f_namemax is %lu, expected >= 255", (unsigned long)sv.f_namemax);
    MUST(put_file("f", "x", 1));
    int fd = open("f", O_RDONLY);
    MUST(fd);
    MUST(fstatvfs(fd, &fsv));
    MUST(close(fd));
    MUST_EQ(fsv.f_blocks, sv.f_blocks);
    MUST_EQ(fsv.f_bsize, sv.f_bsize);
    return CHECK_OK;
}

static int dir_errors(void)
{
    struct stat st;
    MUST(mkdir("d", 0755));
    MUST_ERRNO(mkdir("d", 0755), EEXIST);
    MUST(put_file("d/f", "x", 1));
    MUST(mkdir("d/sub", 0755));
    MUST(stat("d", &st));
    /* ext4/tmpfs count ".", the entry in the parent and each subdirectory's "..". */
    MUST_EQ(st.st_nlink, 3);
    MUST_ERRNO(rmdir("d"), ENOTEMPTY);
    MUST_ERRNO(unlink("d"), EISDIR);
    MUST_ERRNO(rmdir("d/f"), ENOTDIR);
    MUST_ERRNO(open("d/f/x", O_RDONLY), ENOTDIR);
    MUST_ERRNO(open("d", O_WRONLY), EISDIR);
    MUST_ERRNO(open("nope/x", O_RDONLY), ENOENT);
    MUST_ERRNO(mkdir("nope/x", 0755), ENOENT);
    MUST_ERRNO(rmdir("d/."), EINVAL);
    MUST(rmdir("d/sub"));
    MUST(unlink("d/f"));
    MUST(rmdir("d"));
    MUST_ERRNO(stat("d", &st), ENOENT);
    return CHECK_OK;
}

static int exec_binary(void)
{
    /* Executing from the file system exercises mmap of text pages and exec permission. */
    char buf[1 << 16];
    int in = open("/proc/self/exe", O_RDONLY);
    if (in < 0)
        SKIP("cannot open /proc/self/exe: %s", strerror(errno));
    int out = open("prog", O_WRONLY | O_CREAT | O_EXCL, 0755);
    MUST(out);
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        MUST(n);
        if (n == 0)
            break;
        MUST(write_all(out, buf, n));
    }
    MUST(close(in));
    MUST(close(out));
    MUST(put_file("noexec", "#!/bin/sh\n", 10));
    /* Even root needs at least one execute bit to run a file. */
    MUST_ERRNO(access("noexec", X_OK), EACCES);

    pid_t pid = fork();
    MUST(pid);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0)
            dup2(null, 1);
        execl("./prog", "prog", "--list", (char *)NULL);
        report("execl ./prog: %s", strerror(errno));
        _exit(127);
    }
    int status;
    MUST(waitpid(pid, &status, 0));
    MUST_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the copied binary did not run: wait status 0x%x", status);
    MUST_ERRNO(execl("./noexec", "noexec", (char *)NULL), EACCES);
    return CHECK_OK;
}

const struct check file_checks[] = {
    {"create_excl", create_excl},
    {"o_trunc", o_trunc},
    {"unlinked_open_file", unlinked_open_file},
    {"statfs", statfs_check},
    {"dir_errors", dir_errors},
    {"exec_binary", exec_binary},
    {NULL, NULL},
};
