#define _GNU_SOURCE
#include <sched.h>
#include <stddef.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/eventfd.h>
#include "sinkhole_net.h"

int sinkhole_recvmmsg(int fd, void *messages, unsigned int count, int flags) {
    return recvmmsg(fd, (struct mmsghdr *)messages, count, flags, NULL);
}

int sinkhole_sendmmsg(int fd, void *messages, unsigned int count, int flags) {
    return sendmmsg(fd, (struct mmsghdr *)messages, count, flags);
}

unsigned long sinkhole_mmsghdr_size(void) { return sizeof(struct mmsghdr); }
unsigned long sinkhole_mmsghdr_len_offset(void) { return offsetof(struct mmsghdr, msg_len); }

int sinkhole_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int sinkhole_epoll_add(int epfd, int fd, unsigned long long token) {
    struct epoll_event event = { .events = EPOLLIN, .data = { .u64 = token } };
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event);
}

int sinkhole_epoll_remove(int epfd, int fd) { return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL); }

int sinkhole_epoll_wait(int epfd, unsigned long long *tokens, unsigned int *events, int max, int timeout_ms) {
    struct epoll_event ready[64];
    if (max > 64) max = 64;
    int n = epoll_wait(epfd, ready, max, timeout_ms);
    for (int i = 0; i < n; i++) {
        tokens[i] = ready[i].data.u64;
        events[i] = ready[i].events;
    }
    return n;
}

unsigned int sinkhole_epoll_error_mask(void) { return EPOLLERR | EPOLLHUP; }

int sinkhole_eventfd(void) { return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }

long sinkhole_random(void *buffer, unsigned long length) { return getrandom(buffer, length, 0); }

int sinkhole_usable_cpus(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? (int)online : 1;
}

int sinkhole_sched_idle(void) {
    struct sched_param param = { .sched_priority = 0 };
    return sched_setscheduler(0, SCHED_IDLE, &param);
}
