#define _GNU_SOURCE
#include <sched.h>
#include <stddef.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/eventfd.h>
#include <netinet/in.h>
#include <string.h>
#include "sinkhole_net.h"

int sinkhole_recvmmsg(int fd, void *messages, unsigned int count, int flags) {
    return recvmmsg(fd, (struct mmsghdr *)messages, count, flags, NULL);
}

int sinkhole_sendmmsg(int fd, void *messages, unsigned int count, int flags) {
    return sendmmsg(fd, (struct mmsghdr *)messages, count, flags);
}

unsigned long sinkhole_mmsghdr_size(void) { return sizeof(struct mmsghdr); }
unsigned long sinkhole_mmsghdr_len_offset(void) { return offsetof(struct mmsghdr, msg_len); }

int sinkhole_want_pktinfo(int fd, int ipv6) {
    int on = 1;
    return ipv6 ? setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &on, sizeof on)
                : setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &on, sizeof on);
}

unsigned long sinkhole_pktinfo_space(void) {
    unsigned long v4 = CMSG_SPACE(sizeof(struct in_pktinfo)), v6 = CMSG_SPACE(sizeof(struct in6_pktinfo));
    return v4 > v6 ? v4 : v6;
}

int sinkhole_pktinfo_read(const void *message, void *address, unsigned int *interface) {
    struct msghdr *m = (struct msghdr *)message;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c != NULL; c = CMSG_NXTHDR(m, c)) {
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO
            && c->cmsg_len >= CMSG_LEN(sizeof(struct in_pktinfo))) {
            struct in_pktinfo info;
            memcpy(&info, CMSG_DATA(c), sizeof info);
            /* The local address the kernel would answer from: the destination itself for a
               unicast datagram, the interface's address for a broadcast one. */
            memcpy(address, &info.ipi_spec_dst, 4);
            *interface = (unsigned int)info.ipi_ifindex;
            return 4;
        }
        if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO
            && c->cmsg_len >= CMSG_LEN(sizeof(struct in6_pktinfo))) {
            struct in6_pktinfo info;
            memcpy(&info, CMSG_DATA(c), sizeof info);
            memcpy(address, &info.ipi6_addr, 16);
            *interface = info.ipi6_ifindex;
            return 16;
        }
    }
    return 0;
}

unsigned long sinkhole_pktinfo_write(void *control, int count, const void *address, unsigned int interface) {
    memset(control, 0, sinkhole_pktinfo_space());
    struct cmsghdr *c = (struct cmsghdr *)control;
    if (count == 16) {
        struct in6_pktinfo info;
        memset(&info, 0, sizeof info);
        memcpy(&info.ipi6_addr, address, 16);
        info.ipi6_ifindex = interface;
        c->cmsg_level = IPPROTO_IPV6;
        c->cmsg_type = IPV6_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof info);
        memcpy(CMSG_DATA(c), &info, sizeof info);
        return CMSG_SPACE(sizeof info);
    }
    /* IPv4: the source address only. The interface is left to the routing table, as for any
       other reply: a non-zero ipi_ifindex would pin the outgoing interface, which breaks
       asymmetric and multi-homed routing. */
    struct in_pktinfo info;
    memset(&info, 0, sizeof info);
    memcpy(&info.ipi_spec_dst, address, 4);
    c->cmsg_level = IPPROTO_IP;
    c->cmsg_type = IP_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof info);
    memcpy(CMSG_DATA(c), &info, sizeof info);
    return CMSG_SPACE(sizeof info);
}

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
