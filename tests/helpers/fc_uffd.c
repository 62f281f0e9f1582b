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
 *        cairn-fc-uffd --socket PATH --expect FILE --send-json TEXT   (hostile: expects refusal)
 *        cairn-fc-uffd --socket PATH --garbage N                      (hostile: random bytes)
 *        cairn-fc-uffd --socket PATH --expect FILE --lie              (list names other memory)
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define PG 4096ul

static const char *sock_path, *expect_path, *send_json, *ps_field = "page_size";
static int nthreads = 4, nregions = 2, lie, balloon, delay_ms, sequential;
static long garbage = -1;
static unsigned touch_permille = 1000;
static unsigned long long seed = 1;

typedef struct {
    uint8_t *addr;
    uint64_t size, offset;
} region;

static region rg[8];
static const uint8_t *ref;          /* the expected memory file, mapped */
static uint64_t mem_size, npages;
static uint64_t *order;             /* pages to touch, in order */
static uint64_t norder;
static uint8_t *skip;               /* pages the balloon owns in phase 2 */
static _Atomic uint64_t mismatches, touched;

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
        if (off >= rg[i].offset && off < rg[i].offset + rg[i].size) return rg[i].addr + (off - rg[i].offset);
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

static void *toucher(void *arg)
{
    long t = (long)arg;
    for (uint64_t i = (uint64_t)t; i < norder; i += (uint64_t)nthreads) {
        uint64_t pg = order[i];
        if (skip && skip[pg]) continue;
        const uint8_t *p = addr_of(pg);
        if (memcmp(p, ref + pg * PG, PG)) {
            if (mismatches++ < 5) fprintf(stderr, "cairn-fc-uffd: page %llu differs\n", (unsigned long long)pg);
        }
        touched++;
    }
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
        if (!v) { fprintf(stderr, "cairn-fc-uffd: %s needs a value\n", a); return 2; }
        i++;
        if (!strcmp(a, "--socket")) sock_path = v;
        else if (!strcmp(a, "--expect")) expect_path = v;
        else if (!strcmp(a, "--threads")) nthreads = atoi(v);
        else if (!strcmp(a, "--regions")) nregions = atoi(v);
        else if (!strcmp(a, "--touch")) touch_permille = (unsigned)atoi(v);
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 0) | 1;
        else if (!strcmp(a, "--balloon")) balloon = atoi(v);
        else if (!strcmp(a, "--delay-ms")) delay_ms = atoi(v);
        else if (!strcmp(a, "--page-size-field")) ps_field = v;
        else if (!strcmp(a, "--send-json")) send_json = v;
        else if (!strcmp(a, "--garbage")) garbage = atol(v);
        else { fprintf(stderr, "cairn-fc-uffd: unknown option %s\n", a); return 2; }
    }
    if (!sock_path || nthreads < 1 || nthreads > 64 || nregions < 1 || nregions > 8) {
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
    uint64_t per = npages / (uint64_t)nregions;
    uint8_t *canary = NULL;
    for (int i = 0; i < nregions; i++) {
        uint64_t first = per * (uint64_t)i, n = i == nregions - 1 ? npages - first : per;
        rg[i].offset = first * PG;
        rg[i].size = n * PG;
        rg[i].addr = mmap(NULL, rg[i].size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
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
    if (balloon) {
        /* Phase 1 touches half; phase 2 the rest while the balloon removes pages nobody
         * else touches (some touched already, some never). */
        skip = calloc(npages, 1);
        if (!skip) die("calloc");
        for (uint64_t i = 0; i < npages; i++) if (rnd() % 8 == 0) skip[i] = 1;
        norder = full / 2;
    }
    pthread_t th[64];
    double t0 = now_s();
    for (long t = 0; t < nthreads; t++)
        if (pthread_create(&th[t], NULL, toucher, (void *)t)) die("pthread_create");
    for (int t = 0; t < nthreads; t++) pthread_join(th[t], NULL);
    double t1 = now_s();
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
    double t2 = now_s();
    printf("{\"pages\": %llu, \"touched\": %llu, \"mismatches\": %llu, \"removed_pages\": %llu, "
           "\"removed_not_zero\": %llu, \"seconds\": %.4f, \"touch_per_second\": %.0f, \"all_seconds\": %.4f}\n",
           (unsigned long long)npages, (unsigned long long)touched, (unsigned long long)mismatches,
           (unsigned long long)removed_pages, (unsigned long long)zero_bad, t1 - t0,
           (t1 > t0 ? (double)(balloon ? full / 2 : full) / (t1 - t0) : 0), t2 - t0);
    fflush(stdout);
    close(s);       /* the VM goes away */
    return mismatches || zero_bad ? 1 : 0;
}
