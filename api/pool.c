/* Worker threads with one queue. A job is an api_job embedded in its owner; the pool
 * never frees it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "api/internal.h"

static void *worker(void *arg)
{
    api_pool *p = arg;
    /* Per thread on Linux (the tid is the target), inherited by the threads a job makes. */
    if (p->nice && setpriority(PRIO_PROCESS, (id_t)gettid(), p->nice) < 0)
        fprintf(stderr, "cairn serve: warning: cannot lower a worker's priority (nice %d): %s\n", p->nice,
                strerror(errno));
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stop) pthread_cond_wait(&p->cv, &p->mu);
        if (!p->head) break;
        api_job *j = p->head;
        p->head = j->next;
        if (!p->head) p->tail = NULL;
        p->queued--;
        p->running++;
        pthread_mutex_unlock(&p->mu);
        j->fn(j);
        pthread_mutex_lock(&p->mu);
        p->running--;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int api_pool_start(api_pool *p, int nthreads, int max_pending, int nice, store_err *e)
{
    memset(p, 0, sizeof *p);
    p->nice = nice;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->max_pending = max_pending;
    p->threads = calloc((size_t)nthreads, sizeof *p->threads);
    if (!p->threads) return store_errf(e, -ENOMEM, "out of memory");
    for (int i = 0; i < nthreads; i++) {
        int rc = pthread_create(&p->threads[i], NULL, worker, p);
        if (rc) {
            api_pool_stop(p);
            return store_errf(e, -rc, "starting a worker thread: %s", strerror(rc));
        }
        p->nthreads++;
    }
    return 0;
}

int api_pool_submit(api_pool *p, api_job *j)
{
    pthread_mutex_lock(&p->mu);
    if (p->stop || p->running + p->queued >= p->max_pending) {
        pthread_mutex_unlock(&p->mu);
        return -EBUSY;
    }
    j->next = NULL;
    if (p->tail) p->tail->next = j;
    else p->head = j;
    p->tail = j;
    p->queued++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

void api_pool_stop(api_pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    p->threads = NULL;
    p->nthreads = 0;
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
}
