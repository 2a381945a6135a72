// FUSE over io_uring (Linux 6.14+, FUSE protocol 7.42): the raw io_uring system calls, the
// mapped submission and completion rings, and the kernel's FUSE ring structures, which
// Debian 12's linux-libc-dev (6.1) and liburing (2.3) do not have yet. Defined here from
// the kernel's include/uapi/linux/fuse.h; sizes are asserted in uring.c.
// Functions return 0 (or a count) on success and a negated errno on failure.
#pragma once
#include <stdint.h>
#include <stddef.h>

/// FUSE_OVER_IO_URING: bit 41 of the INIT flags (bit 9 of flags2).
#define FERRY_FUSE_OVER_IO_URING (1ULL << 41)

/// The sizes of the two header areas of `struct fuse_uring_req_header`.
#define FERRY_FUSE_URING_IN_OUT_HEADER_SZ 128
#define FERRY_FUSE_URING_OP_IN_OUT_SZ 128

/// `struct fuse_uring_ent_in_out`: per request, what the kernel tells the server (the commit
/// id, the payload length) and what the server answers (the reply's payload length).
struct ferry_fuse_uring_ent_in_out {
    uint64_t flags;
    uint64_t commit_id;
    uint32_t payload_sz;
    uint32_t padding;
    uint64_t reserved;
};

/// `struct fuse_uring_req_header`: the first buffer of every ring entry. `in_out` holds the
/// fuse_in_header of a request and the fuse_out_header of its reply; `op_in` the request's
/// first (per-opcode) argument; every other argument and the reply body go in the payload.
struct ferry_fuse_uring_req_header {
    char in_out[FERRY_FUSE_URING_IN_OUT_HEADER_SZ];
    char op_in[FERRY_FUSE_URING_OP_IN_OUT_SZ];
    struct ferry_fuse_uring_ent_in_out ring_ent_in_out;
};

/// `enum fuse_uring_cmd`: the `cmd_op` of an IORING_OP_URING_CMD on /dev/fuse.
enum {
    FERRY_FUSE_IO_URING_CMD_INVALID = 0,
    /// Hand the kernel an entry's two buffers and wait for a request in them.
    FERRY_FUSE_IO_URING_CMD_REGISTER = 1,
    /// Answer the request in an entry and wait for the next one in the same entry.
    FERRY_FUSE_IO_URING_CMD_COMMIT_AND_FETCH = 2,
};

/// `struct fuse_uring_cmd_req`: the command area of the (128-byte) SQE.
struct ferry_fuse_uring_cmd_req {
    uint64_t flags;
    uint64_t commit_id;
    uint16_t qid;
    uint8_t padding[6];
};

/// One io_uring instance with SQE128 entries, its rings mapped. Used by one thread.
struct ferry_uring {
    int fd;
    unsigned sq_entries;
    unsigned cq_entries;
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
    unsigned *cq_head, *cq_tail, *cq_mask;
    void *cqes;          // struct io_uring_cqe[cq_entries]
    void *sqes;          // struct io_uring_sqe[sq_entries], 128 bytes each
    void *sq_ring; size_t sq_ring_size;
    void *cq_ring; size_t cq_ring_size;   // == sq_ring with IORING_FEAT_SINGLE_MMAP
    size_t sqes_size;
    unsigned queued;     // SQEs written since the last submit
};

/// Sets up a ring of at least `entries` SQEs, restricted to IORING_OP_URING_CMD (the ring is
/// created disabled and restricted: a confined process cannot use it for any other operation,
/// which seccomp would not see), and maps it. Still disabled: see ferry_uring_enable.
int ferry_uring_open(struct ferry_uring *ring, unsigned entries);
/// Enables the ring; the calling thread becomes its only submitter (SINGLE_ISSUER).
int ferry_uring_enable(struct ferry_uring *ring);
/// Unmaps and closes. Safe on a ring whose open failed (fd < 0).
void ferry_uring_close(struct ferry_uring *ring);
/// Writes one FUSE ring command into the next SQE. `iov` (two struct iovec: header, payload)
/// only for REGISTER, and must stay valid until the command completes. -EBUSY when full.
int ferry_uring_queue_fuse(struct ferry_uring *ring, int fuse_fd, uint32_t cmd_op, uint16_t qid,
                           uint64_t commit_id, const void *iov, uint64_t user_data);
/// Submits what was queued and waits for at least `wait_nr` completions. -EINTR is returned
/// as is (the caller retries).
int ferry_uring_submit_and_wait(struct ferry_uring *ring, unsigned wait_nr);
/// Takes the next completion: 1 with `res` and `user_data` filled, or 0 when there is none.
int ferry_uring_next_completion(struct ferry_uring *ring, int32_t *res, uint64_t *user_data);
/// io_uring_setup with nothing usable, to tell whether the kernel lets this process use io_uring:
/// 0 or the negated errno (ENOSYS: no io_uring; EPERM: io_uring_disabled or seccomp).
int ferry_uring_probe(void);
