#define _GNU_SOURCE
#include "cferrysandbox.h"
#include <errno.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/capability.h>
#include <seccomp.h>

int ferry_sb_unshare(int flags) { return unshare(flags); }
int ferry_sb_clone_newns(void) { return CLONE_NEWNS; }
int ferry_sb_clone_newpid(void) { return CLONE_NEWPID; }
int ferry_sb_clone_newnet(void) { return CLONE_NEWNET; }
int ferry_sb_clone_newipc(void) { return CLONE_NEWIPC; }
pid_t ferry_sb_fork(void) { return fork(); }
int ferry_sb_die_with_parent(void) { return prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0); }

int ferry_sb_make_root_slave(void) { return mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL); }
int ferry_sb_bind_self(const char *path) { return mount(path, path, NULL, MS_BIND | MS_REC, NULL); }

int ferry_sb_pivot_into(const char *path) {
    if (chdir(path) != 0) return -1;
    if (syscall(SYS_pivot_root, ".", ".") != 0) return -1;
    if (umount2(".", MNT_DETACH) != 0) return -1;
    return chdir("/");
}

int ferry_sb_mount_tmpfs(const char *target) {
    return mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
}

int ferry_sb_make_directory(const char *path) {
    return mkdir(path, 0755) == 0 || errno == EEXIST ? 0 : -1;
}

int ferry_sb_pivot_keeping_old(const char *new_root, const char *put_old) {
    if (chdir(new_root) != 0) return -1;
    if (syscall(SYS_pivot_root, ".", put_old) != 0) return -1;
    return chdir("/");
}

int ferry_sb_make_mount_point(const char *path, int directory) {
    char buffer[4096];
    size_t length = strlen(path);
    if (length == 0 || length >= sizeof buffer || path[0] != '/') { errno = EINVAL; return -1; }
    memcpy(buffer, path, length + 1);
    for (char *slash = strchr(buffer + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
        *slash = 0;
        if (ferry_sb_make_directory(buffer) != 0) return -1;
        *slash = '/';
    }
    if (directory) return ferry_sb_make_directory(buffer);
    int fd = open(buffer, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) return -1;
    return close(fd);
}

int ferry_sb_bind(const char *source, const char *target, int read_only) {
    if (mount(source, target, NULL, MS_BIND | MS_REC, NULL) != 0) return -1;
    if (!read_only) return 0;
    // A bind remount replaces the mount's flags: keep the ones it had.
    struct statvfs st;
    if (statvfs(target, &st) != 0) return -1;
    unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY;
    if (st.f_flag & ST_NOSUID) flags |= MS_NOSUID;
    if (st.f_flag & ST_NODEV) flags |= MS_NODEV;
    if (st.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
    if (st.f_flag & ST_NOATIME) flags |= MS_NOATIME;
    if (st.f_flag & ST_NODIRATIME) flags |= MS_NODIRATIME;
    if (st.f_flag & ST_RELATIME) flags |= MS_RELATIME;
    return mount(NULL, target, NULL, flags, NULL);
}

int ferry_sb_mount_proc(const char *target) {
    return mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
}

int ferry_sb_detach(const char *path) {
    if (umount2(path, MNT_DETACH) != 0) return -1;
    return rmdir(path);
}

int ferry_sb_remount_root_read_only(void) {
    return mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL);
}

int ferry_sb_chroot_into(const char *path) {
    if (chroot(path) != 0) return -1;
    return chdir("/");
}

int ferry_sb_no_new_privs(void) { return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); }
int ferry_sb_get_no_new_privs(void) { return prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0); }

int ferry_sb_limit_capabilities(uint64_t keep) {
    for (int cap = 0; cap <= 63; cap++) {
        if (keep & (1ull << cap)) continue;
        if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) != 1) continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) return -1;
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) return -1;
    struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &header, data) != 0) return -1;
    for (int i = 0; i < 2; i++) {
        uint32_t mask = (uint32_t)(keep >> (32 * i));
        data[i].permitted &= mask;
        data[i].effective &= mask;
        data[i].inheritable = 0;
    }
    return (int)syscall(SYS_capset, &header, data);
}

uint64_t ferry_sb_effective_capabilities(void) {
    struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &header, data) != 0) return 0;
    return (uint64_t)data[0].effective | ((uint64_t)data[1].effective << 32);
}

int ferry_sb_drop_supplementary_groups(void) { return setgroups(0, NULL); }

static void report_sigsys(int sig, siginfo_t *info, void *context) {
    (void)context;
    char line[160];
    char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, info->si_syscall);
    int n = snprintf(line, sizeof line, "ferry: seccomp stopped system call %d (%s)\n",
                     info->si_syscall, name ? name : "unknown");
    if (n > 0) { ssize_t ignored = write(2, line, (size_t)n); (void)ignored; }
    signal(sig, SIG_DFL);
    raise(sig);
}

int ferry_sb_report_sigsys(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = report_sigsys;
    action.sa_flags = SA_SIGINFO;
    return sigaction(SIGSYS, &action, NULL);
}

long ferry_sb_raw_syscall(long nr) { return syscall(nr, 0, 0, 0, 0, 0, 0); }

static void ignore_signal(int sig) { (void)sig; }

int ferry_sb_accept_termination_signals(void) {
    int signals[] = { SIGTERM, SIGINT, SIGHUP, SIGUSR1 };
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++) {
        struct sigaction action;
        memset(&action, 0, sizeof action);
        action.sa_handler = ignore_signal;
        if (sigaction(signals[i], &action, NULL) != 0) return -1;
    }
    return 0;
}
