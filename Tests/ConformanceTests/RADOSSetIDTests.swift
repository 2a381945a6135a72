import Foundation
import FerryTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Set-id bits through the real kernel: with FUSE_HANDLE_KILLPRIV_V2 the kernel leaves
/// clearing them to the server, and part of what it sends (chown(f, -1, -1), the privilege
/// removal before another user's write) is a SETATTR that names no change at all.
@Suite("RADOS backend: set-id bits", .serialized,
       .requires(.root, .devFUSE, .ceph))
struct RADOSSetIDTests {
    @Test("SUID/SGID are cleared by an owner's chown and by another user's write, as Linux clears them",
          .timeLimit(.minutes(10)))
    func setIDClearedByChownAndWrite() throws {
        let (_, mount) = try mountFreshRADOS("setid")
        defer { mount.stop() }
        // Each line: what it does, then the mode stat sees right after (the kernel's view).
        let result = try runShell("""
            cd \(mount.mountpoint) || exit 1
            chmod 777 .
            as() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
            pchown() { as perl -e 'chown($ARGV[1], $ARGV[2], $ARGV[0]) or die "chown: $!\\n"' "$@"; }
            mk() { rm -f "$1"; if [ "$2" = fifo ]; then mkfifo "$1"; else touch "$1"; fi; chown "$4" "$1"; chmod "$3" "$1"; }
            mk own file 6755 65534:65534; pchown own 65534 65534; echo "owner chown to itself: $(stat -c %a own)"
            mk same file 6755 65534:65534; pchown same -1 -1; echo "owner chown -1 -1: $(stat -c %a same)"
            mk keep file 2745 65534:65534; pchown keep -1 65534; echo "owner chgrp, setgid not group-executable: $(stat -c %a keep)"
            mk fifo fifo 6755 65534:65534; pchown fifo 65534 -1; echo "owner chown of a fifo: $(stat -c %a fifo)"
            mk byroot file 6755 65534:65534; chown 0 byroot; echo "root chown: $(stat -c %a byroot)"
            mk w file 4777 0:0; echo data | as tee -a w >/dev/null; echo "write by another user: $(stat -c %a w)"
            mk g file 2777 0:0; echo data | as tee -a g >/dev/null; echo "write by another user, setgid: $(stat -c %a g)"
            mk t file 4777 0:0; as truncate -s 10 t; echo "truncate by another user: $(stat -c %a t)"
            mk rw file 4777 0:0; echo data >> rw; echo "write by root: $(stat -c %a rw)"
            """)
        #expect(result.output == """
            owner chown to itself: 755
            owner chown -1 -1: 755
            owner chgrp, setgid not group-executable: 2745
            owner chown of a fifo: 755
            root chown: 755
            write by another user: 777
            write by another user, setgid: 777
            truncate by another user: 777
            write by root: 4777

            """, "ferry's log:\n\(mount.log)")
    }
}
