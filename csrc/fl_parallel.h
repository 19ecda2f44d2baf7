/* Native threads that stay: a pool runs one function on several threads at once.
 *
 * A caller posts a job and works on it itself (thread index 0); idle pool threads
 * join it (indices 1..) and take work from the job's context until none is left.
 * Threads are created once, when the demand first needs them, not per call, and a
 * pool used in a child after fork() starts over with no threads (the parent's
 * threads do not exist there). */
#ifndef FL_PARALLEL_H
#define FL_PARALLEL_H

typedef void (*fl_task_fn)(void *ctx, int thread_index);

typedef struct fl_pool fl_pool;

/* One call's share of a pool; lives on the caller's stack between post and wait. */
typedef struct fl_pool_job {
    fl_task_fn fn;
    void *ctx;
    int helpers;  /* pool threads wanted */
    int joined;   /* pool threads that took the job */
    int finished; /* of those, how many returned */
    int posted;   /* still on the pool's list (more helpers may join) */
    int wait_all; /* fl_pool_wait waits for every helper to join, not only for those that did */
    struct fl_pool_job *next;
} fl_pool_job;

/* NULL when out of memory. */
fl_pool *fl_pool_new(void);
/* Stops and joins the threads (none may be working) and frees the pool. */
void fl_pool_free(fl_pool *pool);
/* Stops and joins the threads; the pool stays usable and makes threads again on demand. */
void fl_pool_stop(fl_pool *pool);
/* Threads the pool holds now. */
int fl_pool_threads(fl_pool *pool);

/* Offers `job` to up to `helpers` pool threads (made now if the pool has fewer threads
 * than the jobs posted want). The caller then runs fn(ctx, 0) itself and must call
 * fl_pool_wait. `wait_all`: see fl_pool_wait. */
void fl_pool_post(fl_pool *pool, fl_pool_job *job, fl_task_fn fn, void *ctx, int helpers,
                  int wait_all);
/* Withdraws the offer and waits for the helpers that joined to return (with
 * wait_all, first for every helper wanted to join, as long as the pool has the
 * threads). Returns how many threads ran the job, the caller included. */
int fl_pool_wait(fl_pool *pool, fl_pool_job *job);

/* post + fn(ctx, 0) + wait, with nthreads - 1 helpers (nthreads first capped by the
 * calling thread's budget, see fl_thread_budget_set); nthreads <= 1 (or a NULL pool)
 * runs inline. Every helper runs fn (wait_all): the return is nthreads unless the OS
 * refused threads. */
int fl_pool_run(fl_pool *pool, int nthreads, fl_task_fn fn, void *ctx);

/* The calling thread's thread budget: how many threads, itself included, the calls it
 * makes may keep busy with CPU work (0, the default: no cap beyond each call's own).
 * A program whose own threads already cover the CPUs (a loader with one reader thread
 * per CPU) gives each of them 1: a pool's helpers would only take turns with those
 * threads on the same cores, and each hand-off costs wake-ups and a cold cache. Held
 * per thread, so it follows the thread through every kernel it calls. (Each extension
 * module that links this file holds its own copy: set it through each.) */
void fl_thread_budget_set(int nthreads);
int fl_thread_budget(void);
/* `nthreads` capped by the calling thread's budget (at least 1). */
int fl_thread_budget_cap(int nthreads);

/* The same on a process-wide pool. */
fl_pool *fl_pool_global(void);
int fl_parallel_run(int nthreads, fl_task_fn fn, void *ctx);

/* Increases in a child after each fork(): state made in the parent is stale when it differs. */
unsigned fl_fork_generation(void);

#endif
