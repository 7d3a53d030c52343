#ifndef SINKHOLE_TEST_SPAWN_H
#define SINKHOLE_TEST_SPAWN_H

/// Child processes for the tests, without Foundation's Process: that one reports every child's
/// exit through a single shared manager thread (which waits in a blocking waitpid), so one child
/// that misbehaves, or a starved thread pool, leaves every other test waiting for an exit it has
/// already made. Here each test spawns and reaps its own child, and every wait has a deadline.

/// posix_spawn of `path` with `argv` (NULL-terminated) and the caller's environment; the child's
/// stdin, stdout and stderr are `in_fd`, `out_fd`, `err_fd`, every other descriptor is closed in
/// it, its signal mask and dispositions are the defaults, it leads its own process group, and it
/// starts in `cwd` (NULL: the caller's). 0 and `*pid`, or an errno value.
int sinkhole_test_spawn(int *pid, const char *path, char *const argv[], const char *cwd,
                        int in_fd, int out_fd, int err_fd);

/// Waits at most `timeout_ms` for child `pid` to exit and reaps it. 1 with its wait status in
/// `*status`; 0 when it is still running at the deadline; -1 and errno on failure.
int sinkhole_test_wait(int pid, int timeout_ms, int *status);

/// The exit code of a wait status, or 128 + the signal for a child killed by one (as a shell).
int sinkhole_test_exit_code(int status);

/// pipe2(O_CLOEXEC): a pipe no other child inherits. 0, or -1 and errno.
int sinkhole_test_pipe(int fds[2]);

#endif
