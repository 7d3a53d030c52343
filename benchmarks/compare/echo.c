/* Floor reference for benchmarks/compare.sh: a bare UDP "DNS" responder.
 * It receives datagrams in batches (recvmmsg), sets the QR bit of each so dnsperf counts it as
 * an answer, and sends them back in one batch (sendmmsg). No parsing, no lookup: the numbers it
 * gets are the cost of the kernel's loopback UDP path and of dnsperf itself.
 * Usage: echo ADDR PORT    (IPv4 only; runs until killed) */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH 64

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s ADDR PORT\n", argv[0]); return 2; }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2])) };
    if (fd < 0 || inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) { perror("echo: bind"); return 1; }

    static char buf[BATCH][4096];
    static struct sockaddr_in peer[BATCH];
    static struct iovec iov[BATCH];
    static struct mmsghdr msg[BATCH];
    for (;;) {
        for (int i = 0; i < BATCH; i++) {
            iov[i] = (struct iovec){ buf[i], sizeof buf[i] };
            msg[i].msg_hdr = (struct msghdr){ .msg_name = &peer[i], .msg_namelen = sizeof peer[i],
                                              .msg_iov = &iov[i], .msg_iovlen = 1 };
        }
        /* Block for the first datagram, then take whatever else is already queued. */
        int n = recvmmsg(fd, msg, BATCH, MSG_WAITFORONE, NULL);
        if (n <= 0) continue;
        for (int i = 0; i < n; i++) {
            iov[i].iov_len = msg[i].msg_len;            /* reply with exactly what came in */
            if (msg[i].msg_len > 2) buf[i][2] |= 0x80;  /* QR = 1: it is a response */
        }
        sendmmsg(fd, msg, (unsigned)n, 0);
    }
}
