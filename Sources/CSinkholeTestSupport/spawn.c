#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "sinkhole_test_spawn.h"

extern char **environ;

int sinkhole_test_spawn(int *pid, const char *path, char *const argv[], const char *cwd,
                        int in_fd, int out_fd, int err_fd) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    int rc = posix_spawn_file_actions_init(&actions);
    if (rc != 0) return rc;
    rc = posix_spawnattr_init(&attributes);
    if (rc != 0) { posix_spawn_file_actions_destroy(&actions); return rc; }

    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    if (rc == 0) rc = posix_spawnattr_setflags(&attributes,
        POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP);
    if (rc == 0) rc = posix_spawnattr_setsigdefault(&attributes, &all);
    if (rc == 0) rc = posix_spawnattr_setsigmask(&attributes, &none);
    if (rc == 0) rc = posix_spawnattr_setpgroup(&attributes, 0);
    if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, in_fd, 0);
    if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
    if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, err_fd, 2);
    if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&actions, 3);
    if (rc == 0 && cwd != NULL) rc = posix_spawn_file_actions_addchdir_np(&actions, cwd);
    if (rc == 0) rc = posix_spawn(pid, path, &actions, &attributes, argv, environ);

    posix_spawnattr_destroy(&attributes);
    posix_spawn_file_actions_destroy(&actions);
    return rc;
}

static long long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int sinkhole_test_wait(int pid, int timeout_ms, int *status) {
    long long deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    for (;;) {
        int r = waitpid(pid, status, WNOHANG);
        if (r == pid) { if (fd >= 0) close(fd); return 1; }
        if (r < 0 && errno != EINTR) { int e = errno; if (fd >= 0) close(fd); errno = e; return -1; }
        long long left = deadline - now_ms();
        if (left <= 0) { if (fd >= 0) close(fd); return 0; }
        if (fd >= 0) {
            // The pidfd turns readable when the child exits: no polling.
            struct pollfd p = { .fd = fd, .events = POLLIN };
            (void)poll(&p, 1, (int)left);
        } else {
            // Kernels before 5.3 have no pidfd: look again every 5 ms until the deadline.
            struct timespec nap = { 0, 5 * 1000000L };
            nanosleep(&nap, NULL);
        }
    }
}

int sinkhole_test_exit_code(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
}

int sinkhole_test_pipe(int fds[2]) { return pipe2(fds, O_CLOEXEC); }
