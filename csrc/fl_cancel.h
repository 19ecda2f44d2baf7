/* The cancel flag a reader polls between parts: set by Python (holding the GIL),
 * read by native threads without it. Atomic accesses make that hand-over defined. */
#ifndef FL_CANCEL_H
#define FL_CANCEL_H

static inline int fl_cancel_requested(const volatile int *flag) {
    return flag != NULL && __atomic_load_n(flag, __ATOMIC_ACQUIRE) != 0;
}

static inline void fl_cancel_request(volatile int *flag) {
    __atomic_store_n(flag, 1, __ATOMIC_RELEASE);
}

#endif
