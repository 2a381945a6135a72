/*
 * One worker: creates, replaces, renames, hard-links and unlinks its own files in the
 * shared directories, makes and removes its own directories, lists the shared directories
 * (its own names must be listed exactly once), and in between looks at everyone else's.
 */
#include "churn.h"

#include <sys/stat.h>

struct name {
    unsigned dir;                   /* shared directory index */
    char base[64];
};

struct slot {
    int used;
    unsigned key;                   /* the file's id is "w<self>-f<key>" */
    unsigned gen;
    size_t body;
    ino_t ino;
    unsigned nnames;
    struct name names[MAXNAMES];
};

struct odir {
    int used, has_child;
    unsigned dir;
    char base[64];
};

static struct slot slots[MAXSLOTS];
static struct odir dirs[MAXDIRS];
static unsigned serial;
static char buf[16384 + 256];
static char rbuf[16384 + 256];

static void path_of(char *out, size_t cap, unsigned dir, const char *base)
{
    snprintf(out, cap, "%s/s%u/%s", cfg->root, dir, base);
}

static void id_of(char *out, size_t cap, const struct slot *s)
{
    snprintf(out, cap, "w%u-f%u", self, s->key);
}

/* lstat of one of our own names: it must exist, be a regular file, be `s`'s inode and
 * have as many links as `s` has names. */
static int check_own_stat(const char *op, const char *path, const struct slot *s)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        fail(op, path, "lstat of own file: %s", errno_name(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        fail(op, path, "own file has type %o, not regular", st.st_mode & S_IFMT);
        return -1;
    }
    if (st.st_ino != s->ino) {
        fail(op, path, "inode %llu, the file was created as %llu", (unsigned long long)st.st_ino,
             (unsigned long long)s->ino);
        return -1;
    }
    if (st.st_nlink != s->nnames) {
        fail(op, path, "nlink %lu, expected %u", (unsigned long)st.st_nlink, s->nnames);
        return -1;
    }
    return 0;
}

static int check_own_content(const char *op, const char *path, const struct slot *s)
{
    char id[64], why[256];
    id_of(id, sizeof id, s);
    ssize_t n = read_all(path, rbuf, sizeof rbuf);
    me->reads++;
    if (n < 0) {
        fail(op, path, "%s of own file: %s", read_all_step, errno_name(errno));
        return -1;
    }
    if (content_check(rbuf, (size_t)n, id, s->gen, why, sizeof why) != 0) {
        fail(op, path, "%s", why);
        return -1;
    }
    return 0;
}

static int expect_gone(const char *op, const char *path)
{
    struct stat st;
    if (lstat(path, &st) == 0) {
        fail(op, path, "still there after it was removed or renamed away (inode %llu)",
             (unsigned long long)st.st_ino);
        return -1;
    }
    if (errno != ENOENT) {
        fail(op, path, "lstat of a removed name: %s, expected ENOENT", errno_name(errno));
        return -1;
    }
    return 0;
}

/* Writes generation `s->gen` to a temporary name and renames it onto `path`, so nobody
 * ever reads a half-written file under a published name. */
static int publish(const char *op, const char *path, struct slot *s, unsigned dir)
{
    char id[64], tmp[4096], tbase[64];
    id_of(id, sizeof id, s);
    s->body = pick(12000);
    size_t len = content_make(buf, sizeof buf, id, s->gen, s->body);
    snprintf(tbase, sizeof tbase, "tmp-w%u-%u", self, serial++);
    path_of(tmp, sizeof tmp, dir, tbase);
    if (write_new(op, tmp, buf, len) != 0)
        return -1;
    struct stat st;
    if (lstat(tmp, &st) != 0) {
        fail(op, tmp, "lstat of the file just written: %s", errno_name(errno));
        return -1;
    }
    if ((size_t)st.st_size != len) {
        fail(op, tmp, "size %lld right after writing %zu bytes and closing", (long long)st.st_size, len);
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        fail(op, path, "rename from %s: %s", tbase, errno_name(errno));
        unlink(tmp);
        return -1;
    }
    s->ino = st.st_ino;
    return 0;
}

static void op_create(void)
{
    struct slot *s = NULL;
    for (unsigned i = 0; i < MAXSLOTS && !s; i++)
        if (!slots[i].used)
            s = &slots[i];
    if (!s)
        return;
    memset(s, 0, sizeof *s);
    s->key = serial++;
    s->nnames = 1;
    s->names[0].dir = pick(NSHARED);
    snprintf(s->names[0].base, sizeof s->names[0].base, "w%u-f%u-%u", self, s->key, serial++);
    char path[4096];
    path_of(path, sizeof path, s->names[0].dir, s->names[0].base);
    me->creates++;
    if (publish("create", path, s, s->names[0].dir) != 0)
        return;
    s->used = 1;
    check_own_stat("create", path, s);
}

static struct slot *any_slot(void)
{
    unsigned start = pick(MAXSLOTS);
    for (unsigned i = 0; i < MAXSLOTS; i++)
        if (slots[(start + i) % MAXSLOTS].used)
            return &slots[(start + i) % MAXSLOTS];
    return NULL;
}

static void op_verify(void)
{
    struct slot *s = any_slot();
    if (!s)
        return;
    struct name *n = &s->names[pick(s->nnames)];
    char path[4096];
    path_of(path, sizeof path, n->dir, n->base);
    me->verifies++;
    if (check_own_stat("verify", path, s) == 0)
        check_own_content("verify", path, s);
}

/* A new generation under the same name: the old inode is freed, a new one takes the name. */
static void op_replace(void)
{
    struct slot *s = any_slot();
    if (!s || s->nnames != 1)
        return;
    char path[4096];
    path_of(path, sizeof path, s->names[0].dir, s->names[0].base);
    ino_t old = s->ino;
    s->gen++;
    me->replaces++;
    if (publish("replace", path, s, s->names[0].dir) != 0)
        return;
    if (check_own_stat("replace", path, s) == 0 && check_own_content("replace", path, s) == 0 && s->ino == old)
        fail("replace", path, "the new file has the old file's inode %llu while both existed", (unsigned long long)old);
}

/* One of `s`'s names at random and a fresh name for it in a random shared directory,
 * with both paths: what rename and link start from. */
static struct name *pick_move(struct slot *s, struct name *to, char *from, char *dest)
{
    struct name *n = &s->names[pick(s->nnames)];
    *to = (struct name){ .dir = pick(NSHARED) };
    snprintf(to->base, sizeof to->base, "w%u-f%u-%u", self, s->key, serial++);
    path_of(from, 4096, n->dir, n->base);
    path_of(dest, 4096, to->dir, to->base);
    return n;
}

static void op_rename(void)
{
    struct slot *s = any_slot();
    if (!s)
        return;
    struct name to;
    char from[4096], dest[4096];
    struct name *n = pick_move(s, &to, from, dest);
    me->renames++;
    if (rename(from, dest) != 0) {
        fail("rename", from, "to s%u/%s: %s", to.dir, to.base, errno_name(errno));
        return;
    }
    *n = to;
    expect_gone("rename", from);
    if (check_own_stat("rename", dest, s) == 0 && pick(2))
        check_own_content("rename", dest, s);
}

static void op_link(void)
{
    struct slot *s = any_slot();
    if (!s || s->nnames == MAXNAMES)
        return;
    struct name to;
    char from[4096], dest[4096];
    pick_move(s, &to, from, dest);
    me->links++;
    if (link(from, dest) != 0) {
        fail("link", from, "to s%u/%s: %s", to.dir, to.base, errno_name(errno));
        return;
    }
    s->names[s->nnames++] = to;
    if (check_own_stat("link", dest, s) == 0 && check_own_stat("link", from, s) == 0)
        check_own_content("link", dest, s);
}

static void op_unlink(void)
{
    struct slot *s = any_slot();
    if (!s)
        return;
    unsigned j = pick(s->nnames);
    char path[4096];
    path_of(path, sizeof path, s->names[j].dir, s->names[j].base);
    me->unlinks++;
    if (unlink(path) != 0) {
        fail("unlink", path, "%s", errno_name(errno));
        return;
    }
    s->names[j] = s->names[--s->nnames];
    expect_gone("unlink", path);
    if (s->nnames == 0) {
        s->used = 0;
        return;
    }
    path_of(path, sizeof path, s->names[0].dir, s->names[0].base);
    if (check_own_stat("unlink", path, s) == 0)
        check_own_content("unlink", path, s);
}

/* mkdir a directory of our own (sometimes with a file in it), or remove one: a directory
 * with a file must refuse rmdir with ENOTEMPTY, an empty one must go. */
static void op_dir(void)
{
    char path[4096], child[4200];
    struct odir *d = &dirs[pick(MAXDIRS)];
    if (!d->used) {
        d->dir = pick(NSHARED);
        snprintf(d->base, sizeof d->base, "w%u-d%u", self, serial++);
        path_of(path, sizeof path, d->dir, d->base);
        me->mkdirs++;
        if (mkdir(path, 0755) != 0) {
            fail("mkdir", path, "%s", errno_name(errno));
            return;
        }
        d->used = 1;
        d->has_child = 0;
        struct stat st;
        if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
            fail("mkdir", path, "lstat after mkdir: %s, mode %o", errno_name(errno), st.st_mode);
            return;
        }
        if (pick(2)) {
            snprintf(child, sizeof child, "%s/x", path);
            size_t len = content_make(buf, sizeof buf, d->base, 0, 100);
            if (write_new("mkdir", child, buf, len) == 0)
                d->has_child = 1;
        }
        return;
    }
    path_of(path, sizeof path, d->dir, d->base);
    me->rmdirs++;
    if (d->has_child) {
        if (rmdir(path) == 0) {
            fail("rmdir", path, "removed a directory that holds a file");
            d->used = 0;
            return;
        }
        if (errno != ENOTEMPTY && errno != EEXIST)
            fail("rmdir", path, "of a non-empty directory: %s, expected ENOTEMPTY", errno_name(errno));
        snprintf(child, sizeof child, "%s/x", path);
        if (unlink(child) != 0)
            fail("rmdir", child, "unlink: %s", errno_name(errno));
    }
    if (rmdir(path) != 0) {
        fail("rmdir", path, "%s", errno_name(errno));
        return;
    }
    d->used = 0;
    expect_gone("rmdir", path);
}

/* Lists one shared directory: every name of ours in it must be listed exactly once (nobody
 * else touches them, so POSIX's leeway for entries changed during the listing does not
 * apply), and every other name must stat or be gone (ENOENT), with its listed type. */
static void op_readdir(void)
{
    unsigned d = pick(NSHARED);
    char dirpath[4096], path[4400], mine[32];
    snprintf(dirpath, sizeof dirpath, "%s/s%u", cfg->root, d);
    snprintf(mine, sizeof mine, "w%u-", self);
    char (*names)[256];
    unsigned char *types;
    size_t count;
    me->readdirs++;
    if (list_dir(dirpath, &names, &types, &count) != 0) {
        fail("readdir", dirpath, "%s", errno_name(errno));
        return;
    }
    unsigned seen[MAXSLOTS][MAXNAMES] = { { 0 } }, seen_dirs[MAXDIRS] = { 0 };
    for (size_t i = 0; i < count; i++) {
        const char *e = names[i];
        snprintf(path, sizeof path, "%s/%s", dirpath, e);
        if (strncmp(e, mine, strlen(mine)) == 0) {
            int found = 0;
            for (unsigned k = 0; k < MAXSLOTS; k++)
                for (unsigned j = 0; slots[k].used && j < slots[k].nnames; j++)
                    if (slots[k].names[j].dir == d && strcmp(slots[k].names[j].base, e) == 0)
                        seen[k][j]++, found = 1;
            for (unsigned k = 0; k < MAXDIRS; k++)
                if (dirs[k].used && dirs[k].dir == d && strcmp(dirs[k].base, e) == 0)
                    seen_dirs[k]++, found = 1;
            if (!found)
                fail("readdir", path, "lists a name of ours that no longer exists");
            continue;
        }
        struct stat st;
        me->lookups++;
        if (lstat(path, &st) != 0) {
            if (errno != ENOENT)
                fail("readdir", path, "lstat of a listed name: %s", errno_name(errno));
            continue;
        }
        int want_dir = strstr(e, "-d") || strstr(e, "-t");
        int is_tmp = strncmp(e, "tmp-", 4) == 0;
        if ((want_dir && !is_tmp) ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode))
            fail("readdir", path, "has type %o", st.st_mode & S_IFMT);
        if (types[i] != DT_UNKNOWN && types[i] != (S_ISDIR(st.st_mode) ? DT_DIR : DT_REG))
            fail("readdir", path, "listed with d_type %u, lstat says mode %o", types[i], st.st_mode);
    }
    for (unsigned k = 0; k < MAXSLOTS; k++)
        for (unsigned j = 0; slots[k].used && j < slots[k].nnames; j++)
            if (slots[k].names[j].dir == d && seen[k][j] != 1)
                fail("readdir", dirpath, "lists our %s %u times", slots[k].names[j].base, seen[k][j]);
    for (unsigned k = 0; k < MAXDIRS; k++)
        if (dirs[k].used && dirs[k].dir == d && seen_dirs[k] != 1)
            fail("readdir", dirpath, "lists our directory %s %u times", dirs[k].base, seen_dirs[k]);
    free(names);
    free(types);
}

/* Removes everything this worker still owns. */
static void cleanup(void)
{
    char path[4096], child[4200];
    for (unsigned k = 0; k < MAXSLOTS; k++)
        for (unsigned j = 0; slots[k].used && j < slots[k].nnames; j++) {
            path_of(path, sizeof path, slots[k].names[j].dir, slots[k].names[j].base);
            if (unlink(path) != 0)
                fail("cleanup", path, "unlink: %s", errno_name(errno));
        }
    for (unsigned k = 0; k < MAXDIRS; k++) {
        if (!dirs[k].used)
            continue;
        path_of(path, sizeof path, dirs[k].dir, dirs[k].base);
        snprintf(child, sizeof child, "%s/x", path);
        if (dirs[k].has_child && unlink(child) != 0)
            fail("cleanup", child, "unlink: %s", errno_name(errno));
        if (rmdir(path) != 0)
            fail("cleanup", path, "rmdir: %s", errno_name(errno));
    }
}

void worker_run(void)
{
    static const struct { void (*op)(void); unsigned weight; } mix[] = {
        { op_create, 14 }, { op_verify, 10 }, { op_replace, 6 }, { op_rename, 12 },
        { op_link, 8 }, { op_unlink, 10 }, { op_dir, 6 }, { op_readdir, 8 },
        { op_look, 16 }, { op_reuse, 6 },
    };
    unsigned total = 0, trees_done = 0;
    for (size_t i = 0; i < sizeof mix / sizeof mix[0]; i++)
        total += mix[i].weight;
    for (unsigned n = 0; n < cfg->ops && !time_is_up(); n++) {
        me->ops++;
        /* Trees spread over the run, so their removal overlaps everyone else's work. */
        if (trees_done < cfg->trees && n >= (uint64_t)cfg->ops * (trees_done + 1) / (cfg->trees + 1)) {
            tree_build_and_remove(trees_done++);
            continue;
        }
        unsigned r = pick(total);
        size_t i = 0;
        while (r >= mix[i].weight)
            r -= mix[i++].weight;
        mix[i].op();
    }
    cleanup();
}
