#pragma once
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

/// Process-wide confinement steps that Swift cannot call directly (raw syscalls,
/// variadic prctl, fork). Each returns 0 or -1 with errno set, unless said otherwise.

int ferry_sb_unshare(int flags);
/// CLONE_NEW* flags, for Swift.
int ferry_sb_clone_newns(void);
int ferry_sb_clone_newpid(void);
int ferry_sb_clone_newnet(void);
int ferry_sb_clone_newipc(void);
pid_t ferry_sb_fork(void);
/// In a child: receive SIGKILL when the parent dies.
int ferry_sb_die_with_parent(void);

/// mount --make-rslave /: nothing mounted from here on propagates back to the host.
int ferry_sb_make_root_slave(void);
/// Bind-mounts `path` onto itself (so it is a mount point pivot_root accepts).
int ferry_sb_bind_self(const char *path);
/// chdir(path); pivot_root(".", "."); umount2(".", MNT_DETACH); chdir("/").
int ferry_sb_pivot_into(const char *path);
/// A tmpfs (mode 0755, nosuid, nodev) on `target`: the start of a private root.
int ferry_sb_mount_tmpfs(const char *target);
/// mkdir(path, 0755); an existing one is fine.
int ferry_sb_make_directory(const char *path);
/// chdir(new_root); pivot_root(".", put_old); chdir("/"). `put_old` is a directory in
/// `new_root`, named relative to it; the old root is then at "/" + put_old.
int ferry_sb_pivot_keeping_old(const char *new_root, const char *put_old);
/// Creates `path`'s missing parents (0755), then `path` itself: a directory, or an empty file.
int ferry_sb_make_mount_point(const char *path, int directory);
/// Bind-mounts `source` (and what is mounted under it) on `target`; read-only if asked,
/// keeping the source mount's nosuid, nodev, noexec and atime flags.
int ferry_sb_bind(const char *source, const char *target, int read_only);
/// A proc file system (nosuid, nodev, noexec) on `target`, for the caller's PID namespace.
int ferry_sb_mount_proc(const char *target);
/// umount2(path, MNT_DETACH), then rmdir(path).
int ferry_sb_detach(const char *path);
/// Makes the root mount read-only (bind remount, nosuid, nodev).
int ferry_sb_remount_root_read_only(void);
/// chroot(path); chdir("/").
int ferry_sb_chroot_into(const char *path);

int ferry_sb_no_new_privs(void);
int ferry_sb_get_no_new_privs(void);
/// Keeps exactly the capabilities in `keep` (a bit mask of CAP_* numbers, 0..63) in the
/// permitted and effective sets, clears inheritable and ambient, and drops every other
/// capability from the bounding set.
int ferry_sb_limit_capabilities(uint64_t keep);
/// The effective set now.
uint64_t ferry_sb_effective_capabilities(void);
/// setgroups(0, NULL) for the whole process (every thread, via glibc).
int ferry_sb_drop_supplementary_groups(void);

/// SIGSYS handler for seccomp's trap mode: writes the blocked system call's number and
/// name to standard error, then dies of SIGSYS.
int ferry_sb_report_sigsys(void);
/// Makes the raw system call `nr` with no arguments (for the seccomp self-check).
long ferry_sb_raw_syscall(long nr);

/// Gives SIGTERM, SIGINT, SIGHUP and SIGUSR1 a handler that does nothing. The init process
/// of a PID namespace never receives a signal whose disposition is the default, even one it
/// has blocked to take with sigwait; with a handler installed, sigwait gets them again.
int ferry_sb_accept_termination_signals(void);
