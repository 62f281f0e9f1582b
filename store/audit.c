/* Append-only logs of JSON lines: audit (support reads) and events (lifecycle: its lines are
 * encoded and parsed by store/events.c only), kept by the store's backend (store/backend.h): events.log / audit.log in the
 * folder, or one object per line in the bucket. A line is durable before the caller goes on,
 * so an audited read never happens unrecorded and an event is never lost. */
#include "store/internal.h"

static int log_append(store_t *s, const char *name, const char *line, store_err *e)
{
    return s->be->ops->log_append(s->be, name, line, e);
}

static int log_read(store_t *s, const char *name, int (*fn)(void *arg, const char *line), void *arg,
                    store_err *e)
{
    return s->be->ops->log_read(s->be, name, fn, arg, e);
}

int store_audit_append(store_t *s, const char *line, store_err *e)
{
    store_err le;
    int rc = log_append(s, "audit", line, &le);
    if (rc) store_errf(e, rc, "%s; the read was not done", le.msg);
    return rc;
}

int store_audit_read(store_t *s, int (*fn)(void *arg, const char *line), void *arg, store_err *e)
{
    return log_read(s, "audit", fn, arg, e);
}

int events_append_line(store_t *s, const char *line, store_err *e)
{
    return log_append(s, "events", line, e);
}

int events_read_lines(store_t *s, int (*fn)(void *arg, const char *line), void *arg, store_err *e)
{
    return log_read(s, "events", fn, arg, e);
}
