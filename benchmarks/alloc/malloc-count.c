// LD_PRELOAD shim for benchmarks/alloc-count.sh: counts malloc, calloc and realloc calls of the
// process it is loaded into. SIGUSR2 writes the running total to the file named by
// MALLOC_COUNT_FILE (async-signal-safe: open, write, close), so the benchmark can read the count
// before and after a load and divide by the queries answered.
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

static atomic_ulong calls;
static char path[512];

void *malloc(size_t size) { atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed); return __libc_malloc(size); }
void *calloc(size_t n, size_t size) { atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed); return __libc_calloc(n, size); }
void *realloc(void *p, size_t size) { atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed); return __libc_realloc(p, size); }

static void report(int sig) {
    (void)sig;
    char text[32];
    unsigned long v = atomic_load(&calls);
    int i = sizeof text;
    text[--i] = '\n';
    do { text[--i] = (char)('0' + v % 10); v /= 10; } while (v > 0);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) { (void)!write(fd, text + i, sizeof text - i); close(fd); }
}

__attribute__((constructor)) static void setup(void) {
    const char *p = getenv("MALLOC_COUNT_FILE");
    if (!p || strlen(p) >= sizeof path) return;
    strcpy(path, p);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = report;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR2, &sa, NULL);
}
