/* Append-only logs of JSON lines: audit (support reads) and events (lifecycle: its lines are
 * encoded and parsed by store/events.c only), kept by the store's backend (store/backend.h): events.log / audit.log in the
 * folder, or one object per line in the bucket. A line is durable before the caller goes on,
 * so an audited read never happens unrecorded and an event is never lost. */
#include <errno.h>
#include <jansson.h>
#include <string.h>

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

typedef struct {
    int (*fn)(void *arg, json_t *j);
    void *arg;
    size_t lineno, torn;        /* torn: the line that was not an object, if it is the last */
    int rc;
} audit_walk;

static int audit_line(void *arg, const char *line)
{
    audit_walk *w = arg;
    w->lineno++;
    if (w->torn) return w->rc = -EBADMSG;   /* a line came after it: not a torn append */
    json_t *j = json_loads(line, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        w->torn = w->lineno;
        return 0;
    }
    w->rc = w->fn(w->arg, j);
    json_decref(j);
    return w->rc;
}

int store_audit_read(store_t *s, int (*fn)(void *arg, json_t *j), void *arg, store_err *e)
{
    audit_walk w = {fn, arg, 0, 0, 0};
    int rc = log_read(s, "audit", audit_line, &w, e);
    if (rc || !w.rc) return rc;
    if (w.rc == -EBADMSG && w.torn)
        return store_errf(e, w.rc, "audit.log line %zu: not a JSON object (damaged)", w.torn);
    return store_errf(e, w.rc, "reading audit.log: %s", strerror(-w.rc));
}

int events_append_line(store_t *s, const char *line, store_err *e)
{
    return log_append(s, "events", line, e);
}

int events_read_lines(store_t *s, int (*fn)(void *arg, const char *line), void *arg, store_err *e)
{
    return log_read(s, "events", fn, arg, e);
}
