// Interposes the allocator entry points for the whole test process (the test binary
// links this statically, so its symbols win over glibc's) and forwards to glibc's
// own implementations. Only the thread that turned counting on is counted.
#define _GNU_SOURCE
#include "cmalloccounter.h"
#include <stddef.h>
#include <errno.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static __thread int counting;
static __thread uint64_t count;

void ferry_malloc_counting_begin(void) { count = 0; counting = 1; }
uint64_t ferry_malloc_counting_end(void) { counting = 0; return count; }

void *malloc(size_t n) { if (counting) count++; return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { if (counting) count++; return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { if (counting) count++; return __libc_realloc(p, n); }
void free(void *p) { __libc_free(p); }
void *memalign(size_t al, size_t n) { if (counting) count++; return __libc_memalign(al, n); }
void *aligned_alloc(size_t al, size_t n) { if (counting) count++; return __libc_memalign(al, n); }
int posix_memalign(void **out, size_t al, size_t n) {
    if (counting) count++;
    void *p = __libc_memalign(al, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}
