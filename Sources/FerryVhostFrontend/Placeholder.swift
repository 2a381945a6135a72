// vhost-user-fs front-end for tests and benchmarks.
