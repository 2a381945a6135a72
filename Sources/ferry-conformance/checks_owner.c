/*
 * Ownership changed by a file's unprivileged owner, and the set-id bits that chown and
 * another user's truncation must clear. Every result is read back with lstat_fresh, so a
 * server that answers with what it was asked rather than what it stored is caught.
 */
#include "conformance.h"

/* The owner's supplementary group, and a group the owner is not in. */
#define TEAM_GID 4444
#define OTHER_GID 5555

static const gid_t team[] = {TEAM_GID};

static int expect_owner(const char *path, uid_t uid, gid_t gid)
{
    struct stat st;
    MUST(lstat_fresh(path, &st));
    MUST_TRUE(st.st_uid == uid && st.st_gid == gid, "%s: expected owner %d:%d, got %d:%d", path,
              (int)uid, (int)gid, (int)st.st_uid, (int)st.st_gid);
    return CHECK_OK;
}

static int expect_mode(const char *path, mode_t mode, const char *after)
{
    struct stat st;
    MUST(lstat_fresh(path, &st));
    MUST_TRUE((st.st_mode & 07777) == mode, "%s after %s: expected mode 0%o, got 0%o", path, after,
              (unsigned)mode, (unsigned)(st.st_mode & 07777));
    return CHECK_OK;
}

static int owner_chowns_to_its_groups(void *arg)
{
    (void)arg;
    MUST(put_file("u/f", "x", 1));
    EXPECT(expect_owner("u/f", NOBODY, NOBODY));
    MUST(chown("u/f", (uid_t)-1, TEAM_GID));
    EXPECT(expect_owner("u/f", NOBODY, TEAM_GID));
    int fd = open("u/f", O_RDONLY);
    MUST(fd);
    MUST(fchown(fd, (uid_t)-1, NOBODY));
    EXPECT(expect_owner("u/f", NOBODY, NOBODY));
    /* Naming its own uid is no change of owner, so it is allowed with the group change. */
    MUST(fchown(fd, NOBODY, TEAM_GID));
    EXPECT(expect_owner("u/f", NOBODY, TEAM_GID));
    /* A group the owner is not in, or another owner, stays refused. */
    MUST_ERRNO(fchown(fd, (uid_t)-1, OTHER_GID), EPERM);
    MUST_ERRNO(fchown(fd, 0, (gid_t)-1), EPERM);
    MUST(close(fd));
    EXPECT(expect_owner("u/f", NOBODY, TEAM_GID));

    MUST(mkdir("u/d", 0755));
    MUST(chown("u/d", (uid_t)-1, TEAM_GID));
    EXPECT(expect_owner("u/d", NOBODY, TEAM_GID));

    /* lchown changes the link, not the file it names. */
    MUST(put_file("u/target", "t", 1));
    MUST(symlink("target", "u/l"));
    MUST(lchown("u/l", (uid_t)-1, TEAM_GID));
    EXPECT(expect_owner("u/l", NOBODY, TEAM_GID));
    EXPECT(expect_owner("u/target", NOBODY, NOBODY));

    /* Membership is no right over a file someone else owns. */
    MUST_ERRNO(chown("u/roots", (uid_t)-1, TEAM_GID), EPERM);

    /* And the change of group clears a set-id program's bits (chown_clears_setuid has the
     * rest of those rules). */
    MUST(put_file("u/prog", "#!/bin/sh\n", 10));
    MUST(chmod("u/prog", 06755));
    MUST(chown("u/prog", (uid_t)-1, TEAM_GID));
    EXPECT(expect_owner("u/prog", NOBODY, TEAM_GID));
    EXPECT(expect_mode("u/prog", 0755, "chown to the owner's supplementary group"));
    return CHECK_OK;
}

/* chown(2) by a file's owner to a group it belongs to only as a supplementary group.
 * FUSE passes no supplementary groups: the kernel has already checked membership, and a
 * server that re-checks with the caller's uid and primary gid alone refuses it. */
static int chown_supplementary_group(void)
{
    MUST(mkdir("u", 0755));
    MUST(chown("u", NOBODY, NOBODY));
    MUST(put_file("u/roots", "r", 1));
    int r = run_as(NOBODY, NOBODY, team, 1, owner_chowns_to_its_groups, NULL);
    if (r != CHECK_OK)
        return r;
    EXPECT(expect_owner("u/f", NOBODY, TEAM_GID));
    EXPECT(expect_owner("u/d", NOBODY, TEAM_GID));
    EXPECT(expect_owner("u/l", NOBODY, TEAM_GID));
    EXPECT(expect_owner("u/roots", 0, 0));
    return CHECK_OK;
}

static int owner_chown_clears(const char *path, mode_t before, uid_t uid, gid_t gid, mode_t after)
{
    MUST(put_file(path, "#!/bin/sh\n", 10));
    MUST(chmod(path, before));
    EXPECT(expect_mode(path, before, "chmod"));
    MUST(chown(path, uid, gid));
    char what[64];
    snprintf(what, sizeof what, "chown(%d, %d) from 0%o", (int)uid, (int)gid, (unsigned)before);
    return expect_mode(path, after, what);
}

static int owner_chowns_setid_files(void *arg)
{
    (void)arg;
    /* S_ISUID always goes; S_ISGID goes when group execute makes it a set-gid program. The
     * owner names its own uid or primary group: no change of owner, yet the bits go. */
    EXPECT(owner_chown_clears("u/both", 06755, NOBODY, NOBODY, 0755));
    EXPECT(owner_chown_clears("u/uid", 04755, NOBODY, (gid_t)-1, 0755));
    EXPECT(owner_chown_clears("u/gid", 02755, (uid_t)-1, NOBODY, 0755));
    /* Without group execute, S_ISGID marks mandatory locking, and an owner in the file's
     * group keeps it. */
    EXPECT(owner_chown_clears("u/lock", 02745, (uid_t)-1, NOBODY, 02745));
    return CHECK_OK;
}

/* chown(2) clears the set-user-id bit and the set-group-id bit of an executable, whoever
 * calls it: the file's unprivileged owner and root alike (Linux since 2.2.13). The owner's
 * chown to a supplementary group is chown_supplementary_group's. */
static int chown_clears_setuid(void)
{
    MUST(mkdir("u", 0755));
    MUST(chown("u", NOBODY, NOBODY));
    int r = run_as_nobody(owner_chowns_setid_files, NULL);
    if (r != CHECK_OK)
        return r;
    EXPECT(expect_mode("u/both", 0755, "the owner's chown (seen by root)"));
    EXPECT(expect_owner("u/both", NOBODY, NOBODY));
    EXPECT(owner_chown_clears("root", 06755, 1234, 5678, 0755));
    EXPECT(expect_owner("root", 1234, 5678));
    return CHECK_OK;
}

static int other_user_truncates(void *arg)
{
    const char *how = arg;
    if (strcmp(how, "truncate") == 0) {
        MUST(truncate("f", 3));
    } else if (strcmp(how, "O_TRUNC") == 0) {
        int fd = open("f", O_WRONLY | O_TRUNC);
        MUST(fd);
        MUST(close(fd));
    } else {
        int fd = open("f", O_WRONLY);
        MUST(fd);
        MUST(ftruncate(fd, 2));
        MUST(close(fd));
    }
    return CHECK_OK;
}

/* Truncation is a write: another user's truncate(2), ftruncate(2) or O_TRUNC clears the set-id
 * bits of a root-owned executable it may write; root's own truncation keeps them. */
static int truncate_clears_setuid(void)
{
    static const char *const ways[] = {"truncate", "O_TRUNC", "ftruncate"};
    MUST(put_file("f", "original", 8));
    for (size_t i = 0; i < sizeof ways / sizeof ways[0]; i++) {
        MUST(chmod("f", 06777));
        EXPECT(expect_mode("f", 06777, "chmod"));
        int r = run_as_nobody(other_user_truncates, (void *)ways[i]);
        if (r != CHECK_OK)
            return r;
        char what[64];
        snprintf(what, sizeof what, "%s by uid %d", ways[i], NOBODY);
        EXPECT(expect_mode("f", 0777, what));
    }
    MUST(chmod("f", 06777));
    MUST(truncate("f", 1));
    EXPECT(expect_mode("f", 06777, "truncate by root"));
    return CHECK_OK;
}

const struct check owner_checks[] = {
    {"chown_supplementary_group", chown_supplementary_group},
    {"chown_clears_setuid", chown_clears_setuid},
    {"truncate_clears_setuid", truncate_clears_setuid},
    {NULL, NULL},
};
