"""When the consumer makes its own batches instead of taking them from reader threads.

Handing a finished batch from a reader thread to the consumer costs a condition
notify, a wake-up and GIL hand-offs between three threads: 40-110 us per batch on this
2-core machine, more than it takes to make a batch of 256 page-cached 16-byte records
(~30 us; ``asv_bench/benchmarks/bench_loader.py``, ``LoaderSmallRecords``). Below that
size, prefetching cannot hide anything worth the hand-off: the batch is made by Python
code that holds the GIL, and its native read is a few microseconds.

So an epoch whose batches turn out fast makes them on the consumer's thread, in
``next()``, and its reader threads wait; as soon as inline batches turn slow the
readers take over again. The decision is measured, batch by batch:

- only loaders whose batches are made by fastload's own code from local files through
  a plain :class:`~fastload.storage.engine.RangeEngine` qualify (:func:`can_inline`): no
  user transform, collate_fn, output stage, engine subclass, worker process, image
  decoding, remote source or block reader, and no ``timeout_seconds``: a batch made
  inside ``next()`` could only be bounded by the engine's deadline, which is checked
  between parts, so a read stuck in the kernel (a hung network mount) would block
  ``next()`` past it, where the reader threads let ``next()`` raise ``TimeoutError``;
- readers time each batch they make (wall time, so inflated by the GIL they share with
  the consumer): after ``TRY_AFTER`` batches in a row under ``READER_FAST_S`` the epoch
  tries inline;
- inline, the consumer times each batch with nothing else competing: one slower than
  ``SLOW_S``, or ``SLOW_IN_ROW`` in a row slower than ``INLINE_BELOW_S``, hands the
  epoch back to the readers, and the next try waits twice as long as the last (at most
  ``MAX_TRY_AFTER`` batches).
"""

from __future__ import annotations

from typing import Any

from fastload.loop.output import NumpyOutput
from fastload.storage.engine import RangeEngine

INLINE_BELOW_S = 100e-6  # an inline batch under this costs less than a hand-off (measured)
SLOW_S = 1e-3  # one inline batch this slow: the data is not the fast kind (cold, large)
SLOW_IN_ROW = 3
READER_FAST_S = 1e-3  # a reader's batch under this (wall, GIL shared): worth a try inline
TRY_AFTER = 4
MAX_TRY_AFTER = 64  # a burst of load (preemption) must not end the tries for the epoch

# The batch makers of fastload.loop.loader that run no user code: engine reads and the
# collate kernel only.
OWN_BATCH_MAKERS = frozenset({"_batch_as_read", "_batch_collated", "_batch_ragged"})


def can_inline(loader: Any) -> bool:
    """Whether this loader's batches may be made on the consumer's thread (see the notes)."""
    stage = loader.output_stage
    own_output = type(stage) is NumpyOutput or (
        type(stage).__name__ == "TorchOutput"
        and type(stage).__module__ == "fastload.batch.torch_output"
        and stage.device is None  # a device copy is worth overlapping with the step
    )
    return (
        own_output
        and getattr(loader._make_batch, "__name__", "") in OWN_BATCH_MAKERS
        and not loader.use_workers
        and loader.config.timeout_seconds is None
        and loader._reader is loader.engine
        and type(loader.engine) is RangeEngine
        and all(s.is_local for s in loader.dataset.sources)
    )


class InlinePolicy:
    """One epoch's choice between reader threads and inline batches; the epoch calls it
    under its lock."""

    __slots__ = ("allowed", "active", "fast_in_row", "slow_in_row", "try_after", "batches")

    def __init__(self, allowed: bool) -> None:
        self.allowed = allowed
        self.active = False  # True: next() makes the batches, the readers wait
        self.fast_in_row = 0
        self.slow_in_row = 0
        self.try_after = TRY_AFTER
        self.batches = 0  # made inline this epoch

    def reader_made(self, seconds: float) -> None:
        """A reader thread made a batch in ``seconds`` (wall)."""
        if not self.allowed or self.active:
            return
        self.fast_in_row = self.fast_in_row + 1 if seconds < READER_FAST_S else 0
        if self.fast_in_row >= self.try_after:
            self.active = True
            self.slow_in_row = 0

    def inline_made(self, seconds: float) -> bool:
        """The consumer made a batch in ``seconds``; True when the readers must take over."""
        self.batches += 1
        self.slow_in_row = self.slow_in_row + 1 if seconds >= INLINE_BELOW_S else 0
        if seconds < SLOW_S and self.slow_in_row < SLOW_IN_ROW:
            return False
        self.active = False
        self.fast_in_row = 0
        self.try_after = min(2 * self.try_after, MAX_TRY_AFTER)  # each failed try waits longer
        return True
