/* The route functions (api/r_*.c) and what they share. Each runs on a worker thread (or
 * inline for /healthz) and leaves its result in the api_req. */
#ifndef CAIRN_API_ROUTES_H
#define CAIRN_API_ROUTES_H

#include <stdio.h>

#include "api/internal.h"
#include "gc/gc.h"

void r_healthz(api_req *r);
void r_metrics(api_req *r);
void r_snapshot_create(api_req *r);
void r_snapshot_get(api_req *r);
void r_snapshot_restore(api_req *r);
void r_snapshot_wake(api_req *r);
void r_snapshot_pin(api_req *r);
void r_snapshot_unpin(api_req *r);
void r_snapshot_files(api_req *r);
void r_snapshot_content(api_req *r);
void r_snapshot_archive(api_req *r);
void r_sandboxes(api_req *r);
void r_sandbox_get(api_req *r);
void r_sandbox_touch(api_req *r);
void r_sandbox_rebuild(api_req *r);
void r_sandbox_delete(api_req *r);
void r_sandbox_share(api_req *r);
void r_sandbox_shares(api_req *r);
void r_sandbox_unshare(api_req *r);
void r_tenant_tier(api_req *r);
void r_shared_files(api_req *r);
void r_shared_content(api_req *r);
void r_gc(api_req *r);
void r_audit(api_req *r);
void r_console(api_req *r);            /* api/console.c */
void r_console_redirect(api_req *r);

/* The {id} snapshot if the caller may see it; NULL after api_fail (404 for both "none"
 * and "another tenant's"). */
store_snapshot *api_load_snapshot(api_req *r, store_t *s);
/* gc_sandboxes (tenant NULL: all), served from a copy the server keeps until events.log or
 * the set of snapshots changes (server.c). *out is malloc'd. */
int api_sandboxes(api_req *r, store_t *s, const char *tenant, gc_sandbox **out, size_t *n, store_err *e);
/* Records activity (restore, rebuild) of sandbox before the work it stands for; -1 after
 * api_fail 500 activity_failed (do nothing then). */
int api_activity(api_req *r, store_t *s, store_event_kind kind, const char *sandbox);
/* The lifecycle record of a sandbox the caller may see; -1 after api_fail. */
int api_find_sandbox(api_req *r, store_t *s, const char *name, gc_sandbox *out);

#endif
