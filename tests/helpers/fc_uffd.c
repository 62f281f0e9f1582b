/* cairn-fc-uffd: plays Firecracker's side of the UFFD protocol against `cairn uffd-serve`,
 * for tests/integration/uffd.sh.
 *
 * As Firecracker does (src/vmm/src/persist.rs): anonymous private memory per guest region,
 * one userfaultfd with UFFD_FEATURE_EVENT_REMOVE, every region registered for missing
 * faults, then one sendmsg of the JSON region list with the uffd (SCM_RIGHTS) on a stream
 * socket that stays open while the "VM" lives. The guest's work is threads touching pages
 * in random order and comparing each with the expected memory file; the balloon is
 * madvise(MADV_DONTNEED) of ranges, after which those pages must read as zeros.
 *
 * usage: cairn-fc-uffd --socket PATH --expect FILE [--threads N] [--regions N]
 *                      [--touch PERMILLE] [--seed S] [--balloon N] [--delay-ms MS]
 *                      [--page-size-field page_size|page_size_kib|none] [--sequential]
 *                      [--warm] [--write-every N] [--swap-regions]
 *        cairn-fc-uffd --socket PATH --expect FILE --send-json TEXT   (hostile: expects refusal)
 *        cairn-fc-uffd --socket PATH --garbage N                      (hostile: random bytes)
 *        cairn-fc-uffd --socket PATH --expect FILE --lie              (list names other memory)
 * --warm: every region is registered twice (a second mapping with the same file offsets,
 * both in the list, as two VMs woken from one snapshot would be): the threads first touch
 * the second copy (cold: the server decompresses groups), then the first (warm: the groups
 * are in the server's cache if it holds them all). Times, faults (the touching threads'
 * own count of faults: fault-around makes it smaller than the pages) and pages are
 * reported per phase; the balloon, if any, works on the first copy.
 * --write-every N: before the touching, one thread writes a mark into every Nth page (at
 * N/2): those pages are then present and differ from the snapshot; every later check
 * expects the mark, so a server that overwrote a present page (fault-around) is caught.
 * --swap-regions: one mapping of two thirds of the file, listed as two regions that are
 * adjacent in memory but not in the file (the first holds the file's second third, the
 * second its first third; the last third is not mapped): a server whose copies ran past
 * a region's end would put the wrong part of the file there.
 * Pages the balloon removed are checked once more at the end: still zeros (nothing
 * installed them again behind the guest's back).
 * Prints one JSON line; exits 0 if every check held, 1 if one failed, 2 on usage errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define PG 4096ul

static const char *sock_path, *expect_path, *send_json, *ps_field = "page_size";
static int nthreads = 4, nregions = 2, lie, balloon, delay_ms, sequential, warm, write_every, swap_regions;
static long garbage = -1;
static unsigned touch_permille = 1000;
static unsigned long long seed = 1;

typedef struct {
    uint8_t *addr;
    uint64_t size, offset;
} region;

static region rg[8], shadow[8];     /* shadow: the cold copy of --warm */
static region *cur = rg;            /* the copy being touched */
static const uint8_t *ref;          /* the expected memory file, mapped */
static uint64_t mem_size, npages;
static uint64_t *order;             /* pages to touch, in order */
static uint64_t norder;
static uint8_t *skip;               /* pages the balloon owns in phase 2 */
static uint8_t *gone;               /* pages the balloon removed */
static uint8_t *marked;             /* pages written by --write-every */
#define MARK 0xA5u                  /* xored into the first 8 bytes of a marked page */

/* 1 if the page at p holds what page pg must hold: the snapshot's bytes, with the mark if
 * it was written. */
static int page_ok(const uint8_t *p, uint64_t pg)
{
    const uint8_t *r = ref + pg * PG;
    if (marked && marked[pg]) {
        for (int k = 0; k < 8; k++)
            if (p[k] != (uint8_t)(r[k] ^ MARK)) return 0;
        return !memcmp(p + 8, r + 8, PG - 8);
    }
    return !memcmp(p, r, PG);
}
static _Atomic uint64_t mismatches, touched, thread_faults;

static void die(const char *what)
{
    fprintf(stderr, "cairn-fc-uffd: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t rnd(void)
{
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    return seed;
}

static uint8_t *addr_of(uint64_t pg)
{
    uint64_t off = pg * PG;
    for (int i = 0; i < nregions; i++)
        if (off >= cur[i].offset && off < cur[i].offset + cur[i].size) return cur[i].addr + (off - cur[i].offset);
    return NULL;
}

static int connect_sock(void)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", sock_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    for (int i = 0; i < 500; i++) {
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) return fd;
        usleep(10000);
    }
    die("connect");
    return -1;
}

static void send_with_fd(int s, const char *text, int fd)
{
    struct iovec iov = {.iov_base = (void *)text, .iov_len = strlen(text)};
    union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int))]; } ctl;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        memset(&ctl, 0, sizeof ctl);
        m.msg_control = ctl.b;
        m.msg_controllen = sizeof ctl.b;
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    if (sendmsg(s, &m, MSG_NOSIGNAL) < 0) die("sendmsg");
}

/* 1 if the server closed the connection within 10 s (it refused us; one that sends
 * nothing is dropped after the server's 5 s handshake timeout). */
static int refused(int s)
{
    struct pollfd p = {.fd = s, .events = POLLIN};
    if (poll(&p, 1, 10000) <= 0) return 0;
    char c;
    return recv(s, &c, 1, 0) <= 0;
}

/* Faults this thread took (a fault the server answered counts once, as major: the kernel
 * retried it). */
static uint64_t my_faults(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) < 0) die("getrusage");
    return (uint64_t)ru.ru_minflt + (uint64_t)ru.ru_majflt;
}

/* CPU seconds (user, system) the server process has used so far, from /proc (the peer of
 * the socket, SO_PEERCRED): what a phase cost the server. -1 if unknown. */
static pid_t server_pid;
static void server_cpu(double *user, double *sys)
{
    *user = *sys = -1;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)server_pid);
    FILE *f = server_pid > 0 ? fopen(path, "r") : NULL;
    if (!f) return;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');      /* the name may hold spaces: fields follow its ')' */
    unsigned long long ut, st;
    if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) == 2) {
        long hz = sysconf(_SC_CLK_TCK);
        *user = (double)ut / (double)hz;
        *sys = (double)st / (double)hz;
    }
}

static void *toucher(void *arg)
{
    long t = (long)arg;
    uint64_t f0 = my_faults();
    for (uint64_t i = (uint64_t)t; i < norder; i += (uint64_t)nthreads) {
        uint64_t pg = order[i];
        if (skip && skip[pg]) continue;
        const uint8_t *p = addr_of(pg);
        if (!p) continue;                   /* not mapped (--swap-regions) */
        if (!page_ok(p, pg)) {
            if (mismatches++ < 5) fprintf(stderr, "cairn-fc-uffd: page %llu differs\n", (unsigned long long)pg);
        }
        touched++;
    }
    thread_faults += my_faults() - f0;
    return NULL;
}

static _Atomic uint64_t zero_bad, removed_pages;

static void *ballooner(void *arg)
{
    (void)arg;
    static const uint8_t zero[PG];
    for (int k = 0; k < balloon; k++) {
        uint64_t pg = rnd() % npages, n = 1 + rnd() % 16;
        while (!skip[pg]) pg = (pg + 1) % npages;
        uint8_t *a = addr_of(pg);
        if (!a) continue;
        /* stay inside the page's region */
        for (uint64_t j = 1; j < n; j++)
            if (pg + j >= npages || addr_of(pg + j) != a + j * PG || !skip[pg + j]) { n = j; break; }
        if (!skip[pg]) continue;
        if (madvise(a, n * PG, MADV_DONTNEED) < 0) die("madvise");
        removed_pages += n;
        for (uint64_t j = 0; j < n; j++) gone[pg + j] = 1;
        for (uint64_t j = 0; j < n; j++)
            if (memcmp(a + j * PG, zero, PG)) {
                if (zero_bad++ < 5)
                    fprintf(stderr, "cairn-fc-uffd: removed page %llu does not read zeros\n",
                            (unsigned long long)(pg + j));
            }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--lie")) { lie = 1; continue; }
        if (!strcmp(a, "--sequential")) { sequential = 1; continue; }
        if (!strcmp(a, "--warm")) { warm = 1; continue; }
        if (!strcmp(a, "--swap-regions")) { swap_regions = 1; continue; }
        if (!v) { fprintf(stderr, "cairn-fc-uffd: %s needs a value\n", a); return 2; }
        i++;
        if (!strcmp(a, "--socket")) sock_path = v;
        else if (!strcmp(a, "--expect")) expect_path = v;
        else if (!strcmp(a, "--threads")) nthreads = atoi(v);
        else if (!strcmp(a, "--regions")) nregions = atoi(v);
        else if (!strcmp(a, "--touch")) touch_permille = (unsigned)atoi(v);
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 0) | 1;
        else if (!strcmp(a, "--balloon")) balloon = atoi(v);
        else if (!strcmp(a, "--write-every")) write_every = atoi(v);
        else if (!strcmp(a, "--delay-ms")) delay_ms = atoi(v);
        else if (!strcmp(a, "--page-size-field")) ps_field = v;
        else if (!strcmp(a, "--send-json")) send_json = v;
        else if (!strcmp(a, "--garbage")) garbage = atol(v);
        else { fprintf(stderr, "cairn-fc-uffd: unknown option %s\n", a); return 2; }
    }
    if (!sock_path || nthreads < 1 || nthreads > 64 || nregions < 1 || nregions > 8 || (warm && lie) ||
        write_every < 0 || (swap_regions && (warm || lie))) {
        fprintf(stderr, "cairn-fc-uffd: bad usage (see the comment at the top of fc_uffd.c)\n");
        return 2;
    }
    if (garbage >= 0) {
        int s = connect_sock();
        uint8_t buf[4096];
        for (long done = 0; done < garbage;) {
            size_t n = (size_t)(garbage - done) < sizeof buf ? (size_t)(garbage - done) : sizeof buf;
            for (size_t k = 0; k < n; k++) buf[k] = (uint8_t)rnd();
            if (send(s, buf, n, MSG_NOSIGNAL) < 0) break;       /* refused mid-way: fine */
            done += (long)n;
        }
        int ok = refused(s);
        printf("{\"refused\": %s}\n", ok ? "true" : "false");
        return ok ? 0 : 1;
    }
    if (!expect_path) { fprintf(stderr, "cairn-fc-uffd: --expect is required\n"); return 2; }
    int rf = open(expect_path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (rf < 0 || fstat(rf, &st) < 0) die(expect_path);
    mem_size = (uint64_t)st.st_size;
    npages = mem_size / PG;
    if (mem_size % PG || npages < (uint64_t)nregions) { fprintf(stderr, "cairn-fc-uffd: odd memory size\n"); return 2; }
    /* Populated now: reading the expected bytes from disk must not count as fault time. */
    ref = mmap(NULL, mem_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, rf, 0);
    if (ref == MAP_FAILED) die("mmap expect");

    int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (uffd < 0) die("userfaultfd");
    struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_EVENT_REMOVE};
    if (ioctl(uffd, UFFDIO_API, &api) < 0) die("UFFDIO_API");

    /* Regions: the file cut in nregions pieces, each its own mapping (Firecracker maps
     * guest memory around the MMIO gap as separate regions). */
    char json[8192];
    size_t jl = 0;
    jl += (size_t)snprintf(json + jl, sizeof json - jl, "[");
    if (lie) nregions = 1;
    if (swap_regions) nregions = 2;
    uint64_t per = npages / (uint64_t)nregions;
    uint8_t *canary = NULL, *both = NULL;
    if (swap_regions) {
        per = npages / 3;
        both = mmap(NULL, 2 * per * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (both == MAP_FAILED) die("mmap region");
    }
    for (int i = 0; i < nregions; i++) {
        uint64_t first = per * (uint64_t)i, n = i == nregions - 1 ? npages - first : per;
        if (swap_regions) {
            first = i == 0 ? per : 0;
            n = per;
        }
        rg[i].offset = first * PG;
        rg[i].size = n * PG;
        if (swap_regions) rg[i].addr = both + (size_t)i * per * PG;
        else rg[i].addr = mmap(NULL, rg[i].size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                               -1, 0);
        if (rg[i].addr == MAP_FAILED) die("mmap region");
        struct uffdio_register r = {.range = {.start = (uint64_t)(uintptr_t)rg[i].addr, .len = rg[i].size},
                                    .mode = UFFDIO_REGISTER_MODE_MISSING};
        if (ioctl(uffd, UFFDIO_REGISTER, &r) < 0) die("UFFDIO_REGISTER");
        uint64_t base = (uint64_t)(uintptr_t)rg[i].addr;
        if (lie) {
            /* The list names memory we did not register: a canary the server must not touch. */
            canary = mmap(NULL, rg[i].size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (canary == MAP_FAILED) die("mmap canary");
            memset(canary, 0xAA, rg[i].size);
            base = (uint64_t)(uintptr_t)canary;
        }
        char ps[64] = "";
        if (!strcmp(ps_field, "page_size")) snprintf(ps, sizeof ps, ", \"page_size\": %lu", PG);
        else if (!strcmp(ps_field, "page_size_kib")) snprintf(ps, sizeof ps, ", \"page_size_kib\": %lu", PG);
        jl += (size_t)snprintf(json + jl, sizeof json - jl,
                               "%s{\"base_host_virt_addr\": %llu, \"size\": %llu, \"offset\": %llu%s}",
                               i ? ", " : "", (unsigned long long)base, (unsigned long long)rg[i].size,
                               (unsigned long long)rg[i].offset, ps);
        if (lie) break;
        if (warm) {
            shadow[i] = rg[i];
            shadow[i].addr = mmap(NULL, rg[i].size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                                  -1, 0);
            if (shadow[i].addr == MAP_FAILED) die("mmap region");
            r.range.start = (uint64_t)(uintptr_t)shadow[i].addr;
            if (ioctl(uffd, UFFDIO_REGISTER, &r) < 0) die("UFFDIO_REGISTER");
            jl += (size_t)snprintf(json + jl, sizeof json - jl,
                                   ", {\"base_host_virt_addr\": %llu, \"size\": %llu, \"offset\": %llu%s}",
                                   (unsigned long long)r.range.start, (unsigned long long)rg[i].size,
                                   (unsigned long long)rg[i].offset, ps);
        }
    }
    snprintf(json + jl, sizeof json - jl, "]");

    int s = connect_sock();
    if (send_json) {
        /* {BASE} in the text is replaced by region 0's address. */
        char text[8192];
        const char *b = strstr(send_json, "{BASE}");
        if (b) snprintf(text, sizeof text, "%.*s%llu%s", (int)(b - send_json), send_json,
                        (unsigned long long)(uintptr_t)rg[0].addr, b + 6);
        else snprintf(text, sizeof text, "%s", send_json);
        send_with_fd(s, text, uffd);
        int ok = refused(s);
        printf("{\"refused\": %s}\n", ok ? "true" : "false");
        return ok ? 0 : 1;
    }
    send_with_fd(s, json, uffd);
    struct ucred cr;
    socklen_t crl = sizeof cr;
    if (getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cr, &crl) == 0) server_pid = cr.pid;
    if (delay_ms) usleep((useconds_t)delay_ms * 1000);

    if (lie) {
        /* Touch region 0: the server finds no listed region there and must answer zeros,
         * and the canary it was told about must stay as it was. */
        static const uint8_t zero[PG];
        uint64_t bad = 0;
        for (uint64_t pg = 0; pg < npages; pg += 7)
            if (memcmp(rg[0].addr + pg * PG, zero, PG)) bad++;
        uint64_t canary_bad = 0;
        for (uint64_t k = 0; k < npages * PG; k++)
            if (canary[k] != 0xAA) { canary_bad++; break; }
        printf("{\"nonzero\": %llu, \"canary_changed\": %s}\n", (unsigned long long)bad, canary_bad ? "true" : "false");
        return bad || canary_bad ? 1 : 0;
    }

    /* The guest's work: a random subset (touch permille) in random order. */
    order = malloc(npages * sizeof *order);
    if (!order) die("malloc");
    for (uint64_t i = 0; i < npages; i++) order[i] = i;
    for (uint64_t i = npages - 1; !sequential && i > 0; i--) {
        uint64_t j = rnd() % (i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    norder = npages * touch_permille / 1000;
    uint64_t full = norder;
    pthread_t th[64];
    double cold_s = 0, u0, s0, u1, s1, u2, s2;
    uint64_t cold_faults = 0;
    server_cpu(&u0, &s0);
    if (warm) {
        cur = shadow;
        double c0 = now_s();
        for (long t = 0; t < nthreads; t++)
            if (pthread_create(&th[t], NULL, toucher, (void *)t)) die("pthread_create");
        for (int t = 0; t < nthreads; t++) pthread_join(th[t], NULL);
        cold_s = now_s() - c0;
        cold_faults = thread_faults;
        thread_faults = 0;
        touched = 0;
        cur = rg;
    }
    server_cpu(&u1, &s1);
    if (balloon) {
        /* Phase 1 touches half; phase 2 the rest while the balloon removes pages nobody
         * else touches (some touched already, some never). */
        skip = calloc(npages, 1);
        gone = calloc(npages, 1);
        if (!skip || !gone) die("calloc");
        for (uint64_t i = 0; i < npages; i++) if (rnd() % 8 == 0) skip[i] = 1;
        norder = full / 2;
    }
    if (write_every > 0) {
        marked = calloc(npages, 1);
        if (!marked) die("calloc");
        for (uint64_t pg = (uint64_t)write_every / 2; pg < npages; pg += (uint64_t)write_every) {
            uint8_t *p = addr_of(pg);
            if (!p || (skip && skip[pg])) continue;
            for (int k = 0; k < 8; k++) p[k] ^= MARK;     /* faults it in, then writes */
            marked[pg] = 1;
        }
    }
    double t0 = now_s();
    for (long t = 0; t < nthreads; t++)
        if (pthread_create(&th[t], NULL, toucher, (void *)t)) die("pthread_create");
    for (int t = 0; t < nthreads; t++) pthread_join(th[t], NULL);
    double t1 = now_s();
    uint64_t phase1_faults = thread_faults;     /* the faults of the timed phase */
    server_cpu(&u2, &s2);
    if (balloon) {
        order += norder;
        norder = full - norder;
        pthread_t bt;
        if (pthread_create(&bt, NULL, ballooner, NULL)) die("pthread_create");
        for (long t = 0; t < nthreads; t++)
            if (pthread_create(&th[t], NULL, toucher, (void *)t)) die("pthread_create");
        for (int t = 0; t < nthreads; t++) pthread_join(th[t], NULL);
        pthread_join(bt, NULL);
    }
    /* Removed pages once more, now that every fault is answered: still zeros. */
    static const uint8_t zero_page[PG];
    for (uint64_t pg = 0; gone && pg < npages; pg++)
        if (gone[pg] && memcmp(addr_of(pg), zero_page, PG) && zero_bad++ < 5)
            fprintf(stderr, "cairn-fc-uffd: removed page %llu does not read zeros at the end\n",
                    (unsigned long long)pg);
    double t2 = now_s();
    printf("{\"pages\": %llu, \"touched\": %llu, \"mismatches\": %llu, \"removed_pages\": %llu, "
           "\"removed_not_zero\": %llu, \"seconds\": %.4f, \"touch_per_second\": %.0f, \"all_seconds\": %.4f, "
           "\"thread_faults\": %llu, \"cold_seconds\": %.4f, \"cold_faults\": %llu, "
           "\"server_user_s\": %.2f, \"server_sys_s\": %.2f, \"cold_server_user_s\": %.2f, "
           "\"cold_server_sys_s\": %.2f}\n",
           (unsigned long long)npages, (unsigned long long)touched, (unsigned long long)mismatches,
           (unsigned long long)removed_pages, (unsigned long long)zero_bad, t1 - t0,
           (t1 > t0 ? (double)(balloon ? full / 2 : full) / (t1 - t0) : 0), t2 - t0,
           (unsigned long long)phase1_faults, cold_s, (unsigned long long)cold_faults,
           u2 < 0 ? -1 : u2 - u1, s2 < 0 ? -1 : s2 - s1, u1 < 0 ? -1 : u1 - u0, s1 < 0 ? -1 : s1 - s0);
    fflush(stdout);
    close(s);       /* the VM goes away */
    return mismatches || zero_bad ? 1 : 0;
}
