/* A tiny parallel-for: persistent worker threads plus the caller share one job's index
 * space through an atomic counter. One job runs at a time; a caller that finds the pool
 * busy (another thread's job) runs its job inline rather than queueing behind it. */
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "store/internal.h"

struct pool {
    pthread_mutex_t mu, job_mu;
    pthread_cond_t start, done;
    pthread_t *threads;
    unsigned nthreads;
    uint64_t generation;        /* bumped per job; workers wait for a new one */
    int quit;
    store_task_fn fn;
    void *arg;
    size_t n;
    atomic_size_t next;
    unsigned active;            /* workers still inside the current job */
};

static void run_job(struct pool *p)
{
    for (;;) {
        size_t i = atomic_fetch_add(&p->next, 1);
        if (i >= p->n) break;
        p->fn(p->arg, i);
    }
}

static void *worker(void *arg)
{
    struct pool *p = arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->quit && p->generation == seen) pthread_cond_wait(&p->start, &p->mu);
        if (p->quit) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        run_job(p);
        pthread_mutex_lock(&p->mu);
        if (--p->active == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

struct pool *pool_new(unsigned threads)
{
    struct pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->job_mu, NULL);
    pthread_cond_init(&p->start, NULL);
    pthread_cond_init(&p->done, NULL);
    p->threads = calloc(threads ? threads : 1, sizeof *p->threads);
    for (unsigned i = 0; p->threads && i < threads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker, p) != 0) break;
        p->nthreads++;
    }
    return p;
}

void pool_free(struct pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->job_mu);
    pthread_cond_destroy(&p->start);
    pthread_cond_destroy(&p->done);
    free(p);
}

void store_parallel(store_t *s, size_t n, store_task_fn fn, void *arg)
{
    struct pool *p = s ? s->pool : NULL;
    if (!p || !p->nthreads || n < 2 || pthread_mutex_trylock(&p->job_mu) != 0) {
        for (size_t i = 0; i < n; i++) fn(arg, i);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    atomic_store(&p->next, 0);
    p->active = p->nthreads;
    p->generation++;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    run_job(p);
    pthread_mutex_lock(&p->mu);
    while (p->active) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&p->job_mu);
}

unsigned store_threads(const store_t *s)
{
    return (s && s->pool ? s->pool->nthreads : 0) + 1;
}
