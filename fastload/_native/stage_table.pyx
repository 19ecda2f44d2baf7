# distutils: sources = csrc/fl_stage_table.c csrc/fl_clock.c
"""Bridge to csrc/fl_stage_table.c: the loader's always-on stage timing.

Always on, so a batch must cost well under a microsecond of it: a :class:`StageClock`
keeps its laps in C doubles (``lap`` is one call, no Python float or list per lap) and a
:class:`StageTable` stores each batch's row in a C table whose totals grow as rows come;
an epoch's end only runs the percentile selection in C.
"""

cimport cython
from libc.math cimport isfinite
from libc.stdint cimport int64_t

from fastload._native.includes.fl cimport (
    FL_OK, FL_STAGE_BATCH_COLUMNS, FL_STAGE_COLUMNS, fl_clock_now, fl_clock_uses_tsc,
    fl_stage_table, fl_stage_table_free,
    fl_stage_table_init, fl_stage_table_made, fl_stage_table_percentiles, fl_stage_table_taken,
    fl_status,
)
from fastload.errors import raise_native_error as _raise_native_error

# Stages in the order a batch meets them (the C table's columns, then the consumer's).
BATCH_STAGES = ("plan", "read", "decode", "transform", "collate", "output")
CONSUMER_STAGES = ("wait", "step")
assert len(BATCH_STAGES) == FL_STAGE_BATCH_COLUMNS
assert len(BATCH_STAGES) + len(CONSUMER_STAGES) == FL_STAGE_COLUMNS


cdef inline double _now() noexcept nogil:
    # CLOCK_MONOTONIC's time line, what time.perf_counter() reads on Linux, so laps, the
    # consumer's times and the trace share one; read from the TSC where the kernel keeps
    # time with it (csrc/fl_clock.h: a third of clock_gettime's cost)
    return fl_clock_now()


def now():
    """The clock laps are taken on, in seconds (time.perf_counter's time line, within a
    few microseconds)."""
    return _now()


def clock_uses_tsc():
    """Whether readings come from the CPU's time-stamp counter now (else clock_gettime)."""
    return bool(fl_clock_uses_tsc())



cdef int _check(fl_status st, int64_t k) except -1:
    if st != FL_OK:
        _raise_native_error(st, "stage table", message=f"cannot record batch {k}")
    return 0


@cython.freelist(16)  # one per batch: reuse the memory of the last ones
cdef class StageClock:
    """One batch's stage durations: ``lap(stage)`` charges the time since the last lap.

    ``row`` gives seconds per BATCH_STAGES; ``spans``, kept only while a trace records
    (``traced``), the (stage, start, end) of each lap."""

    cdef double _row[FL_STAGE_BATCH_COLUMNS]
    cdef public double start
    cdef public double last
    cdef public object spans

    def __cinit__(self, double start=-1.0, int lap=-1, bint traced=False):
        """``start`` (>= 0, this clock's time line): when the batch began, if that was
        read already (the consumer's ``next()``: its call time starts the batch it makes);
        otherwise now. ``lap`` (a stage index): the time since ``start`` belongs to that
        stage (made after the stage, the clock takes its first lap in the same call)."""
        cdef int i
        for i in range(FL_STAGE_BATCH_COLUMNS):
            self._row[i] = 0.0
        self.start = self.last = start if isfinite(start) and start >= 0 else _now()
        self.spans = [] if traced else None
        if lap >= 0:
            self._lap(lap)

    cdef double _lap(self, int stage) except -1.0:
        if stage < 0 or stage >= FL_STAGE_BATCH_COLUMNS:
            raise ValueError(f"stage={stage} is invalid: must be an index into {BATCH_STAGES}")
        cdef double t = _now()
        if t < self.last:  # two readings a few ns apart across an anchor: no negative lap
            t = self.last
        cdef double seconds = t - self.last
        self._row[stage] += seconds
        if self.spans is not None:
            self.spans.append((BATCH_STAGES[stage], self.last, t))
        self.last = t
        return seconds

    # one positional argument, no keywords: a METH_O call, the cheapest Python call there
    # is (a lap is taken several times per batch, always on)
    @cython.always_allow_keywords(False)
    def lap(self, stage):
        """Charge the time since the last lap to ``stage`` (an index into BATCH_STAGES);
        returns those seconds."""
        return self._lap(stage)

    @cython.always_allow_keywords(False)
    def restart(self, start):
        """This clock, reset for the next batch as ``StageClock(start, 0)`` would make it:
        started at ``start``, planned since (its first lap, to now, is the plan stage). No
        new object, one argument (a METH_O call): the consumer's thread makes its batches
        one at a time, each restarting the epoch's clock."""
        cdef int i
        for i in range(FL_STAGE_BATCH_COLUMNS):
            self._row[i] = 0.0
        cdef double t0 = start
        self.start = self.last = t0 if isfinite(t0) and t0 >= 0 else _now()
        if self.spans is not None:
            self.spans = []
        self._lap(0)
        return self

    cpdef skip(self):
        """Start the next stage now (time since the last lap belongs to no stage)."""
        self.last = _now()

    @property
    def row(self):
        return [self._row[i] for i in range(FL_STAGE_BATCH_COLUMNS)]

    @row.setter
    def row(self, seconds):
        """Seconds per BATCH_STAGES, all of them (a row measured elsewhere)."""
        values = [float(x) for x in seconds]
        if not all(isfinite(x) and x >= 0 for x in values):
            raise ValueError(f"row={values!r} is invalid: seconds must be finite and >= 0")
        if len(values) != FL_STAGE_BATCH_COLUMNS:
            raise ValueError(
                f"row={values!r} is invalid: needs one value per stage of {BATCH_STAGES}"
            )
        for i in range(FL_STAGE_BATCH_COLUMNS):
            self._row[i] = values[i]


cdef class StageTable:
    """Every batch's row of one epoch: stage seconds, bytes, samples, the consumer's wait
    and step. Reader threads and the consumer record without a lock: each call runs under
    the GIL, start to end."""

    cdef fl_stage_table t
    cdef public double last_return  # when next() last returned (the consumer's step starts)

    def __cinit__(self, int64_t capacity=1):
        if fl_stage_table_init(&self.t, capacity) != FL_OK:
            raise MemoryError(f"stage table: cannot hold {capacity} batches")
        self.last_return = -1.0

    def __dealloc__(self):
        fl_stage_table_free(&self.t)

    def made(self, int64_t k, StageClock clock not None, int64_t nbytes, int64_t samples,
             int last_stage=-1):
        """Batch ``k`` is made: its clock's row, its bytes and samples. ``last_stage`` (a
        stage index): first charge the time since the clock's last lap to it (the batch's
        last lap and its record in one call)."""
        if last_stage >= 0:
            clock._lap(last_stage)
        _check(fl_stage_table_made(&self.t, k, clock._row, nbytes, samples), k)

    def made_and_taken(self, int64_t k, StageClock clock not None, int64_t nbytes,
                       int64_t samples):
        """Batch ``k``, made by the consumer itself in ``next()``, whose call started
        ``clock``: its output lap, its row and the consumer's wait (``clock.start`` to now),
        in one call (the inline path's whole record; fewer arguments than ``made``)."""
        clock._lap(FL_STAGE_BATCH_COLUMNS - 1)
        _check(fl_stage_table_made(&self.t, k, clock._row, nbytes, samples), k)
        self._taken(k, clock.start, clock.last)

    def taken(self, int64_t k, double asked, double got):
        """The consumer asked for batch ``k`` at ``asked`` and got it at ``got``: its wait,
        and its step since the previous ``next()`` returned (0 for the first)."""
        if not (isfinite(asked) and isfinite(got)):
            raise ValueError(f"asked={asked!r}, got={got!r} is invalid: times must be finite")
        self._taken(k, asked, got)

    cdef int _taken(self, int64_t k, double asked, double got) except -1:
        # readings a few ns apart across a clock anchor may come out of order: never < 0
        if got < asked:
            got = asked
        cdef double step = 0.0 if self.last_return < 0 else asked - self.last_return
        if step < 0:
            step = 0.0
        _check(fl_stage_table_taken(&self.t, k, got - asked, step), k)
        self.last_return = got
        return 0

    @property
    def batches(self):
        """Batches made."""
        return self.t.made

    @property
    def samples(self):
        return self.t.samples

    @property
    def nbytes(self):
        return self.t.nbytes

    def totals(self):
        """Seconds per stage, summed over the epoch: {stage: seconds}."""
        names = BATCH_STAGES + CONSUMER_STAGES
        return {names[i]: self.t.totals[i] for i in range(FL_STAGE_COLUMNS)}

    def percentiles(self):
        """{stage: (p50, p99)} seconds per batch (0 for a stage no batch has)."""
        cdef double p50[FL_STAGE_COLUMNS]
        cdef double p99[FL_STAGE_COLUMNS]
        if fl_stage_table_percentiles(&self.t, p50, p99) != FL_OK:
            raise MemoryError("stage table: no memory for the percentiles")
        names = BATCH_STAGES + CONSUMER_STAGES
        return {names[i]: (p50[i], p99[i]) for i in range(FL_STAGE_COLUMNS)}
