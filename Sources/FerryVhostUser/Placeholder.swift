// vhost-user-fs back-end: see docs/architecture.md.
