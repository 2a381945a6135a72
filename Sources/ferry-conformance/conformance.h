/*
 * Shared declarations for the conformance checks.
 *
 * Every check runs in its own forked child whose working directory is a fresh, empty
 * directory; checks use relative paths only, so a child that drops to an unprivileged
 * uid never needs search permission on the directories above it.
 */
#ifndef FERRY_CONFORMANCE_H
#define FERRY_CONFORMANCE_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/*
 * A check's result, which is also its child's exit status. CHECK_ABANDONED fails the check
 * and tells the runner to leave its directory alone: a request there has not returned, and
 * removing the tree would wait behind it (the directory stays locked until it does).
 */
enum { CHECK_OK = 0, CHECK_FAIL = 1, CHECK_SKIP = 2, CHECK_ABANDONED = 3 };

/* wait_child_within's answer when the child is still running at the deadline. */
#define CHECK_TIMED_OUT (-1)

struct check {
    const char *name;
    int (*run)(void);
};

/* Each theme file exports its table; main.c concatenates them. */
extern const struct check io_checks[];
extern const struct check file_checks[];
extern const struct check name_checks[];
extern const struct check link_checks[];
extern const struct check rename_checks[];
extern const struct check attr_checks[];
extern const struct check proc_checks[];
extern const struct check owner_checks[];
extern const struct check time_checks[];
extern const struct check limit_checks[];
extern const struct check bigdir_checks[];
extern const struct check petabyte_checks[];

/* Entries the wide-directory check creates (--entries; 100,000 unless told). */
extern long big_dir_entries;

/*
 * Reporting goes straight to the runner's pipe (not a buffer) so that messages from
 * grandchildren (lock holders, appenders, unprivileged children) are not lost.
 */
void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Report and return CHECK_FAIL from the calling check. */
#define FAIL(...) do { report(__VA_ARGS__); return CHECK_FAIL; } while (0)
#define SKIP(...) do { report(__VA_ARGS__); return CHECK_SKIP; } while (0)

/* `expr` must succeed (return >= 0); errno is captured before anything can clobber it. */
#define MUST(expr) do { \
    if ((long)(expr) < 0) { int e_ = errno; \
        FAIL("%s: expected success, got %s (%s)", #expr, errno_name(e_), strerror(e_)); } \
} while (0)

/* `expr` must fail with exactly `err`. */
#define MUST_ERRNO(expr, err) do { \
    errno = 0; long r_ = (long)(expr); int e_ = errno; \
    if (r_ >= 0) FAIL("%s: expected %s, but it succeeded (%ld)", #expr, errno_name(err), r_); \
    if (e_ != (err)) FAIL("%s: expected %s, got %s (%s)", #expr, errno_name(err), errno_name(e_), strerror(e_)); \
} while (0)

#define MUST_EQ(actual, expected) do { \
    long long a_ = (long long)(actual), x_ = (long long)(expected); \
    if (a_ != x_) FAIL("%s: expected %s = %lld, got %lld", #actual, #expected, x_, a_); \
} while (0)

#define MUST_TRUE(cond, ...) do { if (!(cond)) FAIL(__VA_ARGS__); } while (0)

/* Return from the calling check unless a helper that reports its own failure passed. */
#define EXPECT(call) do { int r_ = (call); if (r_ != CHECK_OK) return r_; } while (0)

/* errno's symbolic name ("EEXIST"), because messages compare errno values. */
const char *errno_name(int err);

/* Deterministic bytes: the same (seed, offset) always gives the same byte. */
uint64_t xorshift64(uint64_t *state);
void fill_pattern(unsigned char *buf, size_t len, uint64_t seed);

/* Whole-buffer I/O that retries short transfers; return 0 or -1 with errno set. */
int write_all(int fd, const void *buf, size_t len);
int pwrite_all(int fd, const void *buf, size_t len, off_t off);
int pread_all(int fd, void *buf, size_t len, off_t off);

/* Create `path` holding exactly `len` bytes of `data`; returns 0 or -1 with errno. */
int put_file(const char *path, const void *data, size_t len);
/* Read all of `path` into `buf` (capacity `cap`); returns the length or -1. */
ssize_t get_file(const char *path, void *buf, size_t cap);
/* Compare the file's whole contents with a NUL-terminated string. */
int file_is(const char *path, const char *expected);

/* Remove a tree without following symlinks; 0 or -1 with errno. */
int remove_tree(const char *path);

/* Whether all `len` bytes are zero. */
int is_zero(const void *p, size_t len);

/* Returns the index of the first differing byte, or -1 if equal. */
long first_difference(const unsigned char *a, const unsigned char *b, size_t len);

/*
 * Fork a child that drops to uid/gid 65534 (nobody) and runs `fn(arg)`; returns the
 * child's check result. Used where only an unprivileged caller shows the behaviour.
 */
int run_as_nobody(int (*fn)(void *), void *arg);
#define NOBODY 65534
/* The same with any uid, gid and supplementary groups. */
int run_as(uid_t uid, gid_t gid, const gid_t *groups, size_t ngroups, int (*fn)(void *), void *arg);

/*
 * Wait at most `seconds` for a child: its check result, or CHECK_TIMED_OUT with the child
 * still running. For a step whose cost must follow the data it touches, not its size.
 */
int wait_child_within(pid_t pid, unsigned seconds, const char *what);

/*
 * stat that asks the file server (AT_STATX_FORCE_SYNC) instead of answering from a cache, so
 * a check sees what was stored rather than what the client remembers it asked for.
 */
int lstat_fresh(const char *path, struct stat *st);
int fstat_fresh(int fd, struct stat *st);

/* Wait for a child and turn its exit into a check result, reporting abnormal ends. */
int wait_child(pid_t pid, const char *what);

#endif
