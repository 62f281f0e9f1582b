/* The page server: Firecracker's userfaultfd protocol (restore/lazy.h).
 *
 * One thread reads the uffd's events and answers them; an optional second thread installs
 * the working set. Ordering rules that make the answers right:
 *   - A fault in a range the balloon removed (UFFD_EVENT_REMOVE) is answered with zeros:
 *     the guest gave the page back, and reads of it must not bring old data back.
 *   - While a remove is pending the kernel refuses copies with EAGAIN: the fault waits in a
 *     retry list until the event was read and recorded, then is answered (zeros if it fell
 *     in the removed range).
 *   - The prefetch thread checks "removed" and copies under one mutex, and the event thread
 *     records removes under it: a prefetched page can never land in a range after its
 *     remove event was read (and before that, the kernel refuses the copy with EAGAIN).
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
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "restore/lazy.h"

#define HANDSHAKE_MAX (64u << 10)
#define MAX_FDS 4

typedef struct {
    restore_region g;
    uint8_t *removed;           /* one byte per unit (page_size) of the region */
} region;

typedef struct {
    const restore_uffd_opts *o;
    restore_uffd_result *r;
    restore_pages *p;
    int uffd;
    region *rg;
    size_t nrg;
    uint8_t *buf;               /* one unit of the largest page size, for the event thread */
    uint64_t maxps;
    pthread_mutex_t rm_mu;      /* removed[] writes; prefetch's check-and-copy */
    _Atomic int stop;
    _Atomic uint64_t prefetched;
    /* recording */
    double t0, rec_until;
    uint64_t *rec;
    size_t nrec, caprec;
    uint8_t *seen;              /* one bit per page of the memory blob */
    int rec_saved;
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

/* Installs the unit at addr (aligned) with zeros or the snapshot's bytes. Returns 0,
 * -EAGAIN (a remove is pending: retry after reading events), or another error. */
/* With fault-around, the data pages that follow a faulted data page in the same region
 * go in with it (one UFFDIO_COPY), up to o->fault_around pages: the run stops at a zero
 * page (those stay the kernel's shared zero page, installed only when touched), a removed
 * page, the region's or the file's end. A page already present stops the kernel's copy
 * there (EEXIST after a partial copy): nothing present is ever overwritten. */
static unsigned extend_run(server *sv, region *g, uint64_t addr, uint8_t *buf, store_err *e, int *rc)
{
    unsigned want = sv->o->fault_around, k = 1;
    uint64_t npages = restore_pages_count(sv->p);
    *rc = 0;
    while (k < want) {
        uint64_t a = addr + (uint64_t)k * STORE_PAGE;
        if (a - g->g.base >= g->g.size || g->removed[(a - g->g.base) / STORE_PAGE]) break;
        uint64_t pg = (g->g.offset + (a - g->g.base)) / STORE_PAGE;
        if (pg >= npages || restore_pages_is_zero(sv->p, pg)) break;
        if ((*rc = restore_pages_get(sv->p, pg, buf + (size_t)k * STORE_PAGE, e))) break;
        k++;
    }
    return k;
}

static int install(server *sv, region *g, uint64_t addr, uint8_t *buf, int is_fault, store_err *e)
{
    uint64_t ps = g->g.page_size, unit = (addr - g->g.base) / ps;
    uint64_t fo = g->g.offset + (addr - g->g.base);
    int zero = 1, rc = 0;
    unsigned run = 1;
    if (!g->removed[unit]) {
        if ((rc = fill_unit(sv, fo, ps, buf, &zero, e))) return rc;
        if (!zero && ps == STORE_PAGE && sv->o->fault_around > 1) {
            run = extend_run(sv, g, addr, buf, e, &rc);
            if (rc) return rc;
        }
    } else {
        memset(buf, 0, ps);
    }
    int ioc;
    struct uffdio_copy c = {.dst = addr, .src = (uint64_t)(uintptr_t)buf, .len = ps * run};
    if (zero && ps == STORE_PAGE) {
        struct uffdio_zeropage z = {.range = {.start = addr, .len = ps}};
        ioc = ioctl(sv->uffd, UFFDIO_ZEROPAGE, &z);
    } else {
        /* Huge pages have no zero-page ioctl: a copy of zeros. */
        ioc = ioctl(sv->uffd, UFFDIO_COPY, &c);
    }
    if (ioc < 0 && run > 1 && c.copy > 0) {
        ioc = 0;                               /* the faulted page and some after it went in */
        run = (unsigned)((uint64_t)c.copy / ps);
    }
    if (ioc < 0) {
        int err = errno;
        if (err == EAGAIN) return -EAGAIN;
        if (err == ESRCH) return -ESRCH;       /* the VM's memory is gone: it is exiting */
        if (err == EEXIST) {
            if (is_fault) {
                struct uffdio_range w = {.start = addr, .len = ps};
                if (ioctl(sv->uffd, UFFDIO_WAKE, &w) < 0)
                    return store_errf(e, -errno, "UFFDIO_WAKE at %#llx: %s", (unsigned long long)addr,
                                      strerror(errno));
            }
            return 0;
        }
        return store_errf(e, -err, "installing the page at %#llx: %s", (unsigned long long)addr, strerror(err));
    }
    if (is_fault && run > 1) sv->r->around += run - 1;   /* the event thread's count only */
    if (is_fault) {
        sv->r->faults++;
        if (zero) sv->r->faults_zero++;
    }
    return 0;
}

static void record(server *sv, uint64_t fo)
{
    uint64_t pg = fo / STORE_PAGE;
    if (!sv->seen || pg >= restore_pages_count(sv->p) || sv->seen[pg / 8] & (1u << (pg % 8))) return;
    sv->seen[pg / 8] |= (uint8_t)(1u << (pg % 8));
    if (sv->nrec == sv->caprec) {
        size_t nc = sv->caprec ? sv->caprec * 2 : 4096;
        uint64_t *n = realloc(sv->rec, nc * sizeof *n);
        if (!n) return;            /* the working set is a hint: a shorter one only costs speed */
        sv->rec = n;
        sv->caprec = nc;
    }
    sv->rec[sv->nrec++] = pg;
}

static int handle_fault(server *sv, uint64_t addr, store_err *e)
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
    int rc = install(sv, g, a, sv->buf, 1, e);
    if (!rc && sv->rec_until > 0 && !g->removed[(a - g->g.base) / g->g.page_size] && now_s() < sv->rec_until)
        record(sv, g->g.offset + (addr & ~(uint64_t)(STORE_PAGE - 1)) - g->g.base);
    return rc;
}

static void mark_removed(server *sv, uint64_t start, uint64_t end)
{
    pthread_mutex_lock(&sv->rm_mu);
    for (size_t i = 0; i < sv->nrg; i++) {
        region *g = &sv->rg[i];
        uint64_t s = start > g->g.base ? start : g->g.base;
        uint64_t t = end < g->g.base + g->g.size ? end : g->g.base + g->g.size;
        if (s >= t) continue;
        uint64_t u0 = (s - g->g.base) / g->g.page_size, u1 = (t - g->g.base + g->g.page_size - 1) / g->g.page_size;
        memset(g->removed + u0, 1, u1 - u0);
    }
    pthread_mutex_unlock(&sv->rm_mu);
    sv->r->removes++;
    sv->r->removed_bytes += end - start;
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
            pthread_mutex_lock(&sv->rm_mu);
            int rc = install(sv, g, a, buf, 0, &e);
            pthread_mutex_unlock(&sv->rm_mu);
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

/* Reads the handshake: the JSON region list with exactly one uffd. Returns the uffd, or a
 * negative code (the connection is then refused). */
static int handshake(server *sv, int conn, restore_region **rg, size_t *nrg, store_err *e)
{
    char *buf = malloc(HANDSHAKE_MAX);
    if (!buf) return store_errf(e, -ENOMEM, "out of memory");
    size_t len = 0;
    int uffd = -1, rc = -EINVAL;
    int tmo = sv->o->accept_timeout_ms > 0 ? sv->o->accept_timeout_ms : 5000;
    double deadline = now_s() + tmo / 1000.0;
    store_err pe = {""};
    for (;;) {
        int left = (int)((deadline - now_s()) * 1000);
        struct pollfd pf = {.fd = conn, .events = POLLIN};
        int pr = left > 0 ? poll(&pf, 1, left) : 0;
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) {
            rc = pr < 0 ? store_errf(e, -errno, "poll: %s", strerror(errno))
                        : store_errf(e, -ETIMEDOUT, "no complete handshake within %d ms%s%s", tmo,
                                     pe.msg[0] ? ": " : "", pe.msg);
            break;
        }
        union { struct cmsghdr h; char b[CMSG_SPACE(MAX_FDS * sizeof(int))]; } ctl;
        struct iovec iov = {.iov_base = buf + len, .iov_len = HANDSHAKE_MAX - len};
        struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof ctl.b};
        ssize_t n = recvmsg(conn, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n < 0) {
            rc = store_errf(e, -errno, "recvmsg: %s", strerror(errno));
            break;
        }
        int bad_fds = (m.msg_flags & MSG_CTRUNC) != 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                if (uffd < 0 && !bad_fds) uffd = fd;
                else {
                    close(fd);
                    bad_fds = 1;
                }
            }
        }
        if (bad_fds) {
            rc = store_errf(e, -EINVAL, "more than one descriptor sent");
            break;
        }
        if (n == 0) {
            rc = store_errf(e, -ECONNRESET, "closed before a complete handshake%s%s",
                            pe.msg[0] ? ": " : "", pe.msg);
            break;
        }
        len += (size_t)n;
        rc = restore_regions_parse(buf, len, restore_pages_size(sv->p), rg, nrg, &pe);
        if (rc == 0) {
            if (uffd < 0) rc = store_errf(e, -EINVAL, "region list came without a userfaultfd");
            else if (!is_uffd(uffd)) rc = store_errf(e, -EINVAL, "the descriptor sent is not a userfaultfd");
            break;
        }
        /* Not JSON yet: maybe incomplete. A complete but invalid list is final. */
        if (rc != -ENODATA || len == HANDSHAKE_MAX) {
            rc = store_errf(e, rc, "%s", pe.msg);
            break;
        }
    }
    free(buf);
    if (rc) {
        if (uffd >= 0) close(uffd);
        free(*rg);
        *rg = NULL;
        return rc;
    }
    return uffd;
}

/* ---- serving ---------------------------------------------------------------------- */

static int save_recording(server *sv, store_err *e)
{
    sv->rec_saved = 1;
    /* Pages the prefetch installed raised no fault, so they are not in the recording: the
     * next working set keeps them first, then what faulted. */
    size_t n = sv->nws + sv->nrec;
    uint64_t *all = malloc((n ? n : 1) * sizeof *all);
    if (!all) return store_errf(e, -ENOMEM, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < sv->nws; i++) all[k++] = sv->ws[i];
    for (size_t i = 0; i < sv->nrec; i++) all[k++] = sv->rec[i];
    sv->r->recorded = k;
    const store_snapshot *snap = restore_pages_snapshot(sv->p);
    int rc = restore_wset_save_pending(sv->o->store_dir, snap->sandbox, all, k, e);
    free(all);
    return rc;
}

static int serve(server *sv, int lfd, int conn, store_err *e)
{
    struct uffd_msg msgs[64];
    uint64_t *retry = malloc(64 * 2 * sizeof *retry);
    size_t nretry = 0, capretry = 128;
    if (!retry) return store_errf(e, -ENOMEM, "out of memory");
    int rc = 0, gone = 0;
    while (!rc && !gone) {
        if (sv->rec_until > 0 && !sv->rec_saved && now_s() >= sv->rec_until) {
            store_err we;
            if (save_recording(sv, &we)) warn(sv->o, "working set not saved: %s", we.msg);
        }
        struct pollfd pf[3] = {{.fd = sv->uffd, .events = POLLIN}, {.fd = conn, .events = POLLIN},
                               {.fd = lfd, .events = POLLIN}};
        int tmo = nretry ? 1 : (sv->rec_until > 0 && !sv->rec_saved ? 100 : -1);
        int pr = poll(pf, 3, tmo);
        if (pr < 0) {
            if (errno == EINTR) continue;
            rc = store_errf(e, -errno, "poll: %s", strerror(errno));
            break;
        }
        if (pf[1].revents) {
            char junk[256];
            ssize_t n = recv(conn, junk, sizeof junk, MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) break;   /* the VM is gone */
        }
        if (pf[2].revents & POLLIN) {
            int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
            if (c >= 0) {
                close(c);
                sv->r->refused++;
                warn(sv->o, "refused a second connection: this server serves one VM");
            }
        }
        if (pf[0].revents & (POLLERR | POLLHUP)) break;
        if (pf[0].revents & POLLIN) {
            ssize_t n = read(sv->uffd, msgs, sizeof msgs);
            if (n < 0 && errno != EAGAIN && errno != EINTR) {
                rc = store_errf(e, -errno, "reading the userfaultfd: %s", strerror(errno));
                break;
            }
            for (ssize_t i = 0; n > 0 && !rc && i < n / (ssize_t)sizeof *msgs; i++) {
                struct uffd_msg *m = &msgs[i];
                if (m->event == UFFD_EVENT_PAGEFAULT) {
                    int r = handle_fault(sv, m->arg.pagefault.address, e);
                    if (r == -EAGAIN) {
                        if (nretry == capretry) {
                            uint64_t *nr = realloc(retry, capretry * 2 * sizeof *nr);
                            if (!nr) { rc = store_errf(e, -ENOMEM, "out of memory"); break; }
                            retry = nr;
                            capretry *= 2;
                        }
                        retry[nretry++] = m->arg.pagefault.address;
                    } else if (r == -ESRCH) {
                        gone = 1;
                    } else {
                        rc = r;
                    }
                } else if (m->event == UFFD_EVENT_REMOVE) {
                    mark_removed(sv, m->arg.remove.start, m->arg.remove.end);
                } else if (m->event == UFFD_EVENT_UNMAP) {
                    /* the range is gone: no fault will come from it */
                } else {
                    warn(sv->o, "ignored userfaultfd event %u", m->event);
                }
            }
        }
        /* Faults refused while a remove was pending: the remove is read by now, or will be
         * at the next poll. */
        size_t keep = 0;
        for (size_t i = 0; !rc && i < nretry; i++) {
            int r = handle_fault(sv, retry[i], e);
            if (r == -EAGAIN) retry[keep++] = retry[i];
            else if (r == -ESRCH) gone = 1;
            else rc = r;
        }
        nretry = rc ? 0 : keep;
    }
    free(retry);
    return rc;
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
    server sv = {.o = o, .r = r, .uffd = -1};
    pthread_mutex_init(&sv.rm_mu, NULL);
    int rc = restore_pages_open(o->store_dir, o->snapshot, "memory", o->cache_bytes, &sv.p, e);
    if (rc) return rc;
    if (o->on_open) o->on_open(o->arg, restore_pages_snapshot(sv.p));
    if (o->prefetch) {
        store_err we;
        int w = restore_wset_load(o->store_dir, o->snapshot, &sv.ws, &sv.nws, &we);
        if (w && w != -ENOENT) warn(o, "working set ignored: %s", we.msg);
    }
    int lfd = listen_on(o->socket_path, e);
    if (lfd < 0) {
        restore_pages_close(sv.p);
        free(sv.ws);
        return lfd;
    }
    if (o->on_listen) o->on_listen(o->arg);
    int conn = -1;
    restore_region *rg = NULL;
    size_t nrg = 0;
    double deadline = o->wait_ms > 0 ? now_s() + o->wait_ms / 1000.0 : 0;
    while (!rc) {
        if (deadline > 0) {
            /* A page server nobody connects to must not pin its snapshot for ever. */
            double left = deadline - now_s();
            struct pollfd pf = {.fd = lfd, .events = POLLIN};
            int pr = left > 0 ? poll(&pf, 1, (int)(left * 1000) + 1) : 0;
            if (pr < 0 && errno == EINTR) continue;
            if (pr < 0) {
                rc = store_errf(e, -errno, "poll on %s: %s", o->socket_path, strerror(errno));
                break;
            }
            if (pr == 0) {
                r->timed_out = 1;
                break;
            }
        }
        int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            rc = store_errf(e, -errno, "accept on %s: %s", o->socket_path, strerror(errno));
            break;
        }
        store_err he;
        int u = handshake(&sv, c, &rg, &nrg, &he);
        if (u >= 0) {
            conn = c;
            sv.uffd = u;
            break;
        }
        r->refused++;
        warn(o, "refused a connection: %s", he.msg);
        close(c);
    }
    pthread_t pf;
    int have_pf = 0;
    if (!rc && conn >= 0) {
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
        if (o->fault_around > 1 && (uint64_t)o->fault_around * STORE_PAGE > sv.maxps)
            sv.maxps = (uint64_t)o->fault_around * STORE_PAGE;    /* one buffer for a whole run */
        if (!rc && !(sv.buf = malloc(sv.maxps))) rc = store_errf(e, -ENOMEM, "out of memory");
        if (!rc && o->record_seconds > 0) {
            sv.seen = calloc(restore_pages_count(sv.p) / 8 + 1, 1);
            if (sv.seen) sv.rec_until = sv.t0 + o->record_seconds;
            /* the working set goes first in the next one: its pages are not recorded twice */
            for (size_t i = 0; sv.seen && i < sv.nws; i++)
                if (sv.ws[i] < restore_pages_count(sv.p)) sv.seen[sv.ws[i] / 8] |= (uint8_t)(1u << (sv.ws[i] % 8));
            else warn(o, "not recording the working set: out of memory");
        }
        if (!rc && sv.nws) {
            if (pthread_create(&pf, NULL, prefetch_main, &sv) == 0) have_pf = 1;
            else warn(o, "prefetch not started: %s", strerror(errno));
        }
    }
    if (!rc && conn >= 0) rc = serve(&sv, lfd, conn, e);
    sv.stop = 1;
    if (have_pf) pthread_join(pf, NULL);
    r->prefetched = sv.prefetched;
    if (sv.rec_until > 0 && !sv.rec_saved) {
        store_err we;
        if (save_recording(&sv, &we)) warn(o, "working set not saved: %s", we.msg);
    }
    r->serve_seconds = sv.t0 > 0 ? now_s() - sv.t0 : 0;
    restore_pages_get_stats(sv.p, &r->pages);
    for (size_t i = 0; sv.rg && i < sv.nrg; i++) free(sv.rg[i].removed);
    free(sv.rg);
    free(rg);
    free(sv.buf);
    free(sv.rec);
    free(sv.seen);
    free(sv.ws);
    if (sv.uffd >= 0) close(sv.uffd);
    if (conn >= 0) close(conn);
    close(lfd);
    if (unlink(o->socket_path) < 0 && errno != ENOENT && !rc)
        rc = store_errf(e, -errno, "%s: %s", o->socket_path, strerror(errno));
    restore_pages_close(sv.p);
    pthread_mutex_destroy(&sv.rm_mu);
    return rc;
}
