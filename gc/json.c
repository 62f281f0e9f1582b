/* The lifecycle's JSON and time edges, shared by the CLI's --json and the API: one
 * encoder per object, so both print the same keys. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gc/gc.h"
#include "store/toolbox.h"

/* n decimal digits at *p into *v; advances *p. */
static int digits(const char **p, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (**p < '0' || **p > '9') return -1;
        *v = *v * 10 + (**p - '0');
    }
    return 0;
}

/* Strict: a date that does not exist (2030-02-30), a field out of range, or a number that
 * does not fit is refused, never normalised or wrapped into another time. Years 1970-9999. */
int gc_parse_time(const char *s, int64_t *ms)
{
    static const int64_t max_seconds = 253402300799;      /* 9999-12-31T23:59:59Z */
    if (*s && strspn(s, "0123456789") == strlen(s)) {
        if (strlen(s) > 12) return -1;                     /* past max_seconds for sure */
        long long v = strtoll(s, NULL, 10);
        if (v > max_seconds) return -1;
        *ms = (int64_t)v * 1000;
        return 0;
    }
    const char *p = s;
    int Y, M, D, h, m, sec;
    if (digits(&p, 4, &Y) || *p++ != '-' || digits(&p, 2, &M) || *p++ != '-' || digits(&p, 2, &D) ||
        (*p != 'T' && *p != 't') || (p++, digits(&p, 2, &h)) || *p++ != ':' || digits(&p, 2, &m) ||
        *p++ != ':' || digits(&p, 2, &sec))
        return -1;
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (Y % 4 == 0 && Y % 100 != 0) || Y % 400 == 0;
    if (Y < 1970 || M < 1 || M > 12 || D < 1 || D > mdays[M - 1] + (M == 2 && leap) || h > 23 ||
        m > 59 || sec > 60)
        return -1;
    int64_t frac_ms = 0;
    if (*p == '.') {
        int nd = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, nd++)
            if (nd < 3) frac_ms = frac_ms * 10 + (*p - '0');
        if (!nd) return -1;
        for (; nd < 3; nd++) frac_ms *= 10;
    }
    int64_t off = 0;
    if (*p == 'Z' || *p == 'z') p++;
    else if (*p == '+' || *p == '-') {
        int sign = *p++ == '+' ? 1 : -1, oh, om;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) || oh > 23 || om > 59) return -1;
        off = (int64_t)(oh * 60 + om) * 60 * sign;
    } else return -1;
    if (*p) return -1;
    struct tm tm = {.tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D, .tm_hour = h, .tm_min = m,
                    .tm_sec = sec};
    int64_t t = (int64_t)timegm(&tm) - off;
    if (t < 0 || t > max_seconds) return -1;
    *ms = t * 1000 + frac_ms;
    return 0;
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
