/*
 * events: DIR/events.log, the store's lifecycle log (the one owner of its format).
 *
 * One JSON object per line, appended with O_APPEND in a single write and fsynced before
 * the call returns (store/audit.c); any process may append, with or without the store's
 * lock. It is the source of truth for what manifests do not say: activity, tiers,
 * deletions, pins and why gc dropped a snapshot (docs/gc.md).
 *
 * Line format (the only encoder and the only parser are in store/events.c):
 *   {"event": KIND, "at": UNIX_MS, ...}  with, by kind,
 *   touch, restore, rebuild           "sandbox"
 *   delete                            "sandbox", "after" (a snapshot id; absent in old logs)
 *   tier                              "tenant", "tier" ("free" | "pro")
 *   pin, unpin                        "snapshot", "sandbox"
 *   drop                              "snapshot", "sandbox", "reason"
 * Reading: a line with an unknown kind, tier or reason, or a missing field, is an error
 * (never a default: an unknown tier must not read as free). The only line skipped is a
 * torn last line (no newline, not JSON): an append a crash cut short.
 */
#ifndef CAIRN_STORE_EVENTS_H
#define CAIRN_STORE_EVENTS_H

#include "store/store.h"

typedef enum {
    STORE_EV_TOUCH = 1, STORE_EV_TIER, STORE_EV_DELETE, STORE_EV_PIN, STORE_EV_UNPIN,
    STORE_EV_RESTORE, STORE_EV_REBUILD, STORE_EV_DROP
} store_event_kind;

/* Why gc dropped a snapshot. */
typedef enum {
    STORE_DROP_DELETED = 1,     /* its sandbox was deleted */
    STORE_DROP_SUPERSEDED,      /* a newer snapshot of the sandbox replaces it */
    STORE_DROP_RECLAIMED,       /* its sandbox was reclaimed (a files-only snapshot stays) */
    STORE_DROP_RESUMED          /* an interrupted gc logged the drop; this run finished it */
} store_drop_reason;

typedef struct {
    store_event_kind kind;
    int64_t at_ms;                          /* unix ms */
    char sandbox[STORE_NAME_MAX + 1];       /* "" when the kind has none */
    char tenant[STORE_NAME_MAX + 1];        /* tier only */
    char snapshot[STORE_SNAPID_LEN];        /* pin, unpin, drop */
    store_tier tier;                        /* tier only */
    store_drop_reason reason;               /* drop only */
    char after[STORE_SNAPID_LEN];           /* delete: the sandbox's newest snapshot when it
                                               was deleted ("" in logs older than the field) */
} store_event;

/* Names at the edges ("touch", "drop", "reclaimed", ...); parse returns -EINVAL for a name
 * it does not know. */
const char *store_event_kind_name(store_event_kind k);
STORE_MUST_USE int store_event_kind_parse(const char *name, store_event_kind *out);
const char *store_drop_reason_name(store_drop_reason r);
STORE_MUST_USE int store_drop_reason_parse(const char *name, store_drop_reason *out);

/* One line of events.log (no newline; malloc'd in *line) / the event of one line.
 * Encoding checks the fields the kind needs (-EINVAL); parsing refuses what is not a
 * well-formed event (-EBADMSG). */
STORE_MUST_USE int store_event_encode(const store_event *ev, char **line, store_err *e);
STORE_MUST_USE int store_event_parse(const char *line, store_event *ev, store_err *e);

/* Appends ev to DIR/events.log, durably. */
STORE_MUST_USE int store_event_log(store_t *s, const store_event *ev, store_err *e);

/* Calls fn for each event, oldest first; a non-zero return stops the walk (and is not an
 * error). A damaged line fails the walk with its line number. */
typedef int (*store_event_fn)(void *arg, const store_event *ev);
STORE_MUST_USE int store_event_each(store_t *s, store_event_fn fn, void *arg, store_err *e);

#endif
