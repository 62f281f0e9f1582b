/* The lifecycle's JSON and time edges, shared by the CLI's --json and the API: one
 * encoder per object, so both print the same keys. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gc/gc.h"
#include "store/toolbox.h"

/* Unix seconds, or RFC 3339 (store_rfc3339_parse). */
int gc_parse_time(const char *s, int64_t *ms)
{
    if (*s && strspn(s, "0123456789") == strlen(s)) {
        if (strlen(s) > 12) return -1;                     /* past 9999-12-31 for sure */
        long long v = strtoll(s, NULL, 10);
        if (v > STORE_TIME_MAX_S) return -1;
        *ms = (int64_t)v * 1000;
        return 0;
    }
    return store_rfc3339_parse(s, ms);
}

json_t *gc_sandbox_json(const gc_sandbox *v)
{
    char when[32];
    store_rfc3339(v->last_activity_ms, when);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s}", "sandbox", v->sandbox, "tenant", v->tenant,
                     "tier", store_tier_name(v->tier), "state", gc_state_name(v->state), "last_activity", when, "last_activity_ms",
                     (json_int_t)v->last_activity_ms, "bytes", (json_int_t)v->bytes, "snapshots",
                     (json_int_t)v->snapshots, "latest", v->latest, "template", v->template_name);
}

json_t *gc_result_json(const gc_result *r, int ok, int dry_run)
{
    json_t *list = json_array();
    for (size_t i = 0; list && i < r->nreclaimed_list; i++)
        json_array_append_new(list, json_string(r->reclaimed_list[i]));
    return json_pack("{s:b, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:o, s:I, s:I, s:I, s:b, s:s}",
                     "ok", ok, "dry_run", dry_run,
                     "reclaimed", (json_int_t)r->reclaimed, "dropped_snapshots", (json_int_t)r->dropped_snapshots,
                     "not_reclaimed", (json_int_t)r->not_reclaimed, "packs_deleted", (json_int_t)r->packs_deleted,
                     "packs_rewritten", (json_int_t)r->packs_rewritten, "chunks_removed",
                     (json_int_t)r->chunks_removed, "freed_bytes", (json_int_t)r->freed_bytes,
                     "stored_bytes_after", (json_int_t)r->bytes_after, "seconds", r->seconds,
                     "reclaimed_sandboxes", list, "kept_leased", (json_int_t)r->leased, "fossils_recorded",
                     (json_int_t)r->fossils_recorded, "fossils_resurrected", (json_int_t)r->fossils_resurrected,
                     "sweep_skipped", r->sweep_skipped, "lease_holder", r->lease_holder);
}
