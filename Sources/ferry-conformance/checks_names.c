/* Directory entry checks: listing, long and unusual names, deep and wide trees. */
#include "conformance.h"

#include <dirent.h>
#include <ftw.h>

/* Counts each expected name seen; anything unexpected fails. */
struct listing {
    const char *const *names;
    int count;
    int *seen;
    int dots, dotdots;
};

static int list_dir(const char *path, struct listing *l)
{
    DIR *d = opendir(path);
    if (!d) {
        report("opendir(%s): %s", path, strerror(errno));
        return -1;
    }
    memset(l->seen, 0, sizeof(int) * l->count);
    l->dots = l->dotdots = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0) {
            l->dots++;
            continue;
        }
        if (strcmp(e->d_name, "..") == 0) {
            l->dotdots++;
            continue;
        }
        int i;
        for (i = 0; i < l->count; i++)
            if (strcmp(e->d_name, l->names[i]) == 0)
                break;
        if (i == l->count) {
            report("readdir returned an unexpected entry \"%s\"", e->d_name);
            closedir(d);
            return -1;
        }
        l->seen[i]++;
    }
    int e_ = errno;
    closedir(d);
    if (e_) {
        report("readdir: %s", strerror(e_));
        return -1;
    }
    if (l->dots != 1 || l->dotdots != 1) {
        report("expected . and .. once each, got %d and %d", l->dots, l->dotdots);
        return -1;
    }
    for (int i = 0; i < l->count; i++) {
        if (l->seen[i] != 1) {
            report("entry \"%s\" listed %d times, expected once", l->names[i], l->seen[i]);
            return -1;
        }
    }
    return 0;
}

#define WIDE 3000

static int readdir_3000(void)
{
    static char storage[WIDE][16];
    static const char *names[WIDE];
    static int seen[WIDE];
    MUST(mkdir("d", 0755));
    for (int i = 0; i < WIDE; i++) {
        snprintf(storage[i], sizeof storage[i], "entry-%04d", i);
        names[i] = storage[i];
        char path[32];
        snprintf(path, sizeof path, "d/%s", names[i]);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
        MUST(fd);
        MUST(close(fd));
    }
    struct listing l = {names, WIDE, seen, 0, 0};
    if (list_dir("d", &l) < 0)
        return CHECK_FAIL;
    /* Half of them gone: the listing must shrink exactly, without stale entries. */
    for (int i = 0; i < WIDE; i += 2) {
        char path[32];
        snprintf(path, sizeof path, "d/%s", names[i]);
        MUST(unlink(path));
    }
    static const char *odd[WIDE / 2];
    for (int i = 0; i < WIDE / 2; i++)
        odd[i] = names[2 * i + 1];
    struct listing l2 = {odd, WIDE / 2, seen, 0, 0};
    if (list_dir("d", &l2) < 0)
        return CHECK_FAIL;
    return CHECK_OK;
}

static int readdir_telldir_seekdir(void)
{
    MUST(mkdir("d", 0755));
    for (int i = 0; i < 200; i++) {
        char path[32];
        snprintf(path, sizeof path, "d/n%03d", i);
        MUST(put_file(path, "", 0));
    }
    DIR *d = opendir("d");
    MUST_TRUE(d != NULL, "opendir: %s", strerror(errno));
    for (int i = 0; i < 100; i++)
        MUST_TRUE(readdir(d) != NULL, "readdir ended after %d entries", i);
    long pos = telldir(d);
    MUST(pos);
    char after[102][256];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 102)
        snprintf(after[n++], sizeof after[0], "%s", e->d_name);
    MUST_EQ(n, 102);
    /* Resuming from a saved cookie must replay exactly the same tail. */
    seekdir(d, pos);
    for (int i = 0; i < n; i++) {
        e = readdir(d);
        MUST_TRUE(e != NULL, "after seekdir, readdir ended at %d of %d", i, n);
        MUST_TRUE(strcmp(e->d_name, after[i]) == 0, "after seekdir, entry %d is \"%s\", expected \"%s\"",
                  i, e->d_name, after[i]);
    }
    MUST_TRUE(readdir(d) == NULL, "after seekdir, extra entries at the end");
    rewinddir(d);
    int total = 0;
    while (readdir(d))
        total++;
    MUST_EQ(total, 202);
    closedir(d);
    return CHECK_OK;
}

static int name_255(void)
{
    char name[257], path[300];
    struct stat st;
    memset(name, 'n', 255);
    name[255] = '\0';
    MUST(put_file(name, "x", 1));
    MUST(stat(name, &st));
    MUST_EQ(st.st_size, 1);
    const char *names[] = {name};
    int seen[1];
    struct listing l = {names, 1, seen, 0, 0};
    if (list_dir(".", &l) < 0)
        return CHECK_FAIL;
    MUST(unlink(name));
    memset(name, 'd', 255);
    MUST(mkdir(name, 0755));
    snprintf(path, sizeof path, "%s/f", name);
    MUST(put_file(path, "y", 1));
    MUST(unlink(path));
    MUST(rmdir(name));

    memset(name, 'm', 256);
    name[256] = '\0';
    MUST_ERRNO(open(name, O_WRONLY | O_CREAT, 0644), ENAMETOOLONG);
    MUST_ERRNO(mkdir(name, 0755), ENAMETOOLONG);
    MUST_ERRNO(stat(name, &st), ENAMETOOLONG);
    MUST_ERRNO(symlink("t", name), ENAMETOOLONG);
    return CHECK_OK;
}

static int names_utf8_space_newline(void)
{
    static const char *const names[] = {
        "h\xc3\xa9llo w\xc3\xb6rld",               /* héllo wörld */
        "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",    /* 日本語 */
        "emoji-\xf0\x9f\x98\x80",                  /* 😀 */
        "trailing space ",
        " leading space",
        "new\nline",
        "\n",
        "tab\there",
        "back\\slash",
        "quote\"and'apostrophe",
        "-dash",
        "...",
        "star*?[x]",
        "\x7f\x01" "control",
        "\xff\xfe not utf-8",
    };
    const int count = sizeof names / sizeof names[0];
    int seen[sizeof names / sizeof names[0]];
    for (int i = 0; i < count; i++)
        MUST_TRUE(put_file(names[i], names[i], strlen(names[i])) == 0, "creating \"%s\": %s",
                  names[i], strerror(errno));
    struct listing l = {names, count, seen, 0, 0};
    if (list_dir(".", &l) < 0)
        return CHECK_FAIL;
    for (int i = 0; i < count; i++) {
        if (!file_is(names[i], names[i]))
            return CHECK_FAIL;
        MUST_TRUE(unlink(names[i]) == 0, "unlink \"%s\": %s", names[i], strerror(errno));
    }
    return CHECK_OK;
}

static int deep_tree_40(void)
{
    char path[4096] = "";
    size_t len = 0;
    for (int i = 0; i < 40; i++) {
        len += snprintf(path + len, sizeof path - len, "%sdepth%02d", i ? "/" : "", i);
        MUST_TRUE(mkdir(path, 0755) == 0, "mkdir at depth %d: %s", i, strerror(errno));
    }
    char file[4200];
    snprintf(file, sizeof file, "%s/bottom.txt", path);
    MUST(put_file(file, "deep", 4));
    struct stat st;
    MUST(stat(file, &st));
    MUST_EQ(st.st_size, 4);
    MUST_TRUE(S_ISREG(st.st_mode), "the file at the bottom is not a regular file");
    if (!file_is(file, "deep"))
        return CHECK_FAIL;
    MUST(unlink(file));
    for (int i = 39; i >= 0; i--) {
        MUST_TRUE(rmdir(path) == 0, "rmdir at depth %d: %s", i, strerror(errno));
        char *slash = strrchr(path, '/');
        if (slash)
            *slash = '\0';
    }
    MUST_ERRNO(stat("depth00", &st), ENOENT);
    return CHECK_OK;
}

static int rm_rf(void)
{
    MUST(put_file("keep", "keep", 4));
    MUST(mkdir("top", 0755));
    for (int i = 0; i < 5; i++) {
        char p[128];
        snprintf(p, sizeof p, "top/d%d", i);
        MUST(mkdir(p, 0755));
        snprintf(p, sizeof p, "top/d%d/sub", i);
        MUST(mkdir(p, 0700));
        for (int j = 0; j < 20; j++) {
            snprintf(p, sizeof p, "top/d%d/f%d", i, j);
            MUST(put_file(p, p, strlen(p)));
            snprintf(p, sizeof p, "top/d%d/sub/g%d", i, j);
            MUST(put_file(p, p, strlen(p)));
        }
        /* Symlinks to a directory and outside the tree: removal must not follow them. */
        snprintf(p, sizeof p, "top/d%d/to-sibling", i);
        MUST(symlink("../d0", p));
        snprintf(p, sizeof p, "top/d%d/to-keep", i);
        MUST(symlink("../../keep", p));
    }
    MUST(mkfifo("top/fifo", 0644));
    MUST(remove_tree("top"));
    struct stat st;
    MUST_ERRNO(lstat("top", &st), ENOENT);
    if (!file_is("keep", "keep"))
        return CHECK_FAIL;
    const char *names[] = {"keep"};
    int seen[1];
    struct listing l = {names, 1, seen, 0, 0};
    if (list_dir(".", &l) < 0)
        return CHECK_FAIL;
    return CHECK_OK;
}

const struct check name_checks[] = {
    {"readdir_3000", readdir_3000},
    {"readdir_telldir_seekdir", readdir_telldir_seekdir},
    {"name_255", name_255},
    {"names_utf8_space_newline", names_utf8_space_newline},
    {"deep_tree_40", deep_tree_40},
    {"rm_rf", rm_rf},
    {NULL, NULL},
};
