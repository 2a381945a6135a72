/*
 * Shared declarations of ferry-churn, a concurrent file-system checker.
 *
 * Every worker owns the names it creates (they start with "w<worker>-"), so its own model
 * of them is exact: an errno on its own name that the model says is impossible is a
 * failure. Names of other workers are only looked up, listed, stat'ed and read, where a
 * racing delete (ENOENT) is the one error allowed.
 */
#ifndef FERRY_CHURN_H
#define FERRY_CHURN_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define NSHARED 4        /* shared directories s0..s3 every worker works in */
#define MAXSLOTS 24      /* files a worker owns at once */
#define MAXNAMES 4       /* names (hard links) of one file */
#define MAXDIRS 6        /* directories a worker owns at once */
#define MAXWORKERS 64

/* What one worker did and found, in memory shared with the parent. */
struct counts {
    uint64_t ops, creates, replaces, renames, links, unlinks, mkdirs, rmdirs, readdirs,
        lookups, reads, verifies, reuse_rounds, reuse_seen, trees, tree_entries, failures;
    int stopped_by_time;
};

struct config {
    const char *root;     /* the run's own directory inside --dir */
    unsigned workers, ops, seconds, tree_width, trees;
    uint64_t seed;
    int verbose;
};

extern const struct config *cfg;
extern struct counts *me;   /* this worker's counters */
extern unsigned self;       /* this worker's index */

/* Reports a failure of this worker ("FAIL w3 rename s1/w3-f2-0 -> s2/w3-f2-1: ESTALE"). */
void fail(const char *op, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *errno_name(int e);

/* Deterministic pseudo-random numbers (splitmix64), one stream per worker. */
uint64_t rnd(void);
void rnd_seed(uint64_t seed);
static inline unsigned pick(unsigned n) { return n ? (unsigned)(rnd() % n) : 0; }

/* File content derived from (id, gen): a header line, then `body` bytes from a stream
 * seeded by both, so any read can tell whether the bytes belong to that file. */
size_t content_make(char *buf, size_t cap, const char *id, unsigned gen, size_t body);
/* Checks `len` bytes read from a file; returns 0 if they are the content of `id` (any gen
 * when want_gen < 0), else -1 with why in `why`. */
int content_check(const char *buf, size_t len, const char *id, long want_gen, char *why, size_t whycap);

/* Writes the whole buffer to a new file at path (O_CREAT|O_EXCL); 0 or -1 (reported). */
int write_new(const char *op, const char *path, const char *buf, size_t len);
/* Reads a whole file into buf (at most cap); returns its length, -1 with errno set. */
ssize_t read_all(const char *path, char *buf, size_t cap);
extern const char *read_all_step;   /* "open" or "read": where read_all failed */

/* The worker's loop and the final sweep. */
void worker_run(void);
int tree_build_and_remove(unsigned n);
int remove_tree(const char *path, int report_leftovers);
int list_dir(const char *path, char (**names)[256], unsigned char **types, size_t *count);

/* The operations on other workers' names and on a private directory. */
void op_look(void);
void op_reuse(void);

int time_is_up(void);

#endif
