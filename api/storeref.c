/* The one store handle the server's requests share.
 *
 * Why not keep the store open: a writer (STORE_WRITE) holds the store's exclusive flock
 * and a reader the shared one, so a server that kept either would make every CLI
 * snapshot, or every CLI read, wait for it to exit. Instead the handle is opened for the
 * requests that need it and closed when the last one ends:
 *   - readers share one STORE_READ handle; a handle older than REUSE_MS takes no new
 *     readers, so under constant load it still closes and a waiting CLI writer gets in;
 *   - one writer job at a time opens STORE_WRITE once no handle is open, and readers that
 *     arrive while it runs use its handle (store_t is thread-safe for reads), so metadata
 *     calls do not wait for an ingest;
 *   - a second flock from this process would wait on the first, so two handles are never
 *     open at once.
 * gc_run opens the store itself: it waits for these handles like any other process. */
#include <errno.h>
#include <string.h>

#include "api/internal.h"
#include "store/toolbox.h"

#define REUSE_MS 1000

void api_storeref_init(api_storeref *r, const char *dir)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->write_mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->dir = dir;
}

void api_storeref_destroy(api_storeref *r)
{
    if (r->s) store_close(r->s);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->write_mu);
    pthread_cond_destroy(&r->cv);
}

int api_store_get(api_storeref *r, int mode, store_t **out, store_err *e)
{
    if (mode == STORE_WRITE) pthread_mutex_lock(&r->write_mu);
    pthread_mutex_lock(&r->mu);
    if (mode == STORE_WRITE) r->writers_waiting++;
    for (;;) {
        if (mode == STORE_WRITE) {
            if (!r->s && !r->busy) break;
        } else if (r->s && !r->busy) {
            int join = r->mode == STORE_WRITE ? r->writer_active
                                              : !r->writers_waiting && store_now_ms() - r->opened_ms < REUSE_MS;
            if (join) {
                r->refs++;
                *out = r->s;
                pthread_mutex_unlock(&r->mu);
                return 0;
            }
        } else if (!r->s && !r->busy && !r->writers_waiting) {
            break;
        }
        pthread_cond_wait(&r->cv, &r->mu);
    }
    if (mode == STORE_WRITE) r->writers_waiting--;
    r->busy = 1;
    pthread_mutex_unlock(&r->mu);
    store_t *s = NULL;
    int rc = store_open(r->dir, mode, &s, e);
    pthread_mutex_lock(&r->mu);
    r->busy = 0;
    if (!rc) {
        r->s = s;
        r->mode = mode;
        r->refs = 1;
        r->writer_active = mode == STORE_WRITE;
        r->opened_ms = store_now_ms();
        *out = s;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (rc && mode == STORE_WRITE) pthread_mutex_unlock(&r->write_mu);
    return rc;
}

void api_store_put(api_storeref *r, int mode)
{
    pthread_mutex_lock(&r->mu);
    if (mode == STORE_WRITE) r->writer_active = 0;
    store_t *close_it = NULL;
    if (--r->refs == 0) {
        close_it = r->s;
        r->s = NULL;
        r->busy = 1;           /* nobody opens until the flock is released */
    }
    pthread_mutex_unlock(&r->mu);
    if (close_it) {
        store_close(close_it);
        pthread_mutex_lock(&r->mu);
        r->busy = 0;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
    }
    if (mode == STORE_WRITE) pthread_mutex_unlock(&r->write_mu);
}
