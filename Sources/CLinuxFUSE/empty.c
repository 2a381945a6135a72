// Header-only module: <linux/fuse.h> for layout tests.
