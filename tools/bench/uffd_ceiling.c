/* cairn-uffd-ceiling: the fastest any userfaultfd page server can be on this machine.
 *
 * Benchmark tooling (tools/bench_lazy.sh, docs/lazy-wake.md), not the product. One process:
 * anonymous memory registered with a uffd for missing faults, N threads touching every
 * page (a read of one byte), M server threads that answer each fault with UFFDIO_COPY
 * from a buffer that is always ready: no lookup, no decompression, no hash, no lock. What
 * it measures is what is left: the kernel's fault, the wake-up of the server, read(), the
 * copy ioctl and the wake-up of the faulting thread. A real page server (cairn uffd-serve)
 * can only be slower.
 *
 * usage: cairn-uffd-ceiling [--touchers N] [--servers M] [--pages P] [--around K]
 *                           [--zero] [--spin] [--interleave] [--pin] [--json]
 *   --around K    install K pages per fault (the faulted one and those after it, within
 *                 the memory; EEXIST stops the copy at a page already present)
 *   --zero        answer with UFFDIO_ZEROPAGE instead of a copy
 *   --spin        servers poll the uffd without sleeping (burns a core: for comparison)
 *   --interleave  touchers walk the pages side by side (page i by thread i % N), as
 *                 cairn-fc-uffd --sequential does, instead of one slice each
 *   --pin         touchers on CPU 1.., servers on CPU 0 (modulo the CPUs)
 * Prints one line (or JSON): faults answered, pages installed, wall time, faults/s,
 * pages/s, CPU time (user+sys) of the touchers and of the servers.
 * Exit codes: 0 ok, 1 failed (a syscall, or a page read back wrong), 2 usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PG 4096ul
#define MSGS 64

static int ntouch = 1, nserve = 1, zero, spin, interleave, pin, as_json;
static unsigned around = 1;
static uint64_t npages = 65536;
static uint8_t *mem, *src;
static int uffd;
static _Atomic int stop;
static _Atomic uint64_t faults, installed, wakes, bad;
static double serve_cpu[64], touch_cpu[64];

static void die(const char *what)
{
    fprintf(stderr, "cairn-uffd-ceiling: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now_s(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void pin_to(int cpu)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu % (ncpu > 0 ? ncpu : 1), &s);
    pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}

static void answer(uint64_t addr)
{
    uint64_t a = addr & ~(PG - 1), end = (uint64_t)(uintptr_t)mem + npages * PG;
    uint64_t len = around * PG;
    if (a + len > end) len = end - a;
    int rc;
    if (zero) {
        struct uffdio_zeropage z = {.range = {.start = a, .len = PG}};
        rc = ioctl(uffd, UFFDIO_ZEROPAGE, &z);
        if (rc == 0) installed++;
    } else {
        struct uffdio_copy c = {.dst = a, .src = (uint64_t)(uintptr_t)src, .len = len};
        rc = ioctl(uffd, UFFDIO_COPY, &c);
        if (rc == 0) installed += len / PG;
        else if (errno == EEXIST && c.copy > 0) {
            installed += (uint64_t)c.copy / PG;   /* the faulted page went in, a later one was there */
            rc = 0;
        }
    }
    if (rc < 0) {
        if (errno != EEXIST) die("UFFDIO_COPY");
        /* Present already (two faults on one page, or a neighbour installed it): wake. */
        struct uffdio_range w = {.start = a, .len = PG};
        if (ioctl(uffd, UFFDIO_WAKE, &w) < 0) die("UFFDIO_WAKE");
        wakes++;
    }
    faults++;
}

static void *server(void *arg)
{
    long idx = (long)arg;
    if (pin) pin_to(0);
    struct uffd_msg m[MSGS];
    while (!stop) {
        if (!spin) {
            struct pollfd p = {.fd = uffd, .events = POLLIN};
            int r = poll(&p, 1, 100);
            if (r < 0 && errno != EINTR) die("poll");
            if (r <= 0) continue;
        }
        ssize_t n = read(uffd, m, sizeof m);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            die("read uffd");
        }
        for (ssize_t i = 0; i < n / (ssize_t)sizeof *m; i++)
            if (m[i].event == UFFD_EVENT_PAGEFAULT) answer(m[i].arg.pagefault.address);
    }
    serve_cpu[idx] = now_s(CLOCK_THREAD_CPUTIME_ID);
    return NULL;
}

static void *toucher(void *arg)
{
    long t = (long)arg;
    if (pin) pin_to(1 + (int)t);
    uint64_t sum = 0;
    if (interleave) {
        for (uint64_t pg = (uint64_t)t; pg < npages; pg += (uint64_t)ntouch) sum += mem[pg * PG + 8];
    } else {
        uint64_t per = npages / (uint64_t)ntouch, first = per * (uint64_t)t;
        uint64_t last = t == ntouch - 1 ? npages : first + per;
        for (uint64_t pg = first; pg < last; pg++) sum += mem[pg * PG + 8];
    }
    /* Every page holds the source's byte 8 (or zero): anything else is a wrong answer. */
    uint64_t per = interleave ? (npages - (uint64_t)t + (uint64_t)ntouch - 1) / (uint64_t)ntouch
                              : (t == ntouch - 1 ? npages - npages / (uint64_t)ntouch * (uint64_t)t
                                                 : npages / (uint64_t)ntouch);
    if (sum != per * (zero ? 0 : src[8])) bad++;
    touch_cpu[t] = now_s(CLOCK_THREAD_CPUTIME_ID);
    return NULL;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--zero")) zero = 1;
        else if (!strcmp(a, "--spin")) spin = 1;
        else if (!strcmp(a, "--interleave")) interleave = 1;
        else if (!strcmp(a, "--pin")) pin = 1;
        else if (!strcmp(a, "--json")) as_json = 1;
        else if (!strcmp(a, "--help")) {
            printf("usage: cairn-uffd-ceiling [--touchers N] [--servers M] [--pages P] [--around K]\n"
                   "                          [--zero] [--spin] [--interleave] [--pin] [--json]\n"
                   "(see the comment at the top of tools/bench/uffd_ceiling.c)\n");
            return 0;
        } else if (v && !strcmp(a, "--touchers")) { ntouch = atoi(v); i++; }
        else if (v && !strcmp(a, "--servers")) { nserve = atoi(v); i++; }
        else if (v && !strcmp(a, "--pages")) { npages = strtoull(v, NULL, 0); i++; }
        else if (v && !strcmp(a, "--around")) { around = (unsigned)atoi(v); i++; }
        else {
            fprintf(stderr, "cairn-uffd-ceiling: bad option %s (--help)\n", a);
            return 2;
        }
    }
    if (ntouch < 1 || ntouch > 64 || nserve < 1 || nserve > 64 || npages < (uint64_t)ntouch || around < 1 ||
        around > 512 || (zero && around > 1)) {
        fprintf(stderr, "cairn-uffd-ceiling: bad usage (--help)\n");
        return 2;
    }
    src = aligned_alloc(PG, around * PG);
    if (!src) die("malloc");
    memset(src, 0x5a, around * PG);
    mem = mmap(NULL, npages * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) die("mmap");
    /* Firecracker's settings: 4 KiB pages, no THP on guest memory it registers. */
    if (madvise(mem, npages * PG, MADV_NOHUGEPAGE) < 0) die("madvise");
    uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (uffd < 0) die("userfaultfd");
    struct uffdio_api api = {.api = UFFD_API};
    if (ioctl(uffd, UFFDIO_API, &api) < 0) die("UFFDIO_API");
    struct uffdio_register r = {.range = {.start = (uint64_t)(uintptr_t)mem, .len = npages * PG},
                                .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (ioctl(uffd, UFFDIO_REGISTER, &r) < 0) die("UFFDIO_REGISTER");

    pthread_t st[64], tt[64];
    for (long i = 0; i < nserve; i++)
        if (pthread_create(&st[i], NULL, server, (void *)i)) die("pthread_create");
    double t0 = now_s(CLOCK_MONOTONIC);
    for (long i = 0; i < ntouch; i++)
        if (pthread_create(&tt[i], NULL, toucher, (void *)i)) die("pthread_create");
    for (int i = 0; i < ntouch; i++) pthread_join(tt[i], NULL);
    double wall = now_s(CLOCK_MONOTONIC) - t0;
    stop = 1;
    for (int i = 0; i < nserve; i++) pthread_join(st[i], NULL);
    double scpu = 0, tcpu = 0;
    for (int i = 0; i < nserve; i++) scpu += serve_cpu[i];
    for (int i = 0; i < ntouch; i++) tcpu += touch_cpu[i];
    double la[3] = {0, 0, 0};
    if (getloadavg(la, 3) < 0) la[0] = -1;
    if (as_json)
        printf("{\"touchers\": %d, \"servers\": %d, \"around\": %u, \"zero\": %s, \"spin\": %s, "
               "\"faults\": %llu, \"pages\": %llu, \"wakes\": %llu, \"seconds\": %.4f, "
               "\"faults_per_s\": %.0f, \"pages_per_s\": %.0f, \"server_cpu_s\": %.3f, "
               "\"toucher_cpu_s\": %.3f, \"loadavg\": %.2f, \"wrong\": %llu}\n",
               ntouch, nserve, around, zero ? "true" : "false", spin ? "true" : "false",
               (unsigned long long)faults, (unsigned long long)npages, (unsigned long long)wakes, wall,
               faults / wall, npages / wall, scpu, tcpu, la[0], (unsigned long long)bad);
    else
        printf("touchers %d servers %d around %3u%s%s%s%s: %7llu faults, %7llu pages in %.3f s: %7.0f faults/s "
               "%8.0f pages/s; cpu server %.3f s (%.2f us/fault), touchers %.3f s; load %.2f\n",
               ntouch, nserve, around, zero ? " zero" : "", spin ? " spin" : "", interleave ? " interleave" : "",
               pin ? " pin" : "", (unsigned long long)faults, (unsigned long long)npages, wall, faults / wall,
               npages / wall, scpu, faults ? scpu * 1e6 / (double)faults : 0, tcpu, la[0]);
    return bad ? 1 : 0;
}
