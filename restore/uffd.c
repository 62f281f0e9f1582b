/* The page server: Firecracker's userfaultfd protocol (restore/lazy.h).
 *
 * Before the VM: every connection is handled by one poll loop, each with its own buffer
 * and deadline, so a client that connects and says nothing (or trickles bytes) never
 * delays the one that follows; the first complete, valid handshake wins.
 *
 * Serving: several threads read the uffd's events and answer them (o->threads); an
 * optional further thread installs the working set. Ordering rules that make the
 * answers right:
 *   - A fault in a range the balloon removed (UFFD_EVENT_REMOVE) is answered with zeros:
 *     the guest gave the page back, and reads of it must not bring old data back.
 *   - While a remove is pending the kernel refuses copies with EAGAIN: the fault waits in a
 *     retry list until the event was read and recorded, then is answered (zeros if it fell
 *     in the removed range).
 *   - Once a remove event is read the kernel accepts copies again, so reading events and
 *     recording the removes they bring is one step under rm_lock held exclusively, and
 *     every "is it removed? then copy" (a fault's or the prefetch's) holds it shared: no
 *     copy can land in a range between its remove being read and being recorded.
 *   - Two faults on one page (two vCPUs), or a fault and a prefetch: the second copy gets
 *     EEXIST and the faulting thread is woken with UFFDIO_WAKE.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "restore/lazy.h"

#define HANDSHAKE_MAX (64u << 10)
#define MAX_FDS 4
#define MAX_PENDING 16          /* connections waiting to complete a handshake at once */
#define MAX_THREADS 16
#define DEFAULT_THREADS 2
#define BATCH_MAX 64            /* events read at once */
#define RUN_MAX 64              /* pages of one copy: faults side by side + fault-around */

typedef struct {
    restore_region g;
    uint8_t *removed;           /* one byte per unit (page_size) of the region */
} region;

/* What one serving thread counts (summed into the result when they end). */
typedef struct {
    uint64_t faults, faults_zero, around, batched;
} counts;

typedef struct {
    const restore_uffd_opts *o;
    restore_uffd_result *r;
    restore_pages *p;
    int uffd, conn, lfd;
    int wake_fd;                /* eventfd: written once to wake every thread at stop */
    region *rg;
    size_t nrg;
    uint64_t maxps;             /* the largest unit */
    pthread_rwlock_t rm_lock;   /* see the top: exclusive to read events, shared to copy */
    _Atomic int stop;
    _Atomic uint64_t prefetched;
    pthread_mutex_t err_mu;     /* the first error of any thread */
    int rc;
    store_err err;
    /* recording (rec_mu) */
    pthread_mutex_t rec_mu;
    double t0, rec_until;
    uint64_t *rec;
    size_t nrec, caprec;
    uint8_t *seen;              /* one bit per page of the memory blob */
    _Atomic int rec_saved;
    uint64_t *ws;               /* the working set being prefetched (kept for the next one) */
    size_t nws;
} server;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void warn(const restore_uffd_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(const restore_uffd_opts *o, const char *fmt, ...)
{
    if (!o->warn) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    o->warn(o->arg, msg);
}

static region *find_region(server *sv, uint64_t addr)
{
    size_t lo = 0, hi = sv->nrg;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (addr < sv->rg[mid].g.base) hi = mid;
        else if (addr - sv->rg[mid].g.base >= sv->rg[mid].g.size) lo = mid + 1;
        else return &sv->rg[mid];
    }
    return NULL;
}

/* Fills buf with the unit at file offset fo (ps bytes), zeros where removed/zero/past the
 * end. *all_zero says if nothing but zeros went in. */
static int fill_unit(server *sv, uint64_t fo, uint64_t ps, uint8_t *buf, int *all_zero, store_err *e)
{
    uint64_t npages = restore_pages_count(sv->p);
    *all_zero = 1;
    for (uint64_t k = 0; k < ps / STORE_PAGE; k++) {
        uint64_t pg = fo / STORE_PAGE + k;
        uint8_t *dst = buf + k * STORE_PAGE;
        if (pg >= npages || restore_pages_is_zero(sv->p, pg)) {
            memset(dst, 0, STORE_PAGE);
            continue;
        }
        int rc = restore_pages_get(sv->p, pg, dst, e);
        if (rc) return rc;
        *all_zero = 0;
    }
    return 0;
}

/* Installs the unit at addr (aligned) with zeros or the snapshot's bytes, alone. Returns
 * 0, -EAGAIN (a remove is pending: retry after reading events), or another error. */
/* c: the faulting thread's counts (a fault: wake its thread if the page is present
 * already), NULL for the prefetch. */
static int install(server *sv, region *g, uint64_t addr, uint8_t *buf, counts *c_, store_err *e)
{
    uint64_t ps = g->g.page_size, unit = (addr - g->g.base) / ps;
    uint64_t fo = g->g.offset + (addr - g->g.base);
    int zero = 1, rc = 0;
    if (!g->removed[unit]) {
        if ((rc = fill_unit(sv, fo, ps, buf, &zero, e))) return rc;
    } else {
        memset(buf, 0, ps);
    }
    int ioc;
    struct uffdio_copy c = {.dst = addr, .src = (uint64_t)(uintptr_t)buf, .len = ps};
    if (zero && ps == STORE_PAGE) {
        struct uffdio_zeropage z = {.range = {.start = addr, .len = ps}};
        ioc = ioctl(sv->uffd, UFFDIO_ZEROPAGE, &z);
    } else {
        /* Huge pages have no zero-page ioctl: a copy of zeros. */
        ioc = ioctl(sv->uffd, UFFDIO_COPY, &c);
    }
    if (ioc < 0) {
        int err = errno;
        if (err == EAGAIN) return -EAGAIN;
        if (err == ESRCH) return -ESRCH;       /* the VM's memory is gone: it is exiting */
        if (err == EEXIST) {
            if (c_) {
                struct uffdio_range w = {.start = addr, .len = ps};
                if (ioctl(sv->uffd, UFFDIO_WAKE, &w) < 0)
                    return store_errf(e, -errno, "UFFDIO_WAKE at %#llx: %s", (unsigned long long)addr,
                                      strerror(errno));
            }
            return 0;
        }
        return store_errf(e, -err, "installing the page at %#llx: %s", (unsigned long long)addr, strerror(err));
    }
    if (c_) {
        c_->faults++;
        if (zero) c_->faults_zero++;
    }
    return 0;
}

static void record(server *sv, uint64_t fo)
{
    uint64_t pg = fo / STORE_PAGE;
    if (!sv->seen || pg >= restore_pages_count(sv->p)) return;
    pthread_mutex_lock(&sv->rec_mu);
    if (!sv->rec_saved && !(sv->seen[pg / 8] & (1u << (pg % 8)))) {
        sv->seen[pg / 8] |= (uint8_t)(1u << (pg % 8));
        if (sv->nrec == sv->caprec) {
            size_t nc = sv->caprec ? sv->caprec * 2 : 4096;
            uint64_t *n = realloc(sv->rec, nc * sizeof *n);
            if (n) {
                sv->rec = n;
                sv->caprec = nc;
            }
        }
        /* the working set is a hint: a shorter one (out of memory) only costs speed */
        if (sv->nrec < sv->caprec) sv->rec[sv->nrec++] = pg;
    }
    pthread_mutex_unlock(&sv->rec_mu);
}

static int handle_fault(server *sv, uint64_t addr, uint8_t *buf, counts *c, store_err *e)
{
    region *g = find_region(sv, addr);
    if (!g) {
        /* The kernel says this address is registered with the uffd, but the client's list
         * does not name it: answer zeros (no data of the snapshot goes there). */
        warn(sv->o, "fault at %#llx outside every region the client sent: answered with zeros",
             (unsigned long long)addr);
        uint64_t a = addr & ~(uint64_t)(STORE_PAGE - 1);
        struct uffdio_zeropage z = {.range = {.start = a, .len = STORE_PAGE}};
        if (ioctl(sv->uffd, UFFDIO_ZEROPAGE, &z) < 0 && errno != EEXIST)
            return errno == EAGAIN ? -EAGAIN : store_errf(e, -errno, "UFFDIO_ZEROPAGE at %#llx: %s",
                                                          (unsigned long long)a, strerror(errno));
        return 0;
    }
    uint64_t a = addr & ~(g->g.page_size - 1);
    pthread_rwlock_rdlock(&sv->rm_lock);
    int removed = g->removed[(a - g->g.base) / g->g.page_size];
    int rc = install(sv, g, a, buf, c, e);
    pthread_rwlock_unlock(&sv->rm_lock);
    if (!rc && sv->rec_until > 0 && !removed && now_s() < sv->rec_until)
        record(sv, g->g.offset + (addr & ~(uint64_t)(STORE_PAGE - 1)) - g->g.base);
    return rc;
}

/* Called with rm_lock held exclusively. */
static void mark_removed(server *sv, uint64_t start, uint64_t end)
{
    for (size_t i = 0; i < sv->nrg; i++) {
        region *g = &sv->rg[i];
        uint64_t s = start > g->g.base ? start : g->g.base;
        uint64_t t = end < g->g.base + g->g.size ? end : g->g.base + g->g.size;
        if (s >= t) continue;
        uint64_t u0 = (s - g->g.base) / g->g.page_size, u1 = (t - g->g.base + g->g.page_size - 1) / g->g.page_size;
        memset(g->removed + u0, 1, u1 - u0);
    }
    sv->r->removes++;
    sv->r->removed_bytes += end - start;
}

/* Runs: the faults of one batch that lie side by side (vCPUs, or threads walking memory
 * together), and with fault-around the pages that follow a faulted one, go in with one
 * ioctl (UFFDIO_COPY for data, UFFDIO_ZEROPAGE for zero pages), which wakes every thread
 * waiting in the range: one ioctl and one wake-up pass instead of one each. A guest
 * faults far less often than it touches pages, and the kernel's fault and wake-up are
 * most of a fault's cost (docs/lazy-wake.md).
 *
 * What a run may hold: pages of one region (never past its end: the next region's memory
 * is another mapping, and its file offset another range), of one kind (data or zero: a
 * zero page stays the kernel's shared zero page, and data is never written as zeros),
 * none removed by the balloon (checked under rm_lock with the ioctl, see the top). A
 * neighbour nobody faulted goes in only if it is at hand (restore_pages_get_cached: its
 * group decompressed already; a guess is worth a copy, not a decompression) and lies
 * within fault_around pages of a faulted page. A page present already (the guest has it,
 * maybe written since) stops the kernel's copy there: the pages before it went in, nothing
 * present is overwritten, and the faults after it are answered as any other.
 *
 * fa: page addresses, sorted, no duplicates. Returns how many of fa[0..n) it answered;
 * 0 when fa[0] is a removed or huge page, outside every region, or the ioctl installed
 * nothing (the caller then answers fa[0] alone, as any fault: zeros if removed, a retry
 * on EAGAIN, a wake on EEXIST, errors reported). */
static size_t answer_run(server *sv, const uint64_t *fa, size_t n, uint8_t *buf, counts *c, store_err *e,
                         int *rc)
{
    *rc = 0;
    unsigned around = sv->o->fault_around > 1 ? sv->o->fault_around : 1;
    region *g = find_region(sv, fa[0]);
    if (!g || g->g.page_size != STORE_PAGE) return 0;
    uint64_t npages = restore_pages_count(sv->p), u0 = (fa[0] - g->g.base) / STORE_PAGE;
    uint64_t pg0 = g->g.offset / STORE_PAGE + u0;
    int zero = pg0 >= npages || restore_pages_is_zero(sv->p, pg0);
    if (!zero && (*rc = restore_pages_get(sv->p, pg0, buf, e))) return 0;
    size_t k = 1, j = 1, lastf = 0;     /* pages in the run; next fault of fa; last faulted page */
    while (k < RUN_MAX && u0 + k < g->g.size / STORE_PAGE) {
        int faulted = j < n && fa[j] == fa[0] + k * STORE_PAGE;
        if (!faulted && k - lastf >= around) break;
        uint64_t pg = pg0 + k;
        if ((pg >= npages || restore_pages_is_zero(sv->p, pg)) != zero) break;
        if (!zero) {
            int r = faulted ? restore_pages_get(sv->p, pg, buf + k * STORE_PAGE, e)
                            : restore_pages_get_cached(sv->p, pg, buf + k * STORE_PAGE, e);
            if (r < 0) {
                *rc = r;
                return 0;
            }
            if (r) break;                   /* not at hand: not worth a decompression */
        }
        if (faulted) {
            lastf = k;
            j++;
        }
        k++;
    }
    pthread_rwlock_rdlock(&sv->rm_lock);
    size_t m = 0;
    while (m < k && !g->removed[u0 + m]) m++;
    uint64_t done = 0;
    if (m > 0 && zero) {
        struct uffdio_zeropage z = {.range = {.start = fa[0], .len = m * STORE_PAGE}};
        if (ioctl(sv->uffd, UFFDIO_ZEROPAGE, &z) == 0) done = m;
        else if (z.zeropage > 0) done = (uint64_t)z.zeropage / STORE_PAGE;   /* stopped at a present page */
    } else if (m > 0) {
        struct uffdio_copy cp = {.dst = fa[0], .src = (uint64_t)(uintptr_t)buf, .len = m * STORE_PAGE};
        if (ioctl(sv->uffd, UFFDIO_COPY, &cp) == 0) done = m;
        else if (cp.copy > 0) done = (uint64_t)cp.copy / STORE_PAGE;
    }
    pthread_rwlock_unlock(&sv->rm_lock);
    if (!done) return 0;
    size_t answered = 0;
    while (answered < n && fa[answered] < fa[0] + done * STORE_PAGE) answered++;
    c->faults += answered;
    if (zero) c->faults_zero += answered;
    if (answered > 1) c->batched += answered;
    c->around += done - answered;
    /* The working set is what the VM had: the neighbours installed with its faults too
     * (the next wake prefetches them, instead of faulting on them again). */
    if (sv->rec_until > 0 && now_s() < sv->rec_until)
        for (uint64_t q = 0; q < done; q++) record(sv, g->g.offset + (fa[0] - g->g.base) + q * STORE_PAGE);
    return answered;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- prefetch --------------------------------------------------------------------- */

static void *prefetch_main(void *arg)
{
    server *sv = arg;
    uint64_t ps_max = sv->maxps;
    uint8_t *buf = malloc(ps_max);
    if (!buf) {
        warn(sv->o, "prefetch: out of memory");
        return NULL;
    }
    for (size_t i = 0; i < sv->nws && !sv->stop; i++) {
        uint64_t fo = sv->ws[i] * STORE_PAGE;
        region *g = NULL;
        for (size_t k = 0; k < sv->nrg && !g; k++)
            if (fo >= sv->rg[k].g.offset && fo - sv->rg[k].g.offset < sv->rg[k].g.size) g = &sv->rg[k];
        if (!g) continue;
        uint64_t a = (g->g.base + (fo - g->g.offset)) & ~(g->g.page_size - 1);
        for (int tries = 0; !sv->stop; tries++) {
            store_err e;
            pthread_rwlock_rdlock(&sv->rm_lock);
            int rc = install(sv, g, a, buf, NULL, &e);
            pthread_rwlock_unlock(&sv->rm_lock);
            if (rc == -EAGAIN && tries < 1000) {
                struct timespec ts = {0, 1000000};
                nanosleep(&ts, NULL);
                continue;
            }
            if (rc) {
                /* The VM went away or the range is not registered: prefetch is only a hint. */
                warn(sv->o, "prefetch stopped at page %llu: %s", (unsigned long long)sv->ws[i],
                     rc == -EAGAIN ? "removes kept pending" : e.msg);
                sv->stop = 1;
            } else {
                sv->prefetched++;
            }
            break;
        }
    }
    free(buf);
    return NULL;
}

/* ---- handshake -------------------------------------------------------------------- */

static int is_uffd(int fd)
{
    char path[64], target[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n < 0) return 0;
    target[n] = 0;
    return !strcmp(target, "anon_inode:[userfaultfd]");
}

/* A connection that has not completed its handshake yet. */
typedef struct {
    int fd, uffd;
    char *buf;                  /* HANDSHAKE_MAX bytes */
    size_t len;
    double deadline;
    store_err pe;               /* why the bytes so far do not parse yet */
} pending;

static void pending_drop(pending *pd)
{
    if (pd->uffd >= 0) close(pd->uffd);
    if (pd->fd >= 0) close(pd->fd);
    free(pd->buf);
    *pd = (pending){.fd = -1, .uffd = -1};
}

/* One read of a handshake: the JSON region list with exactly one uffd. Returns 1 once
 * complete and valid (*rg, *nrg set; the uffd stays in pd), 0 if more is needed, or a
 * negative code (the connection is then refused). */
static int handshake_step(server *sv, pending *pd, restore_region **rg, size_t *nrg, store_err *e)
{
    union { struct cmsghdr h; char b[CMSG_SPACE(MAX_FDS * sizeof(int))]; } ctl;
    struct iovec iov = {.iov_base = pd->buf + pd->len, .iov_len = HANDSHAKE_MAX - pd->len};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof ctl.b};
    ssize_t n = recvmsg(pd->fd, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return 0;
    if (n < 0) return store_errf(e, -errno, "recvmsg: %s", strerror(errno));
    int bad_fds = (m.msg_flags & MSG_CTRUNC) != 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (pd->uffd < 0 && !bad_fds) pd->uffd = fd;
            else {
                close(fd);
                bad_fds = 1;
            }
        }
    }
    if (bad_fds) return store_errf(e, -EINVAL, "more than one descriptor sent");
    if (n == 0)
        return store_errf(e, -ECONNRESET, "closed before a complete handshake%s%s",
                          pd->pe.msg[0] ? ": " : "", pd->pe.msg);
    pd->len += (size_t)n;
    int rc = restore_regions_parse(pd->buf, pd->len, restore_pages_size(sv->p), rg, nrg, &pd->pe);
    if (rc == 0) {
        if (pd->uffd < 0) rc = store_errf(e, -EINVAL, "region list came without a userfaultfd");
        else if (!is_uffd(pd->uffd)) rc = store_errf(e, -EINVAL, "the descriptor sent is not a userfaultfd");
        if (rc) {
            free(*rg);
            *rg = NULL;
            return rc;
        }
        return 1;
    }
    /* Not JSON yet: maybe incomplete. A complete but invalid list is final. */
    if (rc != -ENODATA || pd->len == HANDSHAKE_MAX) return store_errf(e, rc, "%s", pd->pe.msg);
    return 0;
}

static void refuse(server *sv, const char *why)
{
    sv->r->refused++;
    warn(sv->o, "refused a connection: %s", why);
}

/* Accepts connections until one completes a valid handshake: 1 (sv->conn, sv->uffd, *rg
 * set), 0 if none came within o->wait_ms (r->timed_out), or a negative code. */
static int wait_for_vm(server *sv, restore_region **rg, size_t *nrg, store_err *e)
{
    const restore_uffd_opts *o = sv->o;
    int tmo = o->accept_timeout_ms > 0 ? o->accept_timeout_ms : 5000;
    double deadline = o->wait_ms > 0 ? now_s() + o->wait_ms / 1000.0 : 0;
    pending pd[MAX_PENDING];
    size_t np = 0;
    int rc = 0;
    while (!rc) {
        double t = now_s(), next = deadline;
        for (size_t i = 0; i < np; i++)
            if (next == 0 || pd[i].deadline < next) next = pd[i].deadline;
        if (deadline > 0 && t >= deadline) {
            /* A page server nobody connects to must not pin its snapshot for ever. */
            sv->r->timed_out = 1;
            break;
        }
        struct pollfd pf[MAX_PENDING + 1] = {{.fd = sv->lfd, .events = POLLIN}};
        for (size_t i = 0; i < np; i++) pf[i + 1] = (struct pollfd){.fd = pd[i].fd, .events = POLLIN};
        int pr = poll(pf, np + 1, next > 0 ? (int)((next - t) * 1000) + 1 : -1);
        if (pr < 0) {
            if (errno == EINTR) continue;
            rc = store_errf(e, -errno, "poll on %s: %s", o->socket_path, strerror(errno));
            break;
        }
        /* Handshakes first (a complete one wins), then expiries, then new connections. */
        for (size_t i = 0; i < np && !rc; i++) {
            int r = 0;
            store_err he;
            if (pf[i + 1].revents) r = handshake_step(sv, &pd[i], rg, nrg, &he);
            else if (now_s() >= pd[i].deadline)
                r = store_errf(&he, -ETIMEDOUT, "no complete handshake within %d ms%s%s", tmo,
                               pd[i].pe.msg[0] ? ": " : "", pd[i].pe.msg);
            if (r == 1) {
                sv->conn = pd[i].fd;
                sv->uffd = pd[i].uffd;
                free(pd[i].buf);
                pd[i] = pd[--np];
                rc = 1;
            } else if (r < 0) {
                refuse(sv, he.msg);
                pending_drop(&pd[i]);
                pd[i--] = pd[--np];
                pf[i + 1 + 1] = pf[np + 1];    /* keep pf aligned with pd */
            }
        }
        if (rc || !(pf[0].revents & POLLIN)) continue;
        int c = accept4(sv->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN) continue;
            rc = store_errf(e, -errno, "accept on %s: %s", o->socket_path, strerror(errno));
            break;
        }
        if (np == MAX_PENDING) {
            close(c);
            refuse(sv, "too many connections are sending a handshake at once");
            continue;
        }
        pd[np] = (pending){.fd = c, .uffd = -1, .buf = malloc(HANDSHAKE_MAX), .deadline = now_s() + tmo / 1000.0};
        if (!pd[np].buf) {
            close(c);
            rc = store_errf(e, -ENOMEM, "out of memory");
            break;
        }
        np++;
    }
    /* The others lose: this server serves one VM. */
    for (size_t i = 0; i < np; i++) {
        if (rc == 1) refuse(sv, "another client completed its handshake first: this server serves one VM");
        pending_drop(&pd[i]);
    }
    return rc;
}

/* ---- serving ---------------------------------------------------------------------- */

static int save_recording(server *sv, store_err *e)
{
    /* Pages the prefetch installed raised no fault, so they are not in the recording: the
     * next working set keeps them first, then what faulted. */
    pthread_mutex_lock(&sv->rec_mu);
    sv->rec_saved = 1;                  /* no thread records after this */
    size_t n = sv->nws + sv->nrec;
    uint64_t *all = malloc((n ? n : 1) * sizeof *all);
    size_t k = 0;
    for (size_t i = 0; all && i < sv->nws; i++) all[k++] = sv->ws[i];
    for (size_t i = 0; all && i < sv->nrec; i++) all[k++] = sv->rec[i];
    pthread_mutex_unlock(&sv->rec_mu);
    if (!all) return store_errf(e, -ENOMEM, "out of memory");
    sv->r->recorded = k;
    const store_snapshot *snap = restore_pages_snapshot(sv->p);
    int rc = restore_wset_save_pending(sv->o->store_dir, snap->sandbox, all, k, e);
    free(all);
    return rc;
}

enum { EV_UFFD, EV_WAKE, EV_CONN, EV_LISTEN };

typedef struct {
    server *sv;
    int idx;
    pthread_t th;
    counts c;
} serve_thread;

static void fail(server *sv, int rc, const store_err *e)
{
    pthread_mutex_lock(&sv->err_mu);
    if (!sv->rc) {
        sv->rc = rc;
        sv->err = *e;
    }
    pthread_mutex_unlock(&sv->err_mu);
}

static void stop_all(server *sv)
{
    if (atomic_exchange(&sv->stop, 1)) return;
    uint64_t one = 1;
    if (write(sv->wake_fd, &one, sizeof one) < 0) {
        /* an eventfd write fails only when its counter would overflow: the others wake
         * within their poll timeout anyway */
    }
}

static void *serve_main(void *arg)
{
    serve_thread *t = arg;
    server *sv = t->sv;
    struct uffd_msg msgs[BATCH_MAX];
    uint64_t fa[BATCH_MAX];
    size_t nretry = 0, capretry = 64;
    uint64_t *retry = malloc(capretry * sizeof *retry);
    uint8_t *buf = malloc(sv->maxps > RUN_MAX * STORE_PAGE ? sv->maxps : RUN_MAX * STORE_PAGE);
    store_err e;
    /* Each thread waits on its own epoll set; the uffd is in every set with EPOLLEXCLUSIVE,
     * so one fault wakes one thread, not all of them. */
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct { int fd; uint32_t tag, flags; } want[] = {
        {sv->uffd, EV_UFFD, EPOLLEXCLUSIVE}, {sv->wake_fd, EV_WAKE, 0}, {sv->conn, EV_CONN, 0},
        {t->idx == 0 ? sv->lfd : -1, EV_LISTEN, 0}};
    int bad = ep < 0 ? errno : 0;
    for (size_t i = 0; !bad && i < sizeof want / sizeof *want; i++) {
        struct epoll_event ev = {.events = EPOLLIN | want[i].flags, .data.u32 = want[i].tag};
        if (want[i].fd >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, want[i].fd, &ev) < 0) bad = errno;
    }
    if (bad) {
        store_errf(&e, -bad, "epoll: %s", strerror(bad));
        fail(sv, -bad, &e);
        stop_all(sv);
    } else if (!retry || !buf) {
        store_errf(&e, -ENOMEM, "out of memory");
        fail(sv, -ENOMEM, &e);
        stop_all(sv);
    }
    while (!sv->stop) {
        if (t->idx == 0 && sv->rec_until > 0 && !sv->rec_saved && now_s() >= sv->rec_until) {
            store_err we;
            if (save_recording(sv, &we)) warn(sv->o, "working set not saved: %s", we.msg);
        }
        pthread_rwlock_wrlock(&sv->rm_lock);
        ssize_t n = read(sv->uffd, msgs, sizeof msgs);
        int err = errno;
        for (ssize_t i = 0; n > 0 && i < n / (ssize_t)sizeof *msgs; i++)
            if (msgs[i].event == UFFD_EVENT_REMOVE) mark_removed(sv, msgs[i].arg.remove.start, msgs[i].arg.remove.end);
        pthread_rwlock_unlock(&sv->rm_lock);
        if (n < 0 && err != EAGAIN && err != EINTR) {
            store_errf(&e, -err, "reading the userfaultfd: %s", strerror(err));
            fail(sv, -err, &e);
            break;
        }
        size_t nfa = 0;
        for (ssize_t i = 0; n > 0 && i < n / (ssize_t)sizeof *msgs; i++) {
            struct uffd_msg *m = &msgs[i];
            if (m->event == UFFD_EVENT_PAGEFAULT) {
                fa[nfa++] = m->arg.pagefault.address & ~(uint64_t)(STORE_PAGE - 1);
            } else if (m->event == UFFD_EVENT_REMOVE || m->event == UFFD_EVENT_UNMAP) {
                /* removes: recorded above; unmaps: the range is gone, no fault comes from it */
            } else {
                warn(sv->o, "ignored userfaultfd event %u", m->event);
            }
        }
        /* Sorted, two faults on one page (two vCPUs) kept once: one copy wakes both. */
        if (nfa > 1) qsort(fa, nfa, sizeof *fa, cmp_u64);
        size_t nu = 0;
        for (size_t i = 0; i < nfa; i++)
            if (!nu || fa[i] != fa[nu - 1]) fa[nu++] = fa[i];
        for (size_t i = 0; i < nu && !sv->stop;) {
            int r = 0;
            size_t took = answer_run(sv, fa + i, nu - i, buf, &t->c, &e, &r);
            if (!took) {
                if (!r) r = handle_fault(sv, fa[i], buf, &t->c, &e);
                took = 1;
            }
            if (r == -EAGAIN) {
                if (nretry == capretry) {
                    uint64_t *nr = realloc(retry, capretry * 2 * sizeof *nr);
                    if (!nr) {
                        store_errf(&e, -ENOMEM, "out of memory");
                        fail(sv, -ENOMEM, &e);
                        stop_all(sv);
                        break;
                    }
                    retry = nr;
                    capretry *= 2;
                }
                retry[nretry++] = fa[i];
            } else if (r == -ESRCH) {
                stop_all(sv);                      /* the VM's memory is gone: it is exiting */
            } else if (r) {
                fail(sv, r, &e);
                stop_all(sv);
            }
            i += took;
        }
        /* Faults refused while a remove was pending: the remove is read by now, or will be
         * at the next read. */
        size_t keep = 0;
        for (size_t i = 0; !sv->stop && i < nretry; i++) {
            int r = handle_fault(sv, retry[i], buf, &t->c, &e);
            if (r == -EAGAIN) retry[keep++] = retry[i];
            else if (r == -ESRCH) stop_all(sv);
            else if (r) {
                fail(sv, r, &e);
                stop_all(sv);
            }
        }
        nretry = keep;
        if (sv->stop) continue;
        /* A full read: more are likely queued, read again at once. Otherwise wait before
         * the read: when faults are queued it returns at once, and it saves the read that
         * would find nothing after a batch. */
        if (n == (ssize_t)sizeof msgs && !nretry) continue;
        struct epoll_event ev[4];
        int tmo = nretry ? 1 : (t->idx == 0 && sv->rec_until > 0 && !sv->rec_saved ? 100 : -1);
        int ne = epoll_wait(ep, ev, 4, tmo);
        if (ne < 0) {
            int err = errno;
            if (err == EINTR) continue;
            store_errf(&e, -err, "epoll_wait: %s", strerror(err));
            fail(sv, -err, &e);
            break;
        }
        for (int i = 0; i < ne; i++) {
            if (ev[i].data.u32 == EV_CONN) {
                char junk[256];
                ssize_t k = recv(sv->conn, junk, sizeof junk, MSG_DONTWAIT);
                if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) stop_all(sv);   /* the VM is gone */
            } else if (ev[i].data.u32 == EV_UFFD && (ev[i].events & (EPOLLERR | EPOLLHUP))) {
                stop_all(sv);
            } else if (ev[i].data.u32 == EV_LISTEN) {
                int c = accept4(sv->lfd, NULL, NULL, SOCK_CLOEXEC);
                if (c >= 0) {
                    close(c);
                    refuse(sv, "a second connection: this server serves one VM");
                }
            }
        }
    }
    if (ep >= 0) close(ep);
    stop_all(sv);
    free(retry);
    free(buf);
    return NULL;
}

/* Binds a name of its own, listens, then renames it to path: the socket file appears only
 * once it accepts, so a caller waiting for the file never meets ECONNREFUSED. */
static int listen_on(const char *path, store_err *e)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    char tmp[sizeof a.sun_path + 32];
    int tl = snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    if (tl < 0 || (size_t)tl >= sizeof a.sun_path)
        return store_errf(e, -ENAMETOOLONG, "%s: socket path too long", path);
    memcpy(a.sun_path, tmp, (size_t)tl + 1);
    struct stat st;
    if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode))
        return store_errf(e, -EEXIST, "%s exists and is not a socket", path);
    if (unlink(tmp) < 0 && errno != ENOENT) return store_errf(e, -errno, "%s: %s", tmp, strerror(errno));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return store_errf(e, -errno, "socket: %s", strerror(errno));
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 8) < 0 || rename(tmp, path) < 0) {
        int err = errno;
        close(fd);
        unlink(tmp);
        return store_errf(e, -err, "%s: %s", path, strerror(err));
    }
    return fd;
}


int restore_uffd_serve(const restore_uffd_opts *o, restore_uffd_result *r, store_err *e)
{
    memset(r, 0, sizeof *r);
    server sv = {.o = o, .r = r, .uffd = -1, .conn = -1, .lfd = -1, .wake_fd = -1};
    pthread_rwlock_init(&sv.rm_lock, NULL);
    pthread_mutex_init(&sv.err_mu, NULL);
    pthread_mutex_init(&sv.rec_mu, NULL);
    unsigned nth = o->threads ? o->threads : DEFAULT_THREADS;
    if (nth > MAX_THREADS) nth = MAX_THREADS;
    int rc = restore_pages_open(o->store_dir, o->snapshot, "memory", o->cache_bytes, &sv.p, e);
    if (rc) goto out;
    if (o->on_open) o->on_open(o->arg, restore_pages_snapshot(sv.p));
    if (o->prefetch) {
        store_err we;
        int w = restore_wset_load(o->store_dir, o->snapshot, &sv.ws, &sv.nws, &we);
        if (w && w != -ENOENT) warn(o, "working set ignored: %s", we.msg);
    }
    sv.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (sv.wake_fd < 0) {
        rc = store_errf(e, -errno, "eventfd: %s", strerror(errno));
        goto out;
    }
    sv.lfd = listen_on(o->socket_path, e);
    if (sv.lfd < 0) {
        rc = sv.lfd;
        goto out;
    }
    if (o->on_listen) o->on_listen(o->arg);
    restore_region *rg = NULL;
    size_t nrg = 0;
    rc = wait_for_vm(&sv, &rg, &nrg, e);
    if (rc <= 0) goto out;
    rc = 0;
    sv.t0 = now_s();
    sv.nrg = nrg;
    sv.rg = calloc(nrg, sizeof *sv.rg);
    if (!sv.rg) rc = store_errf(e, -ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < nrg; i++) {
        sv.rg[i].g = rg[i];
        sv.rg[i].removed = calloc(rg[i].size / rg[i].page_size, 1);
        if (!sv.rg[i].removed) rc = store_errf(e, -ENOMEM, "out of memory");
        if (rg[i].page_size > sv.maxps) sv.maxps = rg[i].page_size;
    }
    free(rg);
    /* Several threads read it: none may block in read() (holding rm_lock). Firecracker
     * makes it non-blocking already; the flag is the shared description's, unused by it. */
    int fl = rc ? 0 : fcntl(sv.uffd, F_GETFL);
    if (!rc && (fl < 0 || fcntl(sv.uffd, F_SETFL, fl | O_NONBLOCK) < 0))
        rc = store_errf(e, -errno, "making the userfaultfd non-blocking: %s", strerror(errno));
    if (!rc && o->record_seconds > 0) {
        sv.seen = calloc(restore_pages_count(sv.p) / 8 + 1, 1);
        if (sv.seen) sv.rec_until = sv.t0 + o->record_seconds;
        else warn(o, "not recording the working set: out of memory");
        /* the working set goes first in the next one: its pages are not recorded twice */
        for (size_t i = 0; sv.seen && i < sv.nws; i++)
            if (sv.ws[i] < restore_pages_count(sv.p)) sv.seen[sv.ws[i] / 8] |= (uint8_t)(1u << (sv.ws[i] % 8));
    }
    pthread_t pf;
    int have_pf = 0;
    if (!rc && sv.nws) {
        if (pthread_create(&pf, NULL, prefetch_main, &sv) == 0) have_pf = 1;
        else warn(o, "prefetch not started: %s", strerror(errno));
    }
    serve_thread th[MAX_THREADS];
    unsigned started = 0;
    for (; !rc && started < nth; started++) {
        th[started] = (serve_thread){.sv = &sv, .idx = (int)started};
        int pe = pthread_create(&th[started].th, NULL, serve_main, &th[started]);
        if (pe) {
            if (started == 0) rc = store_errf(e, -pe, "starting the serving thread: %s", strerror(pe));
            else warn(o, "serving with %u threads, not %u: %s", started, nth, strerror(pe));
            break;
        }
    }
    for (unsigned i = 0; i < started; i++) {
        pthread_join(th[i].th, NULL);
        r->faults += th[i].c.faults;
        r->faults_zero += th[i].c.faults_zero;
        r->around += th[i].c.around;
        r->batched += th[i].c.batched;
    }
    sv.stop = 1;
    if (have_pf) pthread_join(pf, NULL);
    if (!rc && sv.rc) {
        rc = sv.rc;
        *e = sv.err;
    }
    r->prefetched = sv.prefetched;
    if (sv.rec_until > 0 && !sv.rec_saved) {
        store_err we;
        if (save_recording(&sv, &we)) warn(o, "working set not saved: %s", we.msg);
    }
    r->serve_seconds = now_s() - sv.t0;
out:
    if (sv.p) restore_pages_get_stats(sv.p, &r->pages);
    for (size_t i = 0; sv.rg && i < sv.nrg; i++) free(sv.rg[i].removed);
    free(sv.rg);
    free(sv.rec);
    free(sv.seen);
    free(sv.ws);
    if (sv.uffd >= 0) close(sv.uffd);
    if (sv.conn >= 0) close(sv.conn);
    if (sv.wake_fd >= 0) close(sv.wake_fd);
    if (sv.lfd >= 0) {
        close(sv.lfd);
        if (unlink(o->socket_path) < 0 && errno != ENOENT && !rc)
            rc = store_errf(e, -errno, "%s: %s", o->socket_path, strerror(errno));
    }
    restore_pages_close(sv.p);
    pthread_rwlock_destroy(&sv.rm_lock);
    pthread_mutex_destroy(&sv.err_mu);
    pthread_mutex_destroy(&sv.rec_mu);
    return rc;
}
