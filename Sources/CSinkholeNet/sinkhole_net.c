#define _GNU_SOURCE
#include <stddef.h>
#include <sys/socket.h>
#include "sinkhole_net.h"

int sinkhole_recvmmsg(int fd, void *messages, unsigned int count, int flags) {
    return recvmmsg(fd, (struct mmsghdr *)messages, count, flags, NULL);
}

int sinkhole_sendmmsg(int fd, void *messages, unsigned int count, int flags) {
    return sendmmsg(fd, (struct mmsghdr *)messages, count, flags);
}

unsigned long sinkhole_mmsghdr_size(void) { return sizeof(struct mmsghdr); }
unsigned long sinkhole_mmsghdr_len_offset(void) { return offsetof(struct mmsghdr, msg_len); }
