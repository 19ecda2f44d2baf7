#include "fl_parallel.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct {
    fl_task_fn fn;
    void *ctx;
    int index;
} fl_thread_arg;

static void *fl_thread_main(void *p) {
    fl_thread_arg *a = (fl_thread_arg *)p;
    a->fn(a->ctx, a->index);
    return NULL;
}

int fl_parallel_run(int nthreads, fl_task_fn fn, void *ctx) {
    if (nthreads <= 1) {
        fn(ctx, 0);
        return 1;
    }
    pthread_t *tids = malloc(sizeof(pthread_t) * (size_t)nthreads);
    fl_thread_arg *args = malloc(sizeof(fl_thread_arg) * (size_t)nthreads);
    if (!tids || !args) {
        free(tids);
        free(args);
        fn(ctx, 0);
        return 1;
    }
    int started = 0;
    for (int i = 1; i < nthreads; i++) {
        args[i].fn = fn;
        args[i].ctx = ctx;
        args[i].index = i;
        if (pthread_create(&tids[i], NULL, fl_thread_main, &args[i]) != 0) break;
        started = i;
    }
    fn(ctx, 0);
    for (int i = 1; i <= started; i++) pthread_join(tids[i], NULL);
    free(tids);
    free(args);
    return started + 1;
}
