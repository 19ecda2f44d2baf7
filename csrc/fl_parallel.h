/* Run one function on n native threads (the caller is thread 0). */
#ifndef FL_PARALLEL_H
#define FL_PARALLEL_H

typedef void (*fl_task_fn)(void *ctx, int thread_index);

/* Returns the number of threads that ran (>= 1 even when thread creation fails:
 * the caller's thread then does all the work). */
int fl_parallel_run(int nthreads, fl_task_fn fn, void *ctx);

#endif
