/* Internals shared by gc's files. */
#ifndef CAIRN_GC_INTERNAL_H
#define CAIRN_GC_INTERNAL_H

#include "gc/gc.h"

typedef struct {
    char id[STORE_SNAPID_LEN];
    char sandbox[STORE_NAME_MAX + 1];
    char tenant[STORE_NAME_MAX + 1];
    char tier[8];
    char template_name[STORE_NAME_MAX + 1];
    int64_t time_ms;
    int64_t parent_ms;              /* time of its parent (ids begin with their time) */
    int64_t eff_ms;                 /* its time for lifecycle rules: a files-only snapshot
                                       stands for the full one it came from (parent_ms) */
    char parent[STORE_SNAPID_LEN];
    uint64_t new_bytes;
    int files_only, indexed, has_disk;
} gc_snap;

typedef struct {
    char kind[12];                  /* touch tier delete pin unpin restore rebuild drop */
    char name[STORE_NAME_MAX + 1];  /* sandbox, or tenant for tier */
    char snapshot[STORE_SNAPID_LEN];
    char value[16];                 /* tier, or a drop's reason */
    char after[STORE_SNAPID_LEN];   /* delete: the sandbox's newest snapshot when it was
                                       deleted ("" in logs older than this field) */
    int64_t at_ms;
} gc_ev;

typedef struct {
    gc_snap *snaps;                 /* id (time) order */
    size_t nsnaps, scap;
    gc_ev *events;                  /* log order */
    size_t nevents, ecap;
} gc_state;

STORE_MUST_USE int gc_state_load(store_t *s, gc_state *st, store_err *e);
/* The two parsers behind gc_state_load (arg is the gc_state): one index record of a
 * snapshot, one line of events.log. Exposed for the fuzzer (tests/fuzz/fuzz_events.c). */
STORE_MUST_USE int gc_state_add_snapshot(void *arg, const char *id, const char *json);
STORE_MUST_USE int gc_state_add_event(void *arg, const char *line);
void gc_state_free(gc_state *st);
STORE_MUST_USE int gc_view(const gc_state *st, const char *tenant, gc_sandbox **out, size_t *n, store_err *e);
STORE_MUST_USE int gc_pinned(const gc_state *st, const char *id);

/* reclaim.c: the files-only snapshot of src (not committed): its important entries and
 * the disk pages they use. */
STORE_MUST_USE int gc_files_only(store_t *s, const store_snapshot *src, store_snapshot **out, store_err *e);

/* sweep.c */
typedef struct {
    int dry_run;
    const uint64_t *packs;          /* the packs that existed when gc planned */
    size_t npacks;
    const uint32_t *refs;           /* per pack: index entries that pointed into it */
    store_idset *extra_live;        /* dry run: ids the planned files-only snapshots keep */
    const char *const *skip_manifests; /* dry run: manifests planned to be dropped */
    size_t nskip;
    gc_log_fn log;
    void *log_arg;
} gc_sweep_opts;
STORE_MUST_USE int gc_sweep(const char *dir, const gc_sweep_opts *o, gc_result *r, store_err *e);

void gc_yield_lock(void);
void gc_logf(gc_log_fn fn, void *arg, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
