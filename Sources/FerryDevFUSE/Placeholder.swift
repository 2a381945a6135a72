// /dev/fuse transport.
