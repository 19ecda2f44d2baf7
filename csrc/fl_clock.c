#include "fl_clock.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <x86intrin.h>
#define FL_CLOCK_TSC 1
#else
#define FL_CLOCK_TSC 0
#endif

#define CALIBRATE_S 0.01 /* the first pairs this far apart give the first rate */
#define CHECK_SOURCE_S 1.0     /* look at the kernel's clocksource again this often */
#define PREDICTION_ERROR 2e-4  /* an anchor's prediction off by more: the rate changed */
#define ANCHOR_MAX_S 0.1 /* re-anchor at least this often: NTP slews CLOCK_MONOTONIC by
                          * tens of ppm, a few us between anchors */

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#if FL_CLOCK_TSC

enum { UNSTARTED, STARTING, CALIBRATING, TSC, NO_TSC };

static _Atomic int mode = UNSTARTED;
static _Atomic int updating; /* one thread re-anchors at a time; the others read on */

/* The origin pair (the rate is measured since it; moved when the rate turns out to have
 * changed) and the current anchor, published under a sequence lock: readers never wait,
 * a writer makes seq odd while it writes. Fields are atomics read relaxed, so a torn read
 * is retried, never undefined. Only the thread holding ``updating`` writes. */
static _Atomic uint64_t origin_tsc;
static _Atomic double origin_mono;
static double checked_mono; /* when the kernel's clocksource was last looked at */
static _Atomic uint64_t seq;
static _Atomic uint64_t anchor_tsc;
static _Atomic double anchor_mono;
static _Atomic double anchor_rate; /* seconds per tick */

static uint64_t tsc_now(void) { return __rdtsc(); }

/* A (TSC, CLOCK_MONOTONIC) pair read back to back: the tightest of a few tries, the TSC
 * taken as the middle of the ticks around the clock_gettime. */
static void read_pair(uint64_t *tsc, double *mono) {
    uint64_t best = UINT64_MAX;
    for (int i = 0; i < 4; i++) {
        uint64_t t1 = tsc_now();
        double m = mono_now();
        uint64_t t2 = tsc_now();
        if (t2 >= t1 && t2 - t1 < best) {
            best = t2 - t1;
            *tsc = t1 + (t2 - t1) / 2;
            *mono = m;
        }
    }
    if (best == UINT64_MAX) { /* the counter went backwards every time */
        *tsc = 0;
        *mono = mono_now();
    }
}

/* The kernel keeps time with the TSC only when it trusts it (invariant, synchronised
 * across CPUs): its choice is the test. */
static int kernel_uses_tsc(void) {
    FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
    if (!f) return 0;
    char name[32] = {0};
    int ok = fgets(name, sizeof name, f) != NULL && strncmp(name, "tsc", 3) == 0 &&
             (name[3] == '\n' || name[3] == '\0');
    fclose(f);
    return ok;
}


static void publish(uint64_t tsc, double mono, double rate) {
    uint64_t s = atomic_load_explicit(&seq, memory_order_relaxed);
    atomic_store_explicit(&seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&anchor_tsc, tsc, memory_order_relaxed);
    atomic_store_explicit(&anchor_mono, mono, memory_order_relaxed);
    atomic_store_explicit(&anchor_rate, rate, memory_order_relaxed);
    atomic_store_explicit(&seq, s + 2, memory_order_release);
}

/* A new anchor from a fresh pair, the rate measured since the origin (the caller holds
 * ``updating``); returns the pair's CLOCK_MONOTONIC reading, negative when the pair is
 * unusable (the counter is behind the origin's). */
static double take_anchor(void) {
    uint64_t tsc;
    double mono;
    read_pair(&tsc, &mono);
    uint64_t otsc = atomic_load_explicit(&origin_tsc, memory_order_relaxed);
    double omono = atomic_load_explicit(&origin_mono, memory_order_relaxed);
    if (tsc <= otsc || mono <= omono) return -1.0;
    if (mono - checked_mono >= CHECK_SOURCE_S) { /* the kernel may have left the TSC */
        checked_mono = mono;
        if (!kernel_uses_tsc()) {
            atomic_store(&mode, NO_TSC);
            return mono;
        }
    }
    if (atomic_load(&mode) == TSC) {
        /* How far the last anchor's prediction is off: beyond PREDICTION_ERROR of the
         * time since it (NTP slewing CLOCK_MONOTONIC hard, a suspend the TSC counted
         * through), the rate changed: measure it afresh from this pair, reading
         * clock_gettime meanwhile. */
        uint64_t at = atomic_load_explicit(&anchor_tsc, memory_order_relaxed);
        double am = atomic_load_explicit(&anchor_mono, memory_order_relaxed);
        double rate = atomic_load_explicit(&anchor_rate, memory_order_relaxed);
        double off = am + (double)(tsc - at) * rate - mono;
        if (tsc < at || fabs(off) > PREDICTION_ERROR * (mono - am) + 2e-6) {
            atomic_store_explicit(&origin_tsc, tsc, memory_order_relaxed);
            atomic_store_explicit(&origin_mono, mono, memory_order_relaxed);
            atomic_store(&mode, CALIBRATING);
            return mono;
        }
    }
    publish(tsc, mono, (mono - omono) / (double)(tsc - otsc));
    return mono;
}

/* take_anchor() unless another thread is re-anchoring (negative then: read on). */
static double reanchor(void) {
    int idle = 0;
    if (!atomic_compare_exchange_strong(&updating, &idle, 1)) return -1.0;
    double mono = take_anchor();
    atomic_store(&updating, 0);
    return mono;
}

/* A fork copies the memory of a thread caught re-anchoring, not the thread: the child
 * finishes the sequence lock it left odd, takes a fresh anchor and frees the flag. */
static void after_fork_child(void) {
    uint64_t s = atomic_load(&seq);
    if (s & 1) atomic_store(&seq, s + 1);
    checked_mono = mono_now(); /* no fopen() in a forked child: the check waits a second */
    if (atomic_load(&mode) == TSC) take_anchor();
    atomic_store(&updating, 0);
}

static double start(void) {
    int expected = UNSTARTED;
    if (atomic_compare_exchange_strong(&mode, &expected, STARTING)) {
        if (!kernel_uses_tsc()) {
            atomic_store(&mode, NO_TSC);
        } else {
            uint64_t tsc;
            double mono;
            read_pair(&tsc, &mono);
            atomic_store(&origin_tsc, tsc);
            atomic_store(&origin_mono, mono);
            checked_mono = mono;
            pthread_atfork(NULL, NULL, after_fork_child);
            atomic_store(&mode, tsc ? CALIBRATING : NO_TSC);
        }
    }
    return mono_now();
}

double fl_clock_now(void) {
    int m = atomic_load_explicit(&mode, memory_order_acquire);
    if (m == TSC) {
        uint64_t s, at;
        double am, rate;
        int tries = 0;
        do {
            /* a writer preempted mid-anchor: read clock_gettime rather than spin on it */
            if (++tries > 64) return mono_now();
            s = atomic_load_explicit(&seq, memory_order_acquire);
            at = atomic_load_explicit(&anchor_tsc, memory_order_relaxed);
            am = atomic_load_explicit(&anchor_mono, memory_order_relaxed);
            rate = atomic_load_explicit(&anchor_rate, memory_order_relaxed);
            atomic_thread_fence(memory_order_acquire);
        } while ((s & 1) || s != atomic_load_explicit(&seq, memory_order_relaxed));
        uint64_t t = tsc_now();
        if (t < at) return mono_now(); /* a CPU whose counter is behind: no guess */
        double since = (double)(t - at) * rate;
        /* Re-anchor after 1% of the time since the origin, 10 to 100 ms: a
         * reading's error is the rate's error times the time since its anchor, and the
         * rate's error shrinks as the time since the origin grows. */
        double every = 0.01 * (am - atomic_load_explicit(&origin_mono, memory_order_relaxed));
        every = every < CALIBRATE_S ? CALIBRATE_S : every > ANCHOR_MAX_S ? ANCHOR_MAX_S : every;
        if (since > every) {
            double fresh = reanchor();
            if (fresh >= 0) return fresh;
        }
        return am + since;
    }
    if (m == NO_TSC || m == STARTING) return mono_now();
    if (m == UNSTARTED) return start();
    /* CALIBRATING: clock_gettime until the first pairs are far enough apart */
    double now = mono_now();
    if (now - atomic_load_explicit(&origin_mono, memory_order_relaxed) >= CALIBRATE_S &&
        reanchor() >= 0) {
        int calibrating = CALIBRATING;
        atomic_compare_exchange_strong(&mode, &calibrating, TSC);
    }
    return now;
}

int fl_clock_uses_tsc(void) { return atomic_load(&mode) == TSC; }

#else

double fl_clock_now(void) { return mono_now(); }
int fl_clock_uses_tsc(void) { return 0; }

#endif
