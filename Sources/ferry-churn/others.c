/*
 * Looking at other workers' names while they change them; create/delete churn that hands
 * freed inode numbers to new files; building and removing whole trees.
 */
#include "churn.h"

#include <sys/stat.h>

static char lbuf[16384 + 256];

/* The id "w<j>-f<k>" at the start of a name "w<j>-f<k>-<n>"; 0 if the name has none. */
static int id_from_name(const char *name, char *id, size_t cap)
{
    const char *dash = strchr(name, '-');
    if (name[0] != 'w' || !dash)
        return 0;
    const char *end = strchr(dash + 1, '-');
    size_t len = end ? (size_t)(end - name) : strlen(name);
    if (len + 1 > cap)
        return 0;
    memcpy(id, name, len);
    id[len] = '\0';
    return 1;
}

/* Reads another worker's file: gone (ENOENT) is fine, anything else it says must be true. */
static void read_other(const char *path, const char *name)
{
    char id[64], why[256];
    if (!id_from_name(name, id, sizeof id))
        return;
    ssize_t n = read_all(path, lbuf, sizeof lbuf);
    me->reads++;
    if (n < 0) {
        if (errno != ENOENT)
            fail("look", path, "%s: %s", read_all_step, errno_name(errno));
        return;
    }
    if (content_check(lbuf, (size_t)n, id, -1, why, sizeof why) != 0)
        fail("look", path, "%s", why);
}

/* Lists a directory someone else may be removing and stats what it lists. */
static void look_inside(const char *dir, unsigned depth)
{
    char (*names)[256];
    unsigned char *types;
    size_t count;
    if (list_dir(dir, &names, &types, &count) != 0) {
        if (errno != ENOENT)
            fail("look", dir, "readdir: %s", errno_name(errno));
        return;
    }
    me->readdirs++;
    char path[4400];
    for (size_t i = 0; i < count && i < 6; i++) {
        size_t k = count > 6 ? pick((unsigned)count) : i;
        snprintf(path, sizeof path, "%s/%s", dir, names[k]);
        struct stat st;
        me->lookups++;
        if (lstat(path, &st) != 0) {
            if (errno != ENOENT)
                fail("look", path, "lstat: %s", errno_name(errno));
            continue;
        }
        if (types[k] != DT_UNKNOWN && types[k] != (S_ISDIR(st.st_mode) ? DT_DIR : DT_REG))
            fail("look", path, "listed with d_type %u, lstat says mode %o", types[k], st.st_mode);
        if (S_ISDIR(st.st_mode) && depth > 0)
            look_inside(path, depth - 1);
    }
    free(names);
    free(types);
}

void op_look(void)
{
    char dir[4096], path[4400], mine[32];
    unsigned other = pick(cfg->workers);
    int private = pick(4) == 0 && other != self;
    if (private)
        snprintf(dir, sizeof dir, "%s/p%u", cfg->root, other);
    else
        snprintf(dir, sizeof dir, "%s/s%u", cfg->root, pick(NSHARED));
    snprintf(mine, sizeof mine, "w%u-", self);
    char (*names)[256];
    unsigned char *types;
    size_t count;
    if (list_dir(dir, &names, &types, &count) != 0) {
        fail("look", dir, "readdir: %s", errno_name(errno));
        return;
    }
    me->readdirs++;
    for (unsigned tries = 0; tries < 6 && count > 0; tries++) {
        const char *e = names[pick((unsigned)count)];
        if (strncmp(e, mine, strlen(mine)) == 0 || strncmp(e, "tmp-", 4) == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e);
        struct stat st;
        me->lookups++;
        if (stat(path, &st) != 0) {
            if (errno != ENOENT)
                fail("look", path, "stat: %s", errno_name(errno));
            continue;
        }
        int want_dir = strstr(e, "-d") || strstr(e, "-t");
        if (want_dir != !!S_ISDIR(st.st_mode) || (!want_dir && !S_ISREG(st.st_mode))) {
            fail("look", path, "has type %o", st.st_mode & S_IFMT);
            continue;
        }
        if (want_dir)
            look_inside(path, 1);
        else
            read_other(path, e);
    }
    free(names);
    free(types);
}

/* One round of create/delete churn in our private directory: a file is created, looked
 * up, deleted (sometimes still open), and a new file is created at once, which on most
 * file systems gets the freed inode number. The new name must show the new file: its size,
 * its content, never the old one's, never ESTALE; the old one, if open, its own content. */
void op_reuse(void)
{
    char dir[4096], a[4200], b[4200], tmp[4200], ida[64], idb[64], why[256];
    static char wbuf[8192];
    snprintf(dir, sizeof dir, "%s/p%u", cfg->root, self);
    static unsigned n;
    snprintf(ida, sizeof ida, "w%u-c%u", self, n++);
    snprintf(idb, sizeof idb, "w%u-c%u", self, n++);
    snprintf(a, sizeof a, "%s/%s", dir, ida);
    snprintf(b, sizeof b, "%s/%s", dir, idb);
    me->reuse_rounds++;

    size_t alen = content_make(wbuf, sizeof wbuf, ida, 0, pick(4000));
    snprintf(tmp, sizeof tmp, "%s/tmp-%s", dir, ida);
    if (write_new("reuse", tmp, wbuf, alen) != 0)
        return;
    if (rename(tmp, a) != 0) {
        fail("reuse", a, "rename from tmp: %s", errno_name(errno));
        return;
    }
    struct stat sa, sb;
    if (stat(a, &sa) != 0) {
        fail("reuse", a, "stat: %s", errno_name(errno));
        return;
    }
    int keep = pick(3) == 0 ? open(a, O_RDONLY) : -1;
    if (unlink(a) != 0) {
        fail("reuse", a, "unlink: %s", errno_name(errno));
        return;
    }
    me->unlinks++;

    /* Created in place (not through a temporary name): this is the create that may get
     * the inode number just freed. Others skip names they cannot verify yet: ids of
     * private churn files are checked only once the file is complete, so use tmp- first. */
    size_t blen = content_make(wbuf, sizeof wbuf, idb, 1, pick(4000));
    snprintf(tmp, sizeof tmp, "%s/tmp-%s", dir, idb);
    if (write_new("reuse", tmp, wbuf, blen) != 0)
        goto out;
    if (stat(tmp, &sb) != 0) {
        fail("reuse", tmp, "stat of the new file: %s", errno_name(errno));
        goto out;
    }
    if (rename(tmp, b) != 0) {
        fail("reuse", b, "rename from tmp: %s", errno_name(errno));
        goto out;
    }
    if (sb.st_ino == sa.st_ino)
        me->reuse_seen++;
    struct stat st;
    if (stat(b, &st) != 0)
        fail("reuse", b, "stat: %s", errno_name(errno));
    else if (!S_ISREG(st.st_mode) || (size_t)st.st_size != blen || st.st_ino != sb.st_ino || st.st_nlink != 1)
        fail("reuse", b, "stat says mode %o size %lld inode %llu nlink %lu; the file is %zu bytes, inode %llu, one link",
             st.st_mode, (long long)st.st_size, (unsigned long long)st.st_ino, (unsigned long)st.st_nlink, blen,
             (unsigned long long)sb.st_ino);
    ssize_t got = read_all(b, lbuf, sizeof lbuf);
    me->reads++;
    if (got < 0)
        fail("reuse", b, "%s: %s", read_all_step, errno_name(errno));
    else if (content_check(lbuf, (size_t)got, idb, 1, why, sizeof why) != 0)
        fail("reuse", b, "%s (the deleted file was %s, inode %llu)", why, ida, (unsigned long long)sa.st_ino);
    if (stat(a, &st) == 0)
        fail("reuse", a, "the deleted name is still there (inode %llu)", (unsigned long long)st.st_ino);
    else if (errno != ENOENT)
        fail("reuse", a, "stat of the deleted name: %s, expected ENOENT", errno_name(errno));
    if (unlink(b) != 0)
        fail("reuse", b, "unlink: %s", errno_name(errno));
    me->unlinks++;
out:
    if (keep >= 0) {
        ssize_t r = pread(keep, lbuf, sizeof lbuf, 0);
        if (r < 0)
            fail("reuse", a, "read through a descriptor opened before unlink: %s", errno_name(errno));
        else if (content_check(lbuf, (size_t)r, ida, 0, why, sizeof why) != 0)
            fail("reuse", a, "through a descriptor opened before unlink: %s", why);
        close(keep);
    }
}

/* rm -rf: depth first, each directory listed and emptied, then removed. A directory that
 * refuses rmdir (ENOTEMPTY) after everything it listed was removed had entries the
 * listing missed: that is reported with what a second listing shows. */
int remove_tree(const char *path, int report_leftovers)
{
    char (*names)[256];
    unsigned char *types;
    size_t count;
    int bad = 0;
    if (list_dir(path, &names, &types, &count) != 0) {
        fail("rm -rf", path, "readdir: %s", errno_name(errno));
        return -1;
    }
    char child[4400];
    for (size_t i = 0; i < count; i++) {
        snprintf(child, sizeof child, "%s/%s", path, names[i]);
        unsigned char t = types[i];
        if (t == DT_UNKNOWN) {
            struct stat st;
            if (lstat(child, &st) != 0) {
                fail("rm -rf", child, "lstat: %s", errno_name(errno));
                bad = -1;
                continue;
            }
            t = S_ISDIR(st.st_mode) ? DT_DIR : DT_REG;
        }
        if (t == DT_DIR) {
            if (remove_tree(child, report_leftovers) != 0)
                bad = -1;
        } else if (unlink(child) != 0) {
            fail("rm -rf", child, "unlink: %s", errno_name(errno));
            bad = -1;
        } else {
            me->tree_entries++;
        }
    }
    free(names);
    free(types);
    if (rmdir(path) == 0) {
        me->tree_entries++;
        return bad;
    }
    int e = errno;
    if (!report_leftovers || (e != ENOTEMPTY && e != EEXIST)) {
        fail("rm -rf", path, "rmdir: %s", errno_name(e));
        return -1;
    }
    if (list_dir(path, &names, &types, &count) == 0) {
        char left[600] = "";
        for (size_t i = 0; i < count && strlen(left) < 500; i++)
            strcat(strcat(left, " "), names[i]);
        fail("rm -rf", path, "rmdir: ENOTEMPTY after removing every listed entry; a new listing shows %zu:%s",
             count, left);
        free(names);
        free(types);
    } else {
        fail("rm -rf", path, "rmdir: ENOTEMPTY, and listing again: %s", errno_name(errno));
    }
    remove_tree(path, 0);
    return -1;
}

/* Builds a width x width tree (width directories of width files) in a shared directory
 * and removes it while everybody else works. */
int tree_build_and_remove(unsigned n)
{
    char root[4096], sub[4200], file[4300];
    unsigned w = cfg->tree_width;
    snprintf(root, sizeof root, "%s/s%u/w%u-t%u", cfg->root, pick(NSHARED), self, n);
    me->trees++;
    if (mkdir(root, 0755) != 0) {
        fail("tree", root, "mkdir: %s", errno_name(errno));
        return -1;
    }
    for (unsigned i = 0; i < w; i++) {
        snprintf(sub, sizeof sub, "%s/d%u", root, i);
        if (mkdir(sub, 0755) != 0) {
            fail("tree", sub, "mkdir: %s", errno_name(errno));
            continue;
        }
        for (unsigned j = 0; j < w; j++) {
            snprintf(file, sizeof file, "%s/f%u", sub, j);
            int fd = open(file, O_WRONLY | O_CREAT | O_EXCL, 0644);
            if (fd < 0) {
                fail("tree", file, "create: %s", errno_name(errno));
                continue;
            }
            if (write(fd, file, 16) != 16)
                fail("tree", file, "write: %s", errno_name(errno));
            close(fd);
        }
    }
    int r = remove_tree(root, 1);
    struct stat st;
    errno = 0;
    if (lstat(root, &st) == 0 || errno != ENOENT) {
        fail("tree", root, "after rm -rf, lstat: %s", errno == 0 ? "still there" : errno_name(errno));
        return -1;
    }
    return r;
}
