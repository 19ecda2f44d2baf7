/* The stage timing's clock: seconds on CLOCK_MONOTONIC's time line (the one
 * time.perf_counter() reads on Linux), read from the CPU's time-stamp counter where the
 * kernel itself keeps time with it.
 *
 * The stage timing reads the clock three or four times a batch, always on; here a
 * clock_gettime() costs ~40 ns and a TSC read ~12 ns, so on the fastest batches (~20 us)
 * the clock alone was half a percent. The TSC is mapped to CLOCK_MONOTONIC by anchors:
 * pairs of (TSC, clock_gettime) read back to back, re-taken as time passes (10 to 100 ms
 * apart), the rate measured over the whole time since the first pair, so a reading stays
 * within a few us of clock_gettime (NTP slews CLOCK_MONOTONIC between anchors), and a
 * duration within ppm of it. The first 10 ms of a process read clock_gettime. Without a
 * usable TSC (another architecture, a kernel on another clocksource, a CPU whose counter
 * is behind) it is clock_gettime(). */
#ifndef FL_CLOCK_H
#define FL_CLOCK_H

/* Seconds, CLOCK_MONOTONIC's time line. Thread-safe, never fails. */
double fl_clock_now(void);

/* 1 when readings come from the TSC now, 0 when from clock_gettime (still calibrating,
 * or no usable TSC): for tests. */
int fl_clock_uses_tsc(void);

#endif
