/* Hard links, symlinks and special files. */
#include "conformance.h"

#include <sys/socket.h>
#include <sys/un.h>

static int hard_links(void)
{
    struct stat a, b, c;
    MUST(put_file("a", "shared", 6));
    MUST(stat("a", &a));
    MUST_EQ(a.st_nlink, 1);
    MUST(link("a", "b"));
    MUST(stat("a", &a));
    MUST(stat("b", &b));
    MUST_EQ(a.st_nlink, 2);
    MUST_EQ(b.st_nlink, 2);
    MUST_EQ(b.st_ino, a.st_ino);
    MUST(mkdir("d", 0755));
    MUST(link("b", "d/c"));
    MUST(stat("d/c", &c));
    MUST_EQ(c.st_nlink, 3);
    MUST_EQ(c.st_ino, a.st_ino);
    MUST(stat("a", &a));
    MUST_EQ(a.st_nlink, 3);

    /* A write through one name is visible through the others: one inode. */
    int fd = open("d/c", O_WRONLY | O_APPEND);
    MUST(fd);
    MUST(write_all(fd, "!", 1));
    MUST(close(fd));
    if (!file_is("a", "shared!"))
        return CHECK_FAIL;

    MUST(unlink("a"));
    MUST(stat("b", &b));
    MUST_EQ(b.st_nlink, 2);
    if (!file_is("b", "shared!") || !file_is("d/c", "shared!"))
        return CHECK_FAIL;
    MUST_ERRNO(link("b", "d/c"), EEXIST);
    MUST_ERRNO(link("missing", "x"), ENOENT);
    /* Directories cannot be hard-linked. */
    MUST_ERRNO(link("d", "d2"), EPERM);
    return CHECK_OK;
}

static int symlink_dangling(void)
{
    struct stat st;
    char buf[64];
    MUST(symlink("target-not-there", "l"));
    MUST(lstat("l", &st));
    MUST_TRUE(S_ISLNK(st.st_mode), "lstat: not a symlink (mode 0%o)", st.st_mode);
    MUST_ERRNO(stat("l", &st), ENOENT);
    MUST_ERRNO(open("l", O_RDONLY), ENOENT);
    ssize_t n = readlink("l", buf, sizeof buf);
    MUST(n);
    MUST_TRUE(n == 16 && memcmp(buf, "target-not-there", 16) == 0, "readlink gave \"%.*s\"",
              (int)n, buf);
    MUST_ERRNO(symlink("other", "l"), EEXIST);
    /* O_CREAT through a dangling symlink creates its target. */
    int fd = open("l", O_WRONLY | O_CREAT, 0644);
    MUST(fd);
    MUST(write_all(fd, "now", 3));
    MUST(close(fd));
    if (!file_is("target-not-there", "now"))
        return CHECK_FAIL;
    MUST(stat("l", &st));
    MUST_TRUE(S_ISREG(st.st_mode), "stat through the repaired symlink is not a regular file");
    MUST(unlink("l"));
    MUST(stat("target-not-there", &st));
    return CHECK_OK;
}

static int symlink_long_target(void)
{
    char target[1024], buf[4096];
    struct stat st;
    for (int i = 0; i < 1023; i++)
        target[i] = (i % 16 == 15) ? '/' : 'a' + i % 26;
    target[1023] = '\0';
    MUST(symlink(target, "l"));
    ssize_t n = readlink("l", buf, sizeof buf);
    MUST(n);
    MUST_EQ(n, 1023);
    MUST_TRUE(memcmp(buf, target, 1023) == 0, "readlink of the 1023-byte target differs");
    MUST(lstat("l", &st));
    MUST_EQ(st.st_size, 1023);
    /* A short buffer gets a truncated target, not an error. */
    MUST_EQ(readlink("l", buf, 10), 10);
    MUST_TRUE(memcmp(buf, target, 10) == 0, "truncated readlink differs");
    return CHECK_OK;
}

static int symlink_nofollow_lstat(void)
{
    struct stat st, target;
    char buf[64];
    MUST(put_file("file", "twelve bytes", 12));
    MUST(symlink("file", "l"));
    MUST(lstat("l", &st));
    MUST_TRUE(S_ISLNK(st.st_mode), "lstat: not a symlink (mode 0%o)", st.st_mode);
    MUST_EQ(st.st_size, 4);
    MUST(stat("l", &st));
    MUST(stat("file", &target));
    MUST_TRUE(S_ISREG(st.st_mode), "stat did not follow the symlink");
    MUST_EQ(st.st_size, 12);
    MUST_EQ(st.st_ino, target.st_ino);
    MUST(fstatat(AT_FDCWD, "l", &st, AT_SYMLINK_NOFOLLOW));
    MUST_TRUE(S_ISLNK(st.st_mode), "fstatat AT_SYMLINK_NOFOLLOW followed the symlink");
    MUST_ERRNO(open("l", O_RDONLY | O_NOFOLLOW), ELOOP);
    int fd = open("l", O_PATH | O_NOFOLLOW);
    MUST(fd);
    MUST(fstat(fd, &st));
    MUST_TRUE(S_ISLNK(st.st_mode), "O_PATH|O_NOFOLLOW fd is not the symlink");
    MUST_EQ(readlinkat(fd, "", buf, sizeof buf), 4);
    MUST(close(fd));
    /* Loops are detected, not followed forever. */
    MUST(symlink("loop2", "loop1"));
    MUST(symlink("loop1", "loop2"));
    MUST_ERRNO(stat("loop1", &st), ELOOP);
    /* A trailing slash forces resolution to a directory. */
    MUST(mkdir("dir", 0755));
    MUST(symlink("dir", "ldir"));
    MUST(lstat("ldir/", &st));
    MUST_TRUE(S_ISDIR(st.st_mode), "lstat(\"ldir/\") did not resolve to the directory");
    return CHECK_OK;
}

static int mknod_socket(void)
{
    struct stat st;
    MUST(mknod("s", S_IFSOCK | 0644, 0));
    MUST(lstat("s", &st));
    MUST_TRUE(S_ISSOCK(st.st_mode), "lstat: not a socket (mode 0%o)", st.st_mode);
    MUST_EQ(st.st_mode & 07777, 0644);
    MUST(mknod("r", S_IFREG | 0600, 0));
    MUST(lstat("r", &st));
    MUST_TRUE(S_ISREG(st.st_mode) && st.st_size == 0, "mknod S_IFREG did not make an empty file");
    MUST(unlink("s"));
    return CHECK_OK;
}

static int unix_socket_bind(void)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    struct stat st;
    strcpy(addr.sun_path, "sock");
    int srv = socket(AF_UNIX, SOCK_STREAM, 0);
    MUST(srv);
    MUST(bind(srv, (struct sockaddr *)&addr, sizeof addr));
    MUST(listen(srv, 1));
    MUST(lstat("sock", &st));
    MUST_TRUE(S_ISSOCK(st.st_mode), "bind did not create a socket node (mode 0%o)", st.st_mode);
    /* The node is only a rendezvous: connecting must reach the listener in this process. */
    int cli = socket(AF_UNIX, SOCK_STREAM, 0);
    MUST(cli);
    MUST(connect(cli, (struct sockaddr *)&addr, sizeof addr));
    int acc = accept(srv, NULL, NULL);
    MUST(acc);
    MUST_EQ(write(cli, "ping", 4), 4);
    char buf[4];
    MUST_EQ(read(acc, buf, 4), 4);
    MUST_TRUE(memcmp(buf, "ping", 4) == 0, "data through the socket differs");
    close(acc);
    close(cli);
    close(srv);
    MUST(unlink("sock"));
    return CHECK_OK;
}

const struct check link_checks[] = {
    {"hard_links", hard_links},
    {"symlink_dangling", symlink_dangling},
    {"symlink_long_target", symlink_long_target},
    {"symlink_nofollow_lstat", symlink_nofollow_lstat},
    {"mknod_socket", mknod_socket},
    {"unix_socket_bind", unix_socket_bind},
    {NULL, NULL},
};
