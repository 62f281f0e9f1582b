/* events.log: the one encoder and the one parser of its lines (format in store/events.h).
 * The bytes go through store/audit.c's append-only log (single write, fsync). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/events.h"
#include "store/internal.h"

static const char *const kind_names[] = {
    [STORE_EV_TOUCH] = "touch",     [STORE_EV_TIER] = "tier",       [STORE_EV_DELETE] = "delete",
    [STORE_EV_PIN] = "pin",         [STORE_EV_UNPIN] = "unpin",     [STORE_EV_RESTORE] = "restore",
    [STORE_EV_REBUILD] = "rebuild", [STORE_EV_DROP] = "drop",
};
static const char *const reason_names[] = {
    [STORE_DROP_DELETED] = "deleted", [STORE_DROP_SUPERSEDED] = "superseded",
    [STORE_DROP_RECLAIMED] = "reclaimed", [STORE_DROP_RESUMED] = "resumed",
};
#define NKINDS (sizeof kind_names / sizeof *kind_names)
#define NREASONS (sizeof reason_names / sizeof *reason_names)

const char *store_event_kind_name(store_event_kind k)
{
    return (unsigned)k < NKINDS && kind_names[k] ? kind_names[k] : "?";
}

int store_event_kind_parse(const char *name, store_event_kind *out)
{
    for (unsigned i = 1; name && i < NKINDS; i++)
        if (!strcmp(name, kind_names[i])) {
            *out = (store_event_kind)i;
            return 0;
        }
    return -EINVAL;
}

const char *store_drop_reason_name(store_drop_reason r)
{
    return (unsigned)r < NREASONS && reason_names[r] ? reason_names[r] : "?";
}

int store_drop_reason_parse(const char *name, store_drop_reason *out)
{
    for (unsigned i = 1; name && i < NREASONS; i++)
        if (!strcmp(name, reason_names[i])) {
            *out = (store_drop_reason)i;
            return 0;
        }
    return -EINVAL;
}

/* Which fields a kind carries. */
enum { F_SANDBOX = 1, F_TENANT = 2, F_SNAPSHOT = 4, F_TIER = 8, F_REASON = 16 };

static unsigned fields_of(store_event_kind k)
{
    switch (k) {
    case STORE_EV_TOUCH: case STORE_EV_DELETE: case STORE_EV_RESTORE: case STORE_EV_REBUILD:
        return F_SANDBOX;
    case STORE_EV_TIER: return F_TENANT | F_TIER;
    case STORE_EV_PIN: case STORE_EV_UNPIN: return F_SNAPSHOT | F_SANDBOX;
    case STORE_EV_DROP: return F_SNAPSHOT | F_SANDBOX | F_REASON;
    }
    return 0;
}

int store_event_encode(const store_event *ev, char **line, store_err *e)
{
    *line = NULL;
    unsigned f = fields_of(ev->kind);
    if (!f) return store_errf(e, -EINVAL, "event: unknown kind %d", (int)ev->kind);
    if ((f & F_SANDBOX) && store_name_valid(ev->sandbox))
        return store_errf(e, -EINVAL, "event %s: '%s' is not a sandbox name",
                          store_event_kind_name(ev->kind), ev->sandbox);
    if ((f & F_TENANT) && store_name_valid(ev->tenant))
        return store_errf(e, -EINVAL, "event %s: '%s' is not a tenant name",
                          store_event_kind_name(ev->kind), ev->tenant);
    if ((f & F_SNAPSHOT) && store_snapid_valid(ev->snapshot))
        return store_errf(e, -EINVAL, "event %s: '%s' is not a snapshot id",
                          store_event_kind_name(ev->kind), ev->snapshot);
    if (ev->kind == STORE_EV_DELETE && ev->after[0] && store_snapid_valid(ev->after))
        return store_errf(e, -EINVAL, "event delete: '%s' is not a snapshot id", ev->after);
    if ((f & F_TIER) && ev->tier != STORE_TIER_FREE && ev->tier != STORE_TIER_PRO)
        return store_errf(e, -EINVAL, "event tier: a tier is free or pro");
    if ((f & F_REASON) && !strcmp(store_drop_reason_name(ev->reason), "?"))
        return store_errf(e, -EINVAL, "event drop: unknown reason %d", (int)ev->reason);
    json_t *j = json_pack("{s:s, s:I}", "event", store_event_kind_name(ev->kind), "at",
                          (json_int_t)ev->at_ms);
    int bad = !j;
    if (!bad && (f & F_SNAPSHOT)) bad |= json_object_set_new(j, "snapshot", json_string(ev->snapshot));
    if (!bad && (f & F_SANDBOX)) bad |= json_object_set_new(j, "sandbox", json_string(ev->sandbox));
    if (!bad && ev->kind == STORE_EV_DELETE && ev->after[0])
        bad |= json_object_set_new(j, "after", json_string(ev->after));
    if (!bad && (f & F_TENANT)) bad |= json_object_set_new(j, "tenant", json_string(ev->tenant));
    if (!bad && (f & F_TIER))
        bad |= json_object_set_new(j, "tier", json_string(store_tier_name(ev->tier)));
    if (!bad && (f & F_REASON))
        bad |= json_object_set_new(j, "reason", json_string(store_drop_reason_name(ev->reason)));
    if (!bad) *line = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return *line ? 0 : store_errf(e, -ENOMEM, "out of memory");
}

int store_event_parse(const char *line, store_event *ev, store_err *e)
{
    memset(ev, 0, sizeof *ev);
    json_error_t jerr;
    json_t *j = json_loads(line, 0, &jerr);
    if (!j) return store_errf(e, -EBADMSG, "not JSON (%s)", jerr.text);
    const char *kind = json_string_value(json_object_get(j, "event"));
    json_t *at = json_object_get(j, "at");
    char word[32] = "";
    int rc = 0;
    if (store_event_kind_parse(kind, &ev->kind))
        rc = store_errf(e, -EBADMSG, "unknown event '%s'", kind ? kind : "(none)");
    else if (!json_is_integer(at))
        rc = store_errf(e, -EBADMSG, "event %s without a time", kind);
    unsigned f = rc ? 0 : fields_of(ev->kind);
    if (!rc) ev->at_ms = json_integer_value(at);
    if (!rc && (f & F_SANDBOX) && (util_json_str(ev->sandbox, sizeof ev->sandbox, json_object_get(j, "sandbox")) ||
                                   store_name_valid(ev->sandbox)))
        rc = store_errf(e, -EBADMSG, "event %s without a valid sandbox", kind);
    if (!rc && (f & F_TENANT) && (util_json_str(ev->tenant, sizeof ev->tenant, json_object_get(j, "tenant")) ||
                                  store_name_valid(ev->tenant)))
        rc = store_errf(e, -EBADMSG, "event %s without a valid tenant", kind);
    if (!rc && (f & F_SNAPSHOT) && (util_json_str(ev->snapshot, sizeof ev->snapshot, json_object_get(j, "snapshot")) ||
                                    store_snapid_valid(ev->snapshot)))
        rc = store_errf(e, -EBADMSG, "event %s without a valid snapshot id", kind);
    json_t *after = json_object_get(j, "after");
    if (!rc && ev->kind == STORE_EV_DELETE && after &&
        (util_json_str(ev->after, sizeof ev->after, json_object_get(j, "after")) || store_snapid_valid(ev->after)))
        rc = store_errf(e, -EBADMSG, "event delete: 'after' is not a snapshot id");
    if (!rc && (f & F_TIER) && (util_json_str(word, sizeof word, json_object_get(j, "tier")) ||
                                store_tier_parse(word, &ev->tier) || ev->tier == STORE_TIER_NONE))
        rc = store_errf(e, -EBADMSG, "event tier: unknown tier '%s'", word);
    if (!rc && (f & F_REASON) && (util_json_str(word, sizeof word, json_object_get(j, "reason")) ||
                                  store_drop_reason_parse(word, &ev->reason)))
        rc = store_errf(e, -EBADMSG, "event drop: unknown reason '%s'", word);
    json_decref(j);
    return rc;
}

int store_event_log(store_t *s, const store_event *ev, store_err *e)
{
    char *line;
    int rc = store_event_encode(ev, &line, e);
    if (!rc) rc = events_append_line(s, line, e);
    free(line);
    return rc;
}

typedef struct {
    store_event_fn fn;
    void *arg;
    size_t lineno;
    size_t torn;            /* line number of a line that was not JSON, if it is the last */
    char torn_why[sizeof(store_err)];
    int rc, stopped;
    store_err *e;
} walk;

static int each_line(void *arg, const char *line)
{
    walk *w = arg;
    w->lineno++;
    if (w->torn) {   /* a line came after the one that was not JSON: not a torn append */
        w->rc = store_errf(w->e, -EBADMSG, "events.log line %zu: %s (damaged)", w->torn,
                           w->torn_why);
        return 1;
    }
    store_event ev;
    store_err pe;
    int rc = store_event_parse(line, &ev, &pe);
    if (rc && !strncmp(pe.msg, "not JSON", 8)) {
        w->torn = w->lineno;
        memcpy(w->torn_why, pe.msg, sizeof w->torn_why);
        return 0;
    }
    if (rc) {
        w->rc = store_errf(w->e, rc, "events.log line %zu: %s", w->lineno, pe.msg);
        return 1;
    }
    if (w->fn(w->arg, &ev)) w->stopped = 1;
    return w->stopped;
}

int store_event_each(store_t *s, store_event_fn fn, void *arg, store_err *e)
{
    walk w = {.fn = fn, .arg = arg, .e = e};
    int rc = events_read_lines(s, each_line, &w, e);
    return rc ? rc : w.rc;
}
