// POSIX backend.
