#define _GNU_SOURCE
#include "cferry_uring.h"
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <linux/io_uring.h>

_Static_assert(sizeof(struct ferry_fuse_uring_ent_in_out) == 32, "fuse_uring_ent_in_out");
_Static_assert(sizeof(struct ferry_fuse_uring_req_header) == 288, "fuse_uring_req_header");
_Static_assert(sizeof(struct ferry_fuse_uring_cmd_req) == 24, "fuse_uring_cmd_req");
_Static_assert(sizeof(struct io_uring_sqe) == 64, "io_uring_sqe");
// The command area starts at offset 48 and, with SQE128, has 80 bytes.
_Static_assert(offsetof(struct io_uring_sqe, cmd) == 48, "sqe cmd offset");

static int setup(unsigned entries, struct io_uring_params *p) {
    return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int enter(int fd, unsigned submit, unsigned wait, unsigned flags) {
    return (int)syscall(__NR_io_uring_enter, fd, submit, wait, flags, NULL, 0);
}

static int reg(int fd, unsigned op, void *arg, unsigned nr) {
    return (int)syscall(__NR_io_uring_register, fd, op, arg, nr);
}

int ferry_uring_probe(void) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    int fd = setup(1, &p);
    if (fd < 0) return -errno;
    close(fd);
    return 0;
}

void ferry_uring_close(struct ferry_uring *ring) {
    if (ring->sqes && ring->sqes != MAP_FAILED) munmap(ring->sqes, ring->sqes_size);
    if (ring->cq_ring && ring->cq_ring != MAP_FAILED && ring->cq_ring != ring->sq_ring)
        munmap(ring->cq_ring, ring->cq_ring_size);
    if (ring->sq_ring && ring->sq_ring != MAP_FAILED) munmap(ring->sq_ring, ring->sq_ring_size);
    if (ring->fd >= 0) close(ring->fd);
    memset(ring, 0, sizeof *ring);
    ring->fd = -1;
}

int ferry_uring_enable(struct ferry_uring *ring) {
    return reg(ring->fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0) < 0 ? -errno : 0;
}

int ferry_uring_open(struct ferry_uring *ring, unsigned entries) {
    memset(ring, 0, sizeof *ring);
    ring->fd = -1;
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    // SQE128: the FUSE command does not fit a 64-byte SQE. COOP_TASKRUN: completions run when
    // the thread enters the kernel anyway (it always waits in io_uring_enter), no IPI.
    p.flags = IORING_SETUP_SQE128 | IORING_SETUP_R_DISABLED | IORING_SETUP_COOP_TASKRUN;
    // One thread submits and reaps; the kernel's work for it (copying a request into an
    // entry) waits until that thread asks for completions, instead of interrupting it.
    // The ring is enabled by that thread (ferry_uring_enable), which makes it the submitter.
    p.flags |= IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    // Every entry has one command outstanding; completions never outnumber entries.
    p.flags |= IORING_SETUP_CQSIZE;
    p.cq_entries = entries * 2;
    int fd = setup(entries, &p);
    if (fd < 0) return -errno;
    ring->fd = fd;

    ring->sq_ring_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    ring->cq_ring_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        if (ring->cq_ring_size > ring->sq_ring_size) ring->sq_ring_size = ring->cq_ring_size;
        ring->cq_ring_size = ring->sq_ring_size;
    }
    ring->sq_ring = mmap(NULL, ring->sq_ring_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    if (ring->sq_ring == MAP_FAILED) { int e = errno; ferry_uring_close(ring); return -e; }
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        ring->cq_ring = ring->sq_ring;
    } else {
        ring->cq_ring = mmap(NULL, ring->cq_ring_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
        if (ring->cq_ring == MAP_FAILED) { int e = errno; ferry_uring_close(ring); return -e; }
    }
    ring->sqes_size = (size_t)p.sq_entries * 128;
    ring->sqes = mmap(NULL, ring->sqes_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (ring->sqes == MAP_FAILED) { int e = errno; ferry_uring_close(ring); return -e; }

    char *sq = ring->sq_ring, *cq = ring->cq_ring;
    ring->sq_entries = p.sq_entries;
    ring->cq_entries = p.cq_entries;
    ring->sq_head = (unsigned *)(sq + p.sq_off.head);
    ring->sq_tail = (unsigned *)(sq + p.sq_off.tail);
    ring->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    ring->sq_array = (unsigned *)(sq + p.sq_off.array);
    ring->cq_head = (unsigned *)(cq + p.cq_off.head);
    ring->cq_tail = (unsigned *)(cq + p.cq_off.tail);
    ring->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    ring->cqes = cq + p.cq_off.cqes;
    // SQE i always sits in array slot i: SQEs are used in ring order.
    for (unsigned i = 0; i < p.sq_entries; i++) ring->sq_array[i] = i;

    struct io_uring_restriction only_cmd;
    memset(&only_cmd, 0, sizeof only_cmd);
    only_cmd.opcode = IORING_RESTRICTION_SQE_OP;
    only_cmd.sqe_op = IORING_OP_URING_CMD;
    if (reg(fd, IORING_REGISTER_RESTRICTIONS, &only_cmd, 1) < 0) {
        int e = errno;
        ferry_uring_close(ring);
        return -e;
    }
    return 0;
}

int ferry_uring_queue_fuse(struct ferry_uring *ring, int fuse_fd, uint32_t cmd_op, uint16_t qid,
                           uint64_t commit_id, const void *iov, uint64_t user_data) {
    unsigned head = __atomic_load_n(ring->sq_head, __ATOMIC_ACQUIRE);
    unsigned tail = *ring->sq_tail + ring->queued;
    if (tail - head >= ring->sq_entries) return -EBUSY;
    struct io_uring_sqe *sqe = (struct io_uring_sqe *)((char *)ring->sqes + (size_t)(tail & *ring->sq_mask) * 128);
    memset(sqe, 0, 128);
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = fuse_fd;
    sqe->cmd_op = cmd_op;
    if (iov) {
        sqe->addr = (uint64_t)(uintptr_t)iov;
        sqe->len = 2;
    }
    sqe->user_data = user_data;
    struct ferry_fuse_uring_cmd_req *req = (struct ferry_fuse_uring_cmd_req *)sqe->cmd;
    req->commit_id = commit_id;
    req->qid = qid;
    ring->queued++;
    return 0;
}

int ferry_uring_submit_and_wait(struct ferry_uring *ring, unsigned wait_nr) {
    unsigned tail = *ring->sq_tail + ring->queued;
    // The SQEs must be visible before the kernel sees the new tail.
    if (ring->queued) __atomic_store_n(ring->sq_tail, tail, __ATOMIC_RELEASE);
    ring->queued = 0;
    // Everything published and not yet consumed, including what an interrupted call left.
    unsigned submit = tail - __atomic_load_n(ring->sq_head, __ATOMIC_ACQUIRE);
    int rc = enter(ring->fd, submit, wait_nr, wait_nr ? IORING_ENTER_GETEVENTS : 0);
    return rc < 0 ? -errno : rc;
}

int ferry_uring_next_completion(struct ferry_uring *ring, int32_t *res, uint64_t *user_data) {
    unsigned head = *ring->cq_head;
    unsigned tail = __atomic_load_n(ring->cq_tail, __ATOMIC_ACQUIRE);
    if (head == tail) return 0;
    struct io_uring_cqe *cqe = (struct io_uring_cqe *)ring->cqes + (head & *ring->cq_mask);
    *res = cqe->res;
    *user_data = cqe->user_data;
    __atomic_store_n(ring->cq_head, head + 1, __ATOMIC_RELEASE);
    return 1;
}
