"""One epoch of a DataLoader: its reader threads, the batches they made, and its end.

Reader threads take the epoch's batches in turn and hand each to the loader's
``produce(k, job, epoch)``; ``next()`` returns them in the sampler's order
(``loading_mode="sequential"``) or as they complete (``"async_pool"``). Batches that
turn out faster to make than to hand over are made by ``next()`` itself while the
readers wait (fastload.loop.inline_batches).
"""

from __future__ import annotations

import operator
import os
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from fastload._native.file_reader import CancelToken
from fastload._native.stage_table import StageClock, now
from fastload.loop.batch_threads import hold_thread_budget, reader_thread_budget
from fastload.loop.inline_batches import InlinePolicy, can_inline

if TYPE_CHECKING:
    from fastload.loop.loader import DataLoader

JOIN_S = 10.0  # how long ending an epoch waits for its reader threads, all together
TIMEOUT_GRACE_S = 0.5  # the same, when next() timed out: the error is due at the timeout


class BatchSet:
    """A set of an epoch's batch numbers, held as a bitmap: one byte per batch (10**7
    batches take 10 MB, where a set of ints takes about 500 MB)."""

    def __init__(self, batches: Iterable[int] = ()) -> None:
        ks = np.fromiter((operator.index(k) for k in batches), dtype=np.int64)
        if len(ks) and ks.min() < 0:
            raise ValueError(f"batch numbers must be >= 0, got {int(ks.min())}")
        self._mask = np.zeros(int(ks.max()) + 1 if len(ks) else 0, dtype=bool)
        self._mask[ks] = True
        self._count = int(np.count_nonzero(self._mask))

    def reserve(self, n: int) -> None:
        """Room for batches 0..n-1, so that ``add`` never grows the bitmap in an epoch."""
        if len(self._mask) < n:
            self._mask = np.concatenate([self._mask, np.zeros(n - len(self._mask), dtype=bool)])

    def add(self, k: int) -> None:
        if k >= len(self._mask):
            self.reserve(max(k + 1, 2 * len(self._mask)))
        if not self._mask[k]:
            self._mask[k] = True
            self._count += 1

    def __contains__(self, k: object) -> bool:
        return bool(isinstance(k, int | np.integer) and 0 <= k < len(self._mask) and self._mask[k])

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[int]:
        return iter(self.tolist())

    def tolist(self) -> list[int]:
        """The batch numbers, sorted."""
        return np.flatnonzero(self._mask).tolist()

    def mask(self, n: int) -> np.ndarray:
        """A bool array of ``n`` entries: True for the batches in the set."""
        self.reserve(n)
        return self._mask[:n]

    def missing(self, n: int) -> np.ndarray:
        """Batches 0..n-1 not in the set, in order (int32 when that holds them: half the memory)."""
        dtype = np.int32 if n <= np.iinfo(np.int32).max else np.int64
        if self._count == 0:
            return np.arange(n, dtype=dtype)
        return np.flatnonzero(~self.mask(n)).astype(dtype)


class Progress:
    """Which batches of an epoch were handed out (for state_dict)."""

    def __init__(self, epoch: int, done: Iterable[int] = ()) -> None:
        self.epoch = epoch
        self.done = done if isinstance(done, BatchSet) else BatchSet(done)
        self.finished = False


class Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Epoch:
    """One pass: reader threads, the results they produced, and how to stop them.

    Threads reference this object, never the iterator the caller holds, so
    dropping the iterator (a ``break``, an exception) finalises it and stops them.
    """

    def __init__(self, loader: DataLoader, progress: Progress) -> None:
        cfg = loader.config
        self.loader = loader
        self.pid = os.getpid()
        self.progress = progress
        self.order = np.asarray(loader.sampler.indices(progress.epoch), dtype=np.int64)
        self.slices = loader.epoch_slices(progress.epoch, len(self.order))
        progress.done.reserve(len(self.slices))
        # The batches to run, in order; todo[:next_out] are those handed out (async: in
        # completion order). An array, not a list: no Python object per batch.
        self.todo = progress.done.missing(len(self.slices))
        self.in_order = cfg.loading_mode == "sequential"
        self.timeout = cfg.timeout_seconds
        self.cond = threading.Condition()
        self.results: dict[int, Any] = {}
        self.status: dict[int, object] = {}  # batch -> what it is doing (str() says it)
        self.next_job = 0
        self.next_out = 0
        self.ahead = 0
        self.stop = False
        self.failed = False
        self.ended_by: str | None = (
            None  # set when something else ended the epoch under its iterator
        )
        self.cancel = CancelToken()
        self.ended = threading.Event()  # set once shutdown() has ended the epoch
        self.join_left = JOIN_S  # how long shutdown() may still wait for the readers
        self.ending: int | None = None  # the thread whose shutdown() ends the epoch
        self.stats = loader.begin_epoch_stats(
            progress.epoch, len(self.todo)
        )  # before any reader runs
        self.debug_reads = loader.observer.debug_reads  # set as the epoch's stats began
        depth = cfg.prefetch if not loader.use_workers else max(cfg.prefetch, cfg.num_workers)
        self.slots = threading.Semaphore(depth)
        self.inline = InlinePolicy(can_inline(loader))
        # the stage clock of the batches next() makes, restarted for each (one at a time)
        self.inline_clock = StageClock()
        n = min(depth, len(self.todo))
        self.thread_budget = reader_thread_budget(n)  # per reader (fastload.loop.batch_threads)
        self.threads = [
            threading.Thread(target=self._run, name=f"fastload-reader-{i}", daemon=True)
            for i in range(n)
        ]
        for t in self.threads:
            t.start()

    def stopped(self) -> bool:
        return self.stop

    def _run(self) -> None:
        hold_thread_budget(self.thread_budget)
        while True:
            self.slots.acquire()
            with self.cond:
                while self.inline.active and not self.stop:  # next() makes the batches
                    self.cond.wait()
                if self.stop or self.next_job >= len(self.todo):
                    self.slots.release()
                    return
                job = self.next_job
                k = int(self.todo[job])
                self.next_job += 1
                self.ahead += 1
                counters = self.loader._counters
                counters["max_read_ahead"] = max(counters["max_read_ahead"], self.ahead)
            began = time.perf_counter()
            try:
                res: Any = self.loader.produce(k, job, self)
            except BaseException as exc:
                res = Failure(exc)
            made = time.perf_counter() - began
            with self.cond:
                self.inline.reader_made(made)
                self.results[k] = res
                self.status.pop(k, None)
                self.cond.notify_all()

    def next(self) -> Any:
        if self.pid != os.getpid():
            # a copy inherited through os.fork(): the threads and workers that make its
            # batches are the parent's, so waiting would wait forever (and its lock may be
            # held by one of them: it is not taken here)
            if not self.stop:
                self.shutdown(
                    ended_by=f"os.fork(): it belongs to process {self.pid}, whose reader "
                    "threads and workers make its batches; start a new epoch in this process "
                    "with iter(loader)"
                )
            self._raise_if_stopped()
        if self.next_out >= len(self.todo):
            self.finish(failed=False)
            raise StopIteration
        asked = now()  # the stage clock's time line (perf_counter's), read in C: cheaper
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        late: TimeoutError | None = None
        own = -1  # the job this call makes itself (inline), if any
        with self.cond:
            while True:
                self._raise_if_stopped()
                k = self._ready()
                if k is not None:
                    res = self.results.pop(k)
                    if not self.in_order:  # move k to the handed-out part, todo[:next_out]
                        window = self.todo[self.next_out : self.next_job]
                        i = self.next_out + int(np.flatnonzero(window == k)[0])
                        self.todo[i], self.todo[self.next_out] = self.todo[self.next_out], k
                    self.next_out += 1
                    self.ahead -= 1
                    break
                if self.inline.active and self.next_job == self.next_out:  # none in flight
                    own = self.next_job
                    k = int(self.todo[own])
                    self.next_job += 1
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    late = self._timeout_error()
                    break
                self.cond.wait(left)
        if late is not None:
            # the batch's reader may be stuck for good (a transform that never returns):
            # the error is due now, a later close() or iter() waits for the readers again
            self.finish(failed=True, join_s=min(TIMEOUT_GRACE_S, JOIN_S))
            raise late
        assert k is not None  # the loop ends with a ready batch, or a timeout raised above
        if own >= 0:
            res = self._make_inline(k, own, asked)
        else:
            self._taken(k, asked, now())
            self.slots.release()
        if isinstance(res, Failure):
            self.finish(failed=True)
            raise res.exc
        self.progress.done.add(k)
        if self.next_out >= len(self.todo):
            self.finish(failed=False)
        return res

    def _make_inline(self, k: int, job: int, asked: float) -> Any:
        """Batch ``k`` made on the consumer's thread (its ``job`` claimed under the lock)."""
        # Unless a trace or a bar watches, the batch's clock starts at the call and its
        # record takes the consumer's wait too, ending at the call's end (its last lap):
        # the timing reads the clock no more often than the inline policy needs anyway.
        recorded = not self.loader.observer.watching
        try:
            try:
                res: Any = self.loader.produce(k, job, self, asked if recorded else -1.0)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                res = Failure(exc)
                recorded = False
            got = self.inline_clock.last if recorded else now()  # the record's time
            with self.cond:
                if self.inline.inline_made(got - asked):
                    self.cond.notify_all()  # slow: the readers take over from the next batch
                self.loader._counters["inline_batches"] += 1
                self.status.pop(k, None)  # as a reader does: one entry per batch in flight
                self._raise_if_stopped()  # ended (close(), a newer iter()) while it was made
                self.next_out += 1  # todo[next_out] is k: nothing else was in flight
        finally:
            if self.next_out == job:
                # Not handed out (Ctrl-C anywhere from the claim to here, or the epoch
                # ended): give the batch back (the readers are parked, nothing was claimed
                # after it), so the epoch goes on from it, as it does after Ctrl-C while
                # next() waits for a reader; made again, its record replaces this one
                with self.cond:
                    self.status.pop(k, None)
                    if self.next_out == job and self.next_job == job + 1:
                        self.next_job = job
        if not recorded:
            self._taken(k, asked, got)
        return res

    def _taken(self, k: int, asked: float, got: float) -> None:
        observer = self.loader.observer
        if observer.watching:  # a trace or a bar wants each batch
            observer.batch_taken(self.stats, k, asked, got)
        else:  # the always-on path: one native call
            self.stats.table.taken(k, asked, got)

    def _raise_if_stopped(self) -> None:
        if self.stop:
            if self.ended_by is not None:  # not a silent end: the rest of the epoch is lost
                raise RuntimeError(
                    f"fastload: this iterator of epoch {self.progress.epoch} was "
                    f"ended by {self.ended_by}"
                )
            raise StopIteration

    def _timeout_error(self) -> TimeoutError:
        k = int(self.todo[self.next_out])  # in order: the next batch; async: the oldest in flight
        what = "batch" if self.in_order else "any batch; the oldest in flight is batch"
        waited = self.status.get(k, "queued: no reader had started it")
        return TimeoutError(
            f"fastload: {what} {k} of epoch {self.progress.epoch} not ready after {self.timeout:g} s "
            f"(timeout_seconds); it was {waited}"
        )

    def _ready(self) -> int | None:
        if self.in_order:
            k = int(self.todo[self.next_out])
            return k if k in self.results else None
        for k in self.todo[self.next_out : self.next_job].tolist():  # at most the read-ahead
            if k in self.results:
                return k
        return None

    def finish(self, failed: bool, join_s: float | None = None) -> None:
        if not failed:
            self.progress.finished = True
        self.shutdown(failed, join_s=join_s)

    def shutdown(
        self,
        failed: bool = False,
        ended_by: str | None = None,
        join_s: float | None = None,
        rejoin: bool = False,
    ) -> None:
        """Stop the readers; ``failed``: after an error (workers are then restarted);
        ``ended_by``: what ended the epoch while its iterator may still be used.

        The first call ends the epoch (the loader's ``end_epoch``) once its readers
        stopped, waiting ``join_s`` at most for all of them together (a reader stuck in a
        transform that never returns cannot be stopped: it must not cost that wait once
        per reader, nor hold back the TimeoutError that names it). A later call, from any
        thread, returns once the first one has ended the epoch, so that the loader's next
        epoch never overlaps this one's end; with ``rejoin`` (closing the loader) it waits
        again for readers still running. An epoch waits ``JOIN_S`` at most in all."""
        if os.getpid() != self.pid:  # a copy inherited through os.fork(): its threads, lock
            self.stop, self.ended_by = True, ended_by  # holders and workers are the parent's
            return
        with self.cond:
            first = not self.stop
            if first:
                self.stop = True
                self.failed = failed
                self.ended_by = ended_by
                self.ending = threading.get_ident()
                self.cond.notify_all()
        if not first:
            if not self.ended.is_set() and self.ending == threading.get_ident():
                return  # a finaliser run (by gc) within the first call, on its thread
            self.ended.wait(3 * JOIN_S)  # the first call's waits are bounded: so is this
            # at interpreter exit, readers left running are daemon threads that go with it
            if rejoin and not getattr(threading, "_SHUTTING_DOWN", False):
                self._join(JOIN_S)
            return
        try:
            self.cancel.cancel()
            for _ in self.threads:
                self.slots.release()
            self._join(JOIN_S if join_s is None else join_s)
            self.results.clear()
            self.loader.end_epoch(failed)
        finally:
            self.ended.set()

    def _join(self, seconds: float) -> None:
        """Wait for the readers: ``seconds`` at most for all of them together, and at most
        what is left of the epoch's ``JOIN_S`` over all calls."""
        me = threading.current_thread()
        began = time.monotonic()
        deadline = began + min(seconds, self.join_left)
        for t in self.threads:
            if t is not me and t.is_alive():
                t.join(max(0.0, deadline - time.monotonic()))
        self.join_left = max(0.0, self.join_left - (time.monotonic() - began))


class EpochIterator:
    """What ``iter(loader)`` returns; dropping it stops the epoch's threads."""

    def __init__(self, epoch: Epoch) -> None:
        self._epoch = epoch
        self._finalizer = weakref.finalize(self, epoch.shutdown)

    def __iter__(self) -> EpochIterator:
        return self

    def __next__(self) -> Any:
        return self._epoch.next()

    def close(self) -> None:
        self._finalizer()
