// Batched datagram calls (recvmmsg/sendmmsg, Linux) for the UDP listener. glibc declares them
// only under _GNU_SOURCE, which Swift's Glibc module does not define, so they are wrapped here.
// `messages` points to an array of `struct mmsghdr`; Swift lays out its own struct of the same
// shape (a msghdr, then an unsigned int) and checks it against the sizes below.
#ifndef SINKHOLE_NET_H
#define SINKHOLE_NET_H

#include <stdint.h>

/// A hint that the memory at `p` is about to be read (no effect on any result). Swift has no
/// prefetch of its own; inline, so it compiles to the one instruction.
static inline void sinkhole_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }
/* Relaxed atomic add and load on a 64-bit counter slot (ShardedCounts: per-core counters). */
static inline void sinkhole_counter_add(uint64_t *slot, uint64_t n) { __atomic_fetch_add(slot, n, __ATOMIC_RELAXED); }
static inline uint64_t sinkhole_counter_load(const uint64_t *slot) { return __atomic_load_n(slot, __ATOMIC_RELAXED); }

/// recvmmsg(2) without a timeout: the number of datagrams received; -1 and errno on error.
int sinkhole_recvmmsg(int fd, void *messages, unsigned int count, int flags);

/// sendmmsg(2): the number of datagrams sent; -1 and errno on error.
int sinkhole_sendmmsg(int fd, void *messages, unsigned int count, int flags);

/// sizeof(struct mmsghdr) and offsetof(struct mmsghdr, msg_len).
unsigned long sinkhole_mmsghdr_size(void);
unsigned long sinkhole_mmsghdr_len_offset(void);

/// Packet info for a UDP socket bound to a wildcard address (0.0.0.0 or ::), whose replies must
/// leave from the address each query was sent to: the client accepts no other source, and a
/// link-local IPv6 client is reached only through the interface its query came in on.
/// Asks the kernel for each datagram's destination and interface (IP_PKTINFO, IPV6_RECVPKTINFO).
int sinkhole_want_pktinfo(int fd, int ipv6);
/// Bytes of control data one datagram's packet info takes (either family).
unsigned long sinkhole_pktinfo_space(void);
/// From a received `struct msghdr`: the address the datagram was sent to (4 or 16 bytes into
/// `address`) and its interface index; returns 4 or 16, or 0 when it carries no packet info.
int sinkhole_pktinfo_read(const void *message, void *address, unsigned int *interface);
/// Writes into `control` (sinkhole_pktinfo_space() bytes) the control message that sends a
/// datagram from `address` (`count` 4 or 16 bytes; for IPv6 through `interface`); returns the
/// length to put in msg_controllen.
unsigned long sinkhole_pktinfo_write(void *control, int count, const void *address, unsigned int interface);

/// epoll for the upstream socket loop. `struct epoll_event` is packed on x86-64, which Swift
/// does not import faithfully, so the loop sees only (token, events) pairs.
/// epoll_create1(EPOLL_CLOEXEC).
int sinkhole_epoll_create(void);
/// Adds fd for reading (EPOLLIN; errors and hang-ups are always reported) with a 64-bit token.
int sinkhole_epoll_add(int epfd, int fd, unsigned long long token);
/// Removes fd from the set.
int sinkhole_epoll_remove(int epfd, int fd);
/// epoll_wait: fills up to `max` tokens and their event masks; the count, or -1 and errno.
int sinkhole_epoll_wait(int epfd, unsigned long long *tokens, unsigned int *events, int max, int timeout_ms);
/// EPOLLERR and EPOLLHUP, to test the masks with.
unsigned int sinkhole_epoll_error_mask(void);
/// eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), to wake the loop.
int sinkhole_eventfd(void);

/// getrandom(2): fills `length` bytes from the kernel's cryptographic generator; the count filled.
long sinkhole_random(void *buffer, unsigned long length);

/// The number of CPUs this process may run on (sched_getaffinity; taskset and cgroup cpusets
/// narrow it), at least 1.
int sinkhole_usable_cpus(void);

/// Puts the calling thread under SCHED_IDLE: it runs only when its CPU has nothing else to run,
/// and any other thread that wakes there preempts it at once. 0, or -1 and errno.
int sinkhole_sched_idle(void);

#endif
