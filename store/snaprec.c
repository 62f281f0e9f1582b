/* Typed snapshot records: the index's JSON records (manifest.c encodes and parses them)
 * handed out as store_snaprec, so no caller parses the index's JSON or snapshot ids. */
#include <errno.h>
#include <string.h>

#include "store/internal.h"

typedef struct {
    store_snaprec_fn fn;
    void *arg;
    int rc;
    store_err *e;
} rec_walk;

static int one_record(void *arg, const char *id, const char *json)
{
    rec_walk *w = arg;
    store_snaprec r;
    store_err pe;
    int bad = manifest_record_parse(json, &r, &pe);
    if (!bad && strcmp(r.id, id)) bad = store_errf(&pe, -EBADMSG, "it names another snapshot");
    if (bad) {
        w->rc = store_errf(w->e, -EBADMSG, "index: snapshot record %s: %s; run `cairn fsck "
                           "--rebuild-index`", id, pe.msg);
        return 1;
    }
    r.json = json;
    return w->fn(w->arg, &r);
}

int store_snapshot_records(store_t *s, const char *sandbox, store_snaprec_fn fn, void *arg,
                           store_err *e)
{
    rec_walk w = {.fn = fn, .arg = arg, .e = e};
    int rc = sandbox ? store_snapshot_list(s, sandbox, one_record, &w, e)
                     : store_snapshot_all(s, one_record, &w, e);
    return rc ? rc : w.rc;
}
