#include <stdint.h>
#include <sys/time.h>
#include <poll.h>
#include <nfsc/libnfs.h>
#include <nfsc/libnfs-raw.h>
#include <nfsc/libnfs-raw-mount.h>
#include <nfsc/libnfs-raw-nfs.h>
#include <nfsc/libnfs-raw-nfs4.h>

/* MOUNT and NFS program numbers are macros; Swift imports these as constants. */
static const int ferry_nfs_mount_program = MOUNT_PROGRAM;
static const int ferry_nfs_mount_v3 = MOUNT_V3;
static const int ferry_nfs_program = NFS_PROGRAM;
static const int ferry_nfs_v3 = NFS_V3;
static const int ferry_nfs_v4 = NFS_V4;
