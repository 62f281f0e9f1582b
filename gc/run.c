/* gc_run: plan under the shared lock, retention (reclaims, drops) in short exclusive
 * sections, then the sweep (sweep.c). docs/gc.md is the specification. */
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/lease.h"
#include "gc/internal.h"

#define ACTIONS_PER_SECTION 16

void gc_logf(gc_log_fn fn, void *arg, const char *fmt, ...)
{
    if (!fn) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fn(arg, buf);
}

/* flock is not first come, first served: a gc that takes the lock again at once can keep
 * a waiting ingest out for several sections. A short pause lets the waiter in first. */
void gc_yield_lock(void)
{
    nanosleep(&(struct timespec){0, 20 * 1000000L}, NULL);
}

void gc_result_free(gc_result *r)
{
    for (size_t i = 0; i < r->nreclaimed_list; i++) free(r->reclaimed_list[i]);
    free(r->reclaimed_list);
    r->reclaimed_list = NULL;
    r->nreclaimed_list = 0;
}

typedef struct {
    char id[STORE_SNAPID_LEN];
    char sandbox[STORE_NAME_MAX + 1];
    store_drop_reason reason;
} drop;

typedef struct {
    char sandbox[STORE_NAME_MAX + 1];
    char source[STORE_SNAPID_LEN];   /* latest full snapshot */
    double idle_days;
    store_tier tier;
    int skipped;                     /* no longer eligible when its section ran */
} reclaim;

typedef struct {
    drop *drops;
    size_t ndrops, dcap;
    reclaim *reclaims;
    size_t nreclaims, rcap;
    uint64_t *packs;
    size_t npacks;
    uint32_t *refs;
} plan;

/* seen: the ids already planned (keys: id, which must outlive the map). */
static int add_drop(plan *p, gc_strmap *seen, const char *id, const char *sandbox, store_drop_reason reason)
{
    if (gc_strmap_get(seen, id) != GC_NONE) return 0;
    if (gc_strmap_put(seen, id, p->ndrops)) return -ENOMEM;
    if (p->ndrops == p->dcap) {
        p->dcap = p->dcap ? p->dcap * 2 : 64;
        drop *nd = realloc(p->drops, p->dcap * sizeof *nd);
        if (!nd) return -ENOMEM;
        p->drops = nd;
    }
    drop *d = &p->drops[p->ndrops++];
    snprintf(d->id, sizeof d->id, "%s", id);
    snprintf(d->sandbox, sizeof d->sandbox, "%s", sandbox);
    d->reason = reason;
    return 0;
}

static int make_plan(store_t *s, const gc_options *o, plan *p, gc_result *r, store_err *e)
{
    gc_state st;
    gc_sandbox *sb = NULL;
    size_t nsb = 0;
    int rc = gc_state_load(s, &st, e);
    if (!rc) rc = gc_view(&st, NULL, &sb, &nsb, e);
    /* Lookups for a fleet of any size: snapshot by id, a sandbox's snapshots (a chain in id
     * order), pins, planned drops. Keys point into st and sb, which outlive the maps. */
    gc_strmap by_id = {0}, by_sb = {0}, pins = {0}, planned = {0};
    size_t *head = NULL, *next = NULL, *tail = NULL;
    if (!rc) {
        head = malloc((nsb ? nsb : 1) * sizeof *head);
        tail = malloc((nsb ? nsb : 1) * sizeof *tail);
        next = malloc((st.nsnaps ? st.nsnaps : 1) * sizeof *next);
        if (!head || !tail || !next) rc = -ENOMEM;
        for (size_t j = 0; !rc && j < nsb; j++) {
            head[j] = tail[j] = GC_NONE;
            rc = gc_strmap_put(&by_sb, sb[j].sandbox, j);
        }
        for (size_t k = 0; !rc && k < st.nsnaps; k++) {
            next[k] = GC_NONE;
            if ((rc = gc_strmap_put(&by_id, st.snaps[k].r.id, k))) break;
            size_t j = gc_strmap_get(&by_sb, st.snaps[k].r.sandbox);
            if (j == GC_NONE) continue;
            if (tail[j] == GC_NONE) head[j] = k;
            else next[tail[j]] = k;
            tail[j] = k;
        }
        for (size_t i = 0; !rc && i < st.nevents; i++) {
            const store_event *v = &st.events[i];
            if (v->kind == STORE_EV_PIN || v->kind == STORE_EV_UNPIN)
                rc = gc_strmap_put(&pins, v->snapshot, v->kind == STORE_EV_PIN);
        }
        if (rc) store_errf(e, rc, "out of memory");
    }
    /* 1. Drops logged by an interrupted gc whose manifest is still there. */
    for (size_t i = 0; !rc && i < st.nevents; i++) {
        const store_event *v = &st.events[i];
        if (v->kind != STORE_EV_DROP) continue;
        size_t k = gc_strmap_get(&by_id, v->snapshot);
        if (k != GC_NONE) rc = add_drop(p, &planned, st.snaps[k].r.id, st.snaps[k].r.sandbox, STORE_DROP_RESUMED);
    }
    for (size_t j = 0; !rc && j < nsb; j++) {
        gc_sandbox *x = &sb[j];
        int deleted = x->state == GC_DELETED;
        int reclaim_it = gc_idle_past_window(x, o->now_ms);
        if (reclaim_it && x->latest_has_disk && !x->latest_indexed) {
            /* We cannot tell its important files from the rest: keep it, say so. */
            gc_logf(o->log, o->log_arg, "not reclaiming %s: its latest disk has no file index "
                    "(the image could not be read); it stays until an operator decides", x->sandbox);
            r->not_reclaimed++;
            reclaim_it = 0;
        }
        if (reclaim_it) {
            if (p->nreclaims == p->rcap) {
                p->rcap = p->rcap ? p->rcap * 2 : 16;
                reclaim *nr = realloc(p->reclaims, p->rcap * sizeof *nr);
                if (!nr) {
                    rc = store_errf(e, -ENOMEM, "out of memory");
                    break;
                }
                p->reclaims = nr;
            }
            reclaim *rcl = &p->reclaims[p->nreclaims++];
            memset(rcl, 0, sizeof *rcl);
            snprintf(rcl->sandbox, sizeof rcl->sandbox, "%s", x->sandbox);
            snprintf(rcl->source, sizeof rcl->source, "%s", x->latest);
            rcl->tier = x->tier;
            rcl->idle_days = (double)(o->now_ms - x->last_activity_ms) / 86400000.0;
        }
        /* 2-4. What goes: a deleted sandbox's snapshots up to the delete; after a reclaim
         * every full snapshot; else everything but the latest. Pins hold (not deletes). */
        for (size_t k = head[j]; k != GC_NONE && !rc; k = next[k]) {
            const gc_snap *g = &st.snaps[k];
            const store_snaprec *sr = &g->r;
            int files_only = sr->kind == STORE_KIND_FILES;
            /* Up to the delete in commit order (a files-only snapshot stands for its
             * source); by time only for deletes logged before they named what they saw. */
            const char *pos = files_only && sr->parent[0] ? sr->parent : sr->id;
            int before_delete = x->delete_after[0] ? strcmp(pos, x->delete_after) <= 0 : g->eff_ms <= x->delete_ms;
            if (deleted && before_delete) rc = add_drop(p, &planned, sr->id, sr->sandbox, STORE_DROP_DELETED);
            else if (gc_strmap_get(&pins, sr->id) == 1) continue;
            else if (reclaim_it && !files_only) rc = add_drop(p, &planned, sr->id, sr->sandbox, STORE_DROP_RECLAIMED);
            else if (!reclaim_it && strcmp(sr->id, x->latest))
                rc = add_drop(p, &planned, sr->id, sr->sandbox, STORE_DROP_SUPERSEDED);
            else if (reclaim_it && files_only) rc = add_drop(p, &planned, sr->id, sr->sandbox, STORE_DROP_SUPERSEDED);
        }
        if (rc == -ENOMEM) store_errf(e, rc, "out of memory");
    }
    gc_strmap_free(&by_id);
    gc_strmap_free(&by_sb);
    gc_strmap_free(&pins);
    gc_strmap_free(&planned);
    free(head);
    free(tail);
    free(next);
    free(sb);
    gc_state_free(&st);
    if (!rc) rc = store_pack_list(s, &p->packs, &p->npacks, e);
    if (!rc && !(p->refs = calloc(p->npacks ? p->npacks : 1, sizeof *p->refs))) rc = store_errf(e, -ENOMEM, "out of memory");
    if (!rc) rc = store_pack_refs(s, p->packs, p->npacks, p->refs, e);
    return rc;
}

static int log_drop_event(store_t *s, const drop *d, int64_t now, store_err *e)
{
    store_event ev = {.kind = STORE_EV_DROP, .at_ms = now, .reason = d->reason};
    snprintf(ev.snapshot, sizeof ev.snapshot, "%s", d->id);
    snprintf(ev.sandbox, sizeof ev.sandbox, "%s", d->sandbox);
    return store_event_log(s, &ev, e);
}

/* Is the sandbox still what the plan saw (same latest snapshot, still idle past its
 * window)? A wake or a touch between planning and now must win over the reclaim.
 * 1: reclaim it; 2: an interrupted run already committed its files-only snapshot (only the
 * drops remain); 0: leave it. */
static int still_eligible(const gc_sandbox *v, size_t n, const reclaim *rcl, int64_t now)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i].sandbox, rcl->sandbox)) continue;
        if (v[i].latest_files_only && !strcmp(v[i].latest_parent, rcl->source)) return 2;
        return !strcmp(v[i].latest, rcl->source) && gc_idle_past_window(&v[i], now);
    }
    return 0;
}

/* Retention changes, ACTIONS_PER_SECTION at a time under the exclusive lock. A reclaim's
 * files-only snapshot is committed before the drops of that sandbox run; each section
 * first re-checks its reclaims against the store as it is now. */
static int apply_plan(const char *dir, const gc_options *o, plan *p, int deleter, gc_result *r, store_err *e)
{
    size_t ri = 0, di = 0;
    int rc = 0;
    while (!rc && (ri < p->nreclaims || di < p->ndrops)) {
        store_t *s = NULL;
        if ((rc = store_open(dir, STORE_WRITE, &s, e))) break;
        gc_sandbox *view = NULL;
        size_t nview = 0;
        if (ri < p->nreclaims) rc = gc_sandboxes(s, NULL, &view, &nview, e);
        for (int n = 0; !rc && n < ACTIONS_PER_SECTION && (ri < p->nreclaims || di < p->ndrops); n++) {
            if (ri < p->nreclaims) {
                reclaim *rcl = &p->reclaims[ri++];
                int elig = still_eligible(view, nview, rcl, o->now_ms);
                if (elig == 2) {
                    gc_logf(o->log, o->log_arg, "finishing the reclaim of %s that an interrupted gc began",
                            rcl->sandbox);
                    continue;
                }
                if (!elig) {
                    rcl->skipped = 1;
                    gc_logf(o->log, o->log_arg, "not reclaiming %s: it changed since gc planned (new "
                            "snapshot or activity)", rcl->sandbox);
                    continue;
                }
                store_snapshot *src = NULL, *fo = NULL;
                store_writer *w = NULL;
                rc = store_snapshot_load(s, rcl->source, &src, e);
                if (!rc) rc = gc_files_only(s, src, &fo, e);
                if (!rc) rc = store_writer_open(s, &w, e);
                /* The files-only snapshot names its source's chunks without storing them:
                 * on S3 only while they are sure to stay (store_writer_may_reuse). */
                int reuse = rc ? 0 : store_writer_may_reuse(w, rcl->source, deleter, e);
                if (!rc && reuse < 0) rc = reuse;
                if (!rc && !reuse) {
                    store_writer_abort(w);
                    rcl->skipped = 1;
                    gc_logf(o->log, o->log_arg, "not reclaiming %s this run: %s", rcl->sandbox,
                            deleter ? "its snapshot is no longer in the bucket"
                                    : "another node's gc has fossils pending deletion");
                    store_snapshot_free(src);
                    store_snapshot_free(fo);
                    continue;
                }
                if (!rc) rc = store_writer_commit(w, fo, e);
                if (!rc) {
                    gc_logf(o->log, o->log_arg, "reclaimed %s (tier %s, idle %.1f days): files-only "
                            "snapshot %s keeps %zu entries, %llu bytes of files", rcl->sandbox,
                            store_tier_name(rcl->tier),
                            rcl->idle_days, fo->id, fo->files ? fo->files->n : 0,
                            (unsigned long long)fo->logical_bytes);
                    r->reclaimed++;
                    char **nl = realloc(r->reclaimed_list, (r->nreclaimed_list + 1) * sizeof *nl);
                    if (nl) {
                        r->reclaimed_list = nl;
                        nl[r->nreclaimed_list++] = strdup(rcl->sandbox);
                    }
                }
                store_snapshot_free(src);
                store_snapshot_free(fo);
                continue;
            }
            drop *d = &p->drops[di++];
            int skip = 0;
            for (size_t k = 0; k < p->nreclaims; k++)
                if (p->reclaims[k].skipped && !strcmp(p->reclaims[k].sandbox, d->sandbox) &&
                    d->reason == STORE_DROP_RECLAIMED)
                    skip = 1;
            if (skip) continue;
            store_lease_guard g;
            rc = store_lease_busy(s, d->id, &g, e);
            if (rc == 1) {
                rc = 0;
                r->leased++;
                gc_logf(o->log, o->log_arg, "kept snapshot %s of %s: %s (a lazy wake); the next gc retries", d->id,
                        d->sandbox, e->msg);
                continue;
            }
            if (!rc) rc = log_drop_event(s, d, store_now_ms(), e);
            /* Too slow since the drop intent: a reader may no longer see it (store/lease.h).
             * The drop event stays: the next run resumes the drop. */
            int stale = !rc && store_lease_guard_fresh(&g, e);
            if (stale) gc_logf(o->log, o->log_arg, "%s", e->msg);
            else if (!rc) rc = store_snapshot_drop(s, d->id, e);
            store_err le;
            int lr = store_lease_release(s, &g, !stale && (!rc || rc == -ENOENT), &le);
            if (stale) continue;
            if (rc == -ENOENT) rc = 0;      /* already gone: an earlier run finished it */
            else if (!rc) {
                r->dropped_snapshots++;
                gc_logf(o->log, o->log_arg, "dropped snapshot %s of %s (%s)", d->id, d->sandbox,
                        store_drop_reason_name(d->reason));
            }
            if (lr && !rc) rc = store_errf(e, lr, "snapshot %s: %s", d->id, le.msg);
            else if (lr) gc_logf(o->log, o->log_arg, "snapshot %s: %s", d->id, le.msg);
        }
        free(view);
        store_close(s);
        gc_yield_lock();
    }
    return rc;
}

/* One gc at a time per store, for the whole run: gc releases the store's lock between
 * sections and while it copies, and a second gc would take the first one's fresh,
 * not-yet-indexed packs for leftovers of a dead run and delete them. */
static int gc_lock(const char *dir, store_err *e)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/gc.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return store_errf(e, -errno, "%s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int err = errno;
        close(fd);
        return store_errf(e, err == EWOULDBLOCK ? -EBUSY : -err, "%s",
                          err == EWOULDBLOCK ? "another cairn gc is running on this store; this one did nothing"
                                             : strerror(err));
    }
    return fd;      /* held until the process closes it */
}

int gc_run(const char *dir, const gc_options *o, gc_result *r, store_err *e)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    memset(r, 0, sizeof *r);
    int lockfd = gc_lock(dir, e);
    if (lockfd < 0) return lockfd;
    plan p = {0};
    store_t *s = NULL;
    int rc = store_open(dir, STORE_READ, &s, e);
    /* S3: one node deletes at a time (the lease); without it a run does retention only,
     * which is safe on every node (docs/s3.md, "gc across nodes"). */
    int remote = !rc && store_is_remote(s), leased = 0;
    store_gc_lease lease = {0}, other = {0};
    store_t *ls = NULL;             /* for the lease: no lock (sections open the store for writing) */
    if (remote && !o->dry_run) rc = store_open(dir, STORE_SCAN, &ls, e);
    if (!rc && remote && !o->dry_run) {
        store_err le;
        int lr = store_gc_lease_take(ls, &lease, &other, &le);
        if (!lr) {
            leased = 1;
            if (other.node)
                gc_logf(o->log, o->log_arg, "took over the gc lease of node %06x (expired at %lld)", other.node,
                        (long long)other.expires_ms);
        } else if (lr == -EBUSY) {
            r->sweep_skipped = 1;
            snprintf(r->lease_holder, sizeof r->lease_holder, "%06x", other.node);
            r->lease_until_ms = other.expires_ms;
            gc_logf(o->log, o->log_arg, "%s: retention only, no pack deleted by this run", le.msg);
        } else {
            rc = store_errf(e, lr, "%s", le.msg);
        }
    }
    if (!rc) {
        store_stats before;
        rc = store_get_stats(s, &before, e);
        r->bytes_before = before.stored_bytes + before.manifest_bytes;
        if (!rc) rc = make_plan(s, o, &p, r, e);
    }
    store_close(s);
    s = NULL;
    gc_sweep_opts so = {.dry_run = o->dry_run, .log = o->log, .log_arg = o->log_arg};
    const char **skip = NULL;
    if (!rc && o->dry_run) {
        for (size_t i = 0; i < p.nreclaims; i++)
            gc_logf(o->log, o->log_arg, "would reclaim %s (tier %s, idle %.1f days)", p.reclaims[i].sandbox,
                    store_tier_name(p.reclaims[i].tier), p.reclaims[i].idle_days);
        for (size_t i = 0; i < p.ndrops; i++)
            gc_logf(o->log, o->log_arg, "would drop snapshot %s of %s (%s)", p.drops[i].id, p.drops[i].sandbox,
                    store_drop_reason_name(p.drops[i].reason));
        r->reclaimed = p.nreclaims;
        r->dropped_snapshots = p.ndrops;
        for (size_t i = 0; i < p.nreclaims; i++) {
            char **nl = realloc(r->reclaimed_list, (r->nreclaimed_list + 1) * sizeof *nl);
            if (nl) {
                r->reclaimed_list = nl;
                nl[r->nreclaimed_list++] = strdup(p.reclaims[i].sandbox);
            }
        }
        /* What the sweep would find: the drops' manifests gone, the files-only pages kept. */
        skip = calloc(p.ndrops + 1, sizeof *skip);
        for (size_t i = 0; skip && i < p.ndrops; i++) skip[i] = p.drops[i].id;
        so.skip_manifests = skip;
        so.nskip = p.ndrops;
        so.extra_live = store_idset_new();
        if (p.nreclaims && !(rc = store_open(dir, STORE_SCAN, &s, e))) {
            for (size_t i = 0; !rc && i < p.nreclaims; i++) {
                store_snapshot *src = NULL, *fo = NULL;
                rc = store_snapshot_load(s, p.reclaims[i].source, &src, e);
                if (!rc) rc = gc_files_only(s, src, &fo, e);
                for (int b = 0; !rc && b < fo->nblobs; b++)
                    for (uint64_t k = 0; !rc && k < fo->blobs[b].npages; k++)
                        if (store_idset_add(so.extra_live, &fo->blobs[b].ids[k]))
                            rc = store_errf(e, -ENOMEM, "out of memory");
                store_snapshot_free(src);
                store_snapshot_free(fo);
            }
            store_close(s);
        }
    } else if (!rc) {
        rc = apply_plan(dir, o, &p, leased, r, e);
    }
    so.packs = p.packs;
    so.npacks = p.npacks;
    so.refs = p.refs;
    if (!rc && remote && !o->dry_run) {
        if (leased) rc = gc_sweep_remote(dir, &lease, &so, r, e);
    } else if (!rc) {
        rc = gc_sweep(dir, &so, r, e);
    }
    if (leased) {
        store_err le;
        /* An unreleased lease only delays the next gc until it expires. */
        if (store_gc_lease_release(ls, &lease, &le)) gc_logf(o->log, o->log_arg, "could not release the gc lease: %s", le.msg);
    }
    store_close(ls);
    store_idset_free(so.extra_live);
    free(skip);
    if (!rc && !o->dry_run && !(rc = store_open(dir, STORE_READ, &s, e))) {
        store_stats after;
        rc = store_get_stats(s, &after, e);
        r->bytes_after = after.stored_bytes + after.manifest_bytes;
        store_close(s);
        /* On S3 other nodes write meanwhile: the sweep counted what it deleted itself. */
        if (!remote) r->freed_bytes = r->bytes_before > r->bytes_after ? r->bytes_before - r->bytes_after : 0;
    }
    free(p.drops);
    free(p.reclaims);
    free(p.packs);
    free(p.refs);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    r->seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    close(lockfd);
    return rc;
}
