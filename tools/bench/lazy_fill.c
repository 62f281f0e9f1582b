/* The bench guest's working memory (tools/bench_lazy.sh): lazy_fill MIB fills MIB of
 * anonymous memory, one page at a time, then prints "FILLED" and sleeps for ever holding
 * it. A sandbox VM's memory is mostly pages in use (heap, page cache); a freshly booted
 * guest's is mostly zeros, which a full restore writes as holes for free and which would
 * hide what a full restore costs. Each page gets 2 KiB that differ from every other page
 * (no dedup) and 2 KiB of zeros: about 2:1 under zstd, like real guest memory.
 * Built static for the busybox-only initramfs; benchmark tooling, not the product. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: lazy_fill MIB\n");
        return 2;
    }
    size_t len = (size_t)strtoull(argv[1], NULL, 10) << 20;
    uint64_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    uint64_t x = 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid();
    for (size_t pg = 0; pg < len / 4096; pg++) {
        uint64_t *p = m + pg * 512;
        for (int i = 0; i < 256; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            p[i] = x;
        }
    }
    printf("FILLED %zu\n", len >> 20);
    fflush(stdout);
    for (;;) pause();
}
