// Batched datagram calls (recvmmsg/sendmmsg, Linux) for the UDP listener. glibc declares them
// only under _GNU_SOURCE, which Swift's Glibc module does not define, so they are wrapped here.
// `messages` points to an array of `struct mmsghdr`; Swift lays out its own struct of the same
// shape (a msghdr, then an unsigned int) and checks it against the sizes below.
#ifndef SINKHOLE_NET_H
#define SINKHOLE_NET_H

/// recvmmsg(2) without a timeout: the number of datagrams received; -1 and errno on error.
int sinkhole_recvmmsg(int fd, void *messages, unsigned int count, int flags);

/// sendmmsg(2): the number of datagrams sent; -1 and errno on error.
int sinkhole_sendmmsg(int fd, void *messages, unsigned int count, int flags);

/// sizeof(struct mmsghdr) and offsetof(struct mmsghdr, msg_len).
unsigned long sinkhole_mmsghdr_size(void);
unsigned long sinkhole_mmsghdr_len_offset(void);

#endif
