#include "fl_parallel.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

/* Far past any useful depth (the knobs stop at 4096 parts in flight). */
#define FL_POOL_MAX_THREADS 4096

struct fl_pool {
    pthread_mutex_t lock;
    pthread_cond_t work; /* a job was posted, or the pool is stopping */
    pthread_cond_t done; /* a helper returned from a job */
    pthread_t *threads;
    int nthreads, cap;
    int demand; /* helpers the jobs in flight asked for */
    int stopping;
    fl_pool_job *jobs, *tail; /* posted jobs, oldest first */
    unsigned gen;             /* fork generation the threads belong to */
};

static volatile unsigned fork_gen;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t reset_lock = PTHREAD_MUTEX_INITIALIZER;

static void after_fork_in_child(void) {
    __atomic_add_fetch(&fork_gen, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_init(&reset_lock, NULL); /* its holder, if any, did not come along */
}

static void register_atfork(void) { pthread_atfork(NULL, NULL, after_fork_in_child); }

unsigned fl_fork_generation(void) {
    pthread_once(&atfork_once, register_atfork);
    return __atomic_load_n(&fork_gen, __ATOMIC_SEQ_CST);
}

static void init_sync(fl_pool *pool) {
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->work, NULL);
    pthread_cond_init(&pool->done, NULL);
}

/* In a child after fork: the threads, their jobs and any lock they held stayed in the parent. */
static void reset_if_forked(fl_pool *pool) {
    unsigned gen = fl_fork_generation();
    if (__atomic_load_n(&pool->gen, __ATOMIC_ACQUIRE) == gen) return;
    pthread_mutex_lock(&reset_lock);
    if (pool->gen != gen) {
        init_sync(pool);
        pool->nthreads = 0;
        pool->demand = 0;
        pool->stopping = 0;
        pool->jobs = pool->tail = NULL;
        __atomic_store_n(&pool->gen, gen, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&reset_lock);
}

fl_pool *fl_pool_new(void) {
    fl_pool *pool = calloc(1, sizeof(fl_pool));
    if (!pool) return NULL;
    init_sync(pool);
    pool->gen = fl_fork_generation();
    return pool;
}

static void *pool_main(void *arg) {
    fl_pool *pool = (fl_pool *)arg;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (!pool->stopping && !pool->jobs) pthread_cond_wait(&pool->work, &pool->lock);
        if (pool->stopping) break;
        fl_pool_job *job = pool->jobs;
        int index = ++job->joined;
        if (job->joined >= job->helpers) { /* fully staffed: off the list */
            pool->jobs = job->next;
            if (!pool->jobs) pool->tail = NULL;
            job->posted = 0;
        }
        if (job->wait_all) pthread_cond_broadcast(&pool->done);
        pthread_mutex_unlock(&pool->lock);
        job->fn(job->ctx, index);
        pthread_mutex_lock(&pool->lock);
        job->finished++;
        pthread_cond_broadcast(&pool->done);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

/* With the lock held: threads until the demand is met (fewer if the OS refuses). */
static void grow(fl_pool *pool) {
    int want = pool->demand < FL_POOL_MAX_THREADS ? pool->demand : FL_POOL_MAX_THREADS;
    if (pool->nthreads >= want || pool->stopping) return;
    if (want > pool->cap) {
        int cap = pool->cap ? pool->cap : 4;
        while (cap < want) cap *= 2;
        pthread_t *t = realloc(pool->threads, sizeof(pthread_t) * (size_t)cap);
        if (!t) return;
        pool->threads = t;
        pool->cap = cap;
    }
    /* Pool threads take no signals: Python handles them on its main thread. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    while (pool->nthreads < want &&
           pthread_create(&pool->threads[pool->nthreads], NULL, pool_main, pool) == 0)
        pool->nthreads++;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

void fl_pool_post(fl_pool *pool, fl_pool_job *job, fl_task_fn fn, void *ctx, int helpers,
                  int wait_all) {
    job->fn = fn;
    job->ctx = ctx;
    job->helpers = helpers;
    job->joined = job->finished = 0;
    job->posted = 0;
    job->wait_all = wait_all;
    job->next = NULL;
    if (!pool || helpers < 1) return;
    reset_if_forked(pool);
    pthread_mutex_lock(&pool->lock);
    pool->demand += helpers;
    grow(pool);
    if (pool->nthreads > 0) {
        job->posted = 1;
        if (pool->tail)
            pool->tail->next = job;
        else
            pool->jobs = job;
        pool->tail = job;
        /* One wake-up per helper wanted: a broadcast would wake every idle thread
         * only for most of them to find the job staffed and sleep again. */
        for (int i = 0; i < helpers && i < pool->nthreads; i++) pthread_cond_signal(&pool->work);
    }
    pthread_mutex_unlock(&pool->lock);
}

int fl_pool_wait(fl_pool *pool, fl_pool_job *job) {
    if (!pool || job->helpers < 1) return 1;
    pthread_mutex_lock(&pool->lock);
    /* Threads the pool holds are enough for every job in flight: waiting for a helper
     * to join waits for a wake-up, never for another job's work. */
    while (job->wait_all && job->posted && job->joined < job->helpers &&
           pool->nthreads >= pool->demand && !pool->stopping)
        pthread_cond_wait(&pool->done, &pool->lock);
    if (job->posted) {
        fl_pool_job **pp = &pool->jobs, *prev = NULL;
        while (*pp && *pp != job) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        if (*pp) {
            *pp = job->next;
            if (pool->tail == job) pool->tail = prev;
        }
        job->posted = 0;
    }
    while (job->finished < job->joined) pthread_cond_wait(&pool->done, &pool->lock);
    pool->demand -= job->helpers;
    pthread_mutex_unlock(&pool->lock);
    return 1 + job->joined;
}

static __thread int thread_budget;

void fl_thread_budget_set(int nthreads) { thread_budget = nthreads > 0 ? nthreads : 0; }

int fl_thread_budget(void) { return thread_budget; }

int fl_thread_budget_cap(int nthreads) {
    if (thread_budget > 0 && nthreads > thread_budget) nthreads = thread_budget;
    return nthreads > 1 ? nthreads : 1;
}

int fl_pool_run(fl_pool *pool, int nthreads, fl_task_fn fn, void *ctx) {
    nthreads = fl_thread_budget_cap(nthreads);
    if (nthreads <= 1 || !pool) {
        fn(ctx, 0);
        return 1;
    }
    fl_pool_job job;
    fl_pool_post(pool, &job, fn, ctx, nthreads - 1, 1);
    fn(ctx, 0);
    return fl_pool_wait(pool, &job);
}

void fl_pool_stop(fl_pool *pool) {
    if (!pool) return;
    reset_if_forked(pool);
    pthread_mutex_lock(&pool->lock);
    pool->stopping = 1;
    pthread_cond_broadcast(&pool->work);
    int n = pool->nthreads;
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < n; i++) pthread_join(pool->threads[i], NULL);
    pthread_mutex_lock(&pool->lock);
    pool->nthreads = 0;
    pool->stopping = 0;
    pthread_mutex_unlock(&pool->lock);
}

void fl_pool_free(fl_pool *pool) {
    if (!pool) return;
    fl_pool_stop(pool);
    free(pool->threads);
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->work);
    pthread_cond_destroy(&pool->done);
    free(pool);
}

int fl_pool_threads(fl_pool *pool) {
    if (!pool) return 0;
    reset_if_forked(pool);
    pthread_mutex_lock(&pool->lock);
    int n = pool->nthreads;
    pthread_mutex_unlock(&pool->lock);
    return n;
}

static fl_pool *global_pool;
static pthread_once_t global_once = PTHREAD_ONCE_INIT;

static void make_global(void) { global_pool = fl_pool_new(); }

fl_pool *fl_pool_global(void) {
    pthread_once(&global_once, make_global);
    return global_pool;
}

int fl_parallel_run(int nthreads, fl_task_fn fn, void *ctx) {
    return fl_pool_run(nthreads > 1 ? fl_pool_global() : NULL, nthreads, fn, ctx);
}
