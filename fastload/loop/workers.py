"""Worker processes that run user transforms, fed and drained through shared memory.

The loader's reader threads read a batch's raw bytes straight into a
worker's input segment (the engine writes into it like into any buffer);
the worker runs the transform on each sample (zero-copy views of that
segment) and packs the results into its output segment; only small
metadata (offsets, shapes, dtypes) crosses the pipe. The loader then runs
the collate kernel from the output segment into its pooled batch buffer, so
a batch is never pickled and never copied an extra time.

Segments (:mod:`fastload.loop.shared_memory`) are unlinked as soon as both sides
have mapped them.
Workers never run the engine, so they are started (``fork`` included) only
while no reader thread of the loader is alive.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastload.errors import WorkerError, WorkerTransformError
from fastload.loop.shared_memory import SHM_DIR, Segment
from fastload.loop.transform_result import sample_array

_POLL_S = 0.05


@dataclass(frozen=True)
class WorkerInfo:
    """What a transform can ask about the worker it runs in (``get_worker_info()``)."""

    id: int
    num_workers: int
    seed: int
    pid: int


_worker_info: WorkerInfo | None = None


def get_worker_info() -> WorkerInfo | None:
    """The current worker's id, count and seed; None outside fastload's worker processes."""
    return _worker_info


class _SampleError(Exception):
    def __init__(self, pos: int) -> None:
        super().__init__(pos)
        self.pos = pos


def _transform_all(
    inp: Segment,
    transform: Callable[[Any], Any],
    offsets: list[int],
    lengths: list[int],
    shape: tuple[int, ...] | None,
    dtype: str,
) -> list[np.ndarray]:
    """The transform of every sample (zero-copy views of the input segment)."""
    src = np.frombuffer(inp.mm, dtype=np.uint8)
    results = []
    for i, (o, n) in enumerate(zip(offsets, lengths, strict=True)):
        try:
            raw = src[o : o + n]
            r = sample_array(transform(raw if shape is None else raw.view(dtype).reshape(shape)))
        except Exception as exc:
            raise _SampleError(i) from exc
        results.append(r)
    return results


def _pack(out: Segment | None, results: list[np.ndarray]) -> tuple[Segment, str | None, list[Any]]:
    """Results back to back in the output segment (a larger new one when needed)."""
    starts = np.concatenate(([0], np.cumsum([r.nbytes for r in results]))).astype(int)
    new_name = None
    if out is None or out.nbytes < starts[-1]:
        if out is not None:
            out.close()
        out = Segment(int(starts[-1] * 5 // 4))  # headroom for the next batches
        new_name = out.name
    dst = np.frombuffer(out.mm, dtype=np.uint8)
    for r, s in zip(results, starts[:-1], strict=False):
        dst[s : s + r.nbytes] = r.reshape(-1).view(np.uint8)
    del dst
    return (
        out,
        new_name,
        [(int(s), r.shape, r.dtype.str) for r, s in zip(results, starts[:-1], strict=False)],
    )


def _worker_main(
    worker_id: int,
    num_workers: int,
    seed: int,
    transform: Callable[[Any], Any],
    conn: Any,
    input_name: str,
) -> None:
    global _worker_info
    # Independent, reproducible streams per worker for the usual random modules.
    np.random.seed(seed % 2**32)
    random.seed(seed)
    _worker_info = WorkerInfo(worker_id, num_workers, seed, os.getpid())
    inp = Segment(0, input_name)
    out: Segment | None = None
    conn.send(("ready", os.getpid()))
    while True:
        msg = conn.recv()
        if msg is None:
            break
        if msg[0] == "input":
            inp.close()
            inp = Segment(0, msg[1])
            conn.send(("ready", os.getpid()))
            continue
        _, batch, offsets, lengths, shape, dtype = msg
        try:
            out, new_name, meta = _pack(
                out, _transform_all(inp, transform, offsets, lengths, shape, dtype)
            )
            conn.send(("ok", batch, new_name, meta))
        except _SampleError as err:  # reported to the loader, which raises it
            exc = err.__cause__
            assert exc is not None
            conn.send(
                (
                    "error",
                    batch,
                    err.pos,
                    f"{type(exc).__name__}: {exc}",
                    "".join(traceback.format_exception(exc)),
                )
            )
        except Exception as exc:
            conn.send(("error", batch, -1, f"{type(exc).__name__}: {exc}", traceback.format_exc()))


class Worker:
    """One worker process, its pipe and its two segments (seen from the loader)."""

    def __init__(
        self,
        ctx: Any,
        worker_id: int,
        num_workers: int,
        seed: int,
        transform: Callable[[Any], Any],
        input_bytes: int,
    ) -> None:
        self.id = worker_id
        self.input = Segment(input_bytes)
        self.output: Segment | None = None
        self._seq = 0
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_worker_main,
            name=f"fastload-worker-{worker_id}",
            args=(worker_id, num_workers, seed, transform, child, self.input.name),
            daemon=True,
        )
        try:
            self.proc.start()
        except BaseException:
            self.conn.close()
            self.input.unlink()
            self.input.close()
            raise
        finally:
            child.close()
        self.pid = self.proc.pid

    def wait_ready(
        self, stopped: Callable[[], bool], deadline: tuple[float, float] | None = None
    ) -> None:
        """Wait for the worker's "ready"; ``deadline``: (time.monotonic() limit, the timeout it came from)."""
        while True:
            reply = self._recv(
                stopped, "starting" if self._seq == 0 else "mapping its input", deadline
            )
            if reply[0] == "ok" and reply[2] is not None:
                self._attach_output(reply[2])
            if reply[0] == "ready":
                break
        self.input.unlink()  # both sides have it mapped now

    def _recv(
        self, stopped: Callable[[], bool], doing: str, deadline: tuple[float, float] | None = None
    ) -> Any:
        while not self.conn.poll(_POLL_S):
            if not self.proc.is_alive():
                self._died(doing)
            if stopped():
                raise WorkerError(f"fastload worker {self.id} (pid {self.pid}): loader stopped")
            if deadline is not None and time.monotonic() > deadline[0]:
                raise TimeoutError(
                    f"fastload worker {self.id} (pid {self.pid}) not ready after {deadline[1]:g} s "
                    f"(timeout_seconds) while {doing}"
                )
        try:
            return self.conn.recv()
        except (
            EOFError,
            ConnectionResetError,
        ):  # a duplex pipe is a socket: a killed peer may reset it
            self.proc.join(1.0)
            self._died(doing)

    def _send(self, msg: Any, doing: str) -> None:
        try:
            self.conn.send(msg)
        except (BrokenPipeError, ConnectionResetError):  # it died while idle: say who and how
            self._died(doing)

    def _died(self, doing: str) -> None:
        self.proc.join(1.0)
        code = self.proc.exitcode
        how = (
            f"was killed by signal {-code}"
            if code is not None and code < 0
            else f"exited with code {code}"
        )
        raise WorkerError(f"fastload worker {self.id} (pid {self.pid}) {how} while {doing}")

    def input_view(self, nbytes: int, stopped: Callable[[], bool]) -> memoryview:
        """A writable view of at least ``nbytes`` of the input segment (grown when needed)."""
        if self.input.nbytes < nbytes:
            self.input.close()
            self.input = Segment(nbytes * 5 // 4)
            self._send(
                ("input", self.input.name), "waiting for work (before its input segment grew)"
            )
            self.wait_ready(stopped)
        return memoryview(self.input.mm)[:nbytes]

    def run(
        self,
        batch: int,
        offsets: np.ndarray,
        lengths: np.ndarray,
        shape: tuple[int, ...] | None,
        dtype: np.dtype,
        stopped: Callable[[], bool],
        describe: Callable[[int], str] = lambda pos: f"sample at position {pos}",
    ) -> list[np.ndarray]:
        """Transform one batch; the samples returned are views of the output segment.
        ``describe(pos)`` names the batch's ``pos``-th sample in a transform error."""
        self._seq += 1
        self._send(
            ("batch", self._seq, offsets.tolist(), lengths.tolist(), shape, dtype.str),
            f"waiting for work (before batch {batch} was sent to it)",
        )
        while True:
            reply = self._recv(stopped, f"transforming batch {batch}")
            if reply[0] == "ok" and reply[2] is not None:
                self._attach_output(reply[2])
            if reply[0] in ("ok", "error") and reply[1] == self._seq:
                break  # older replies belong to a batch whose reader was stopped
        if reply[0] == "error":
            _, _, pos, what, tb = reply
            if pos < 0:
                raise WorkerError(
                    f"fastload worker {self.id} (pid {self.pid}): packing the results of batch "
                    f"{batch} failed: {what}\n--- worker traceback ---\n{tb}"
                )
            raise WorkerTransformError(
                f"fastload worker {self.id} (pid {self.pid}): the transform failed on {describe(pos)}, "
                f"position {pos} of batch {batch}: {what}\n--- worker traceback ---\n{tb}"
            )
        assert self.output is not None
        buf = np.frombuffer(self.output.mm, dtype=np.uint8)
        out = []
        for start, shp, dt in reply[3]:
            d = np.dtype(dt)
            n = int(np.prod(shp, dtype=np.int64)) * d.itemsize
            out.append(buf[start : start + n].view(d).reshape(shp))
        return out

    def _attach_output(self, name: str) -> None:
        if self.output is not None:
            self.output.close()
        self.output = Segment(0, name)
        self.output.unlink()

    def stop(self, timeout: float = 1.0) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout)
        self.conn.close()
        self.proc.close()
        # A worker killed between creating a segment and reporting it leaves a name behind.
        prefix = f"fastload-{self.pid}-"
        for name in os.listdir(SHM_DIR):
            if name.startswith(prefix):
                Segment.remove(name)
        self.input.unlink()
        self.input.close()
        if self.output is not None:
            self.output.unlink()
            self.output.close()


class WorkerPool:
    """``num_workers`` processes started with one multiprocessing context.

    Seeds: ``SeedSequence(seed).spawn(num_workers)``, so every worker has its
    own stream and a rerun with the same seed repeats every stream.
    """

    def __init__(
        self,
        num_workers: int,
        context: str,
        transform: Callable[[Any], Any],
        seed: int | list[int],
        input_bytes: int,
        timeout: float | None = None,
    ) -> None:
        if threading.active_count() > 1 and context == "fork":
            import warnings

            warnings.warn(
                f"fastload: forking workers while {threading.active_count() - 1} other thread(s) "
                "are alive; a child may inherit a held lock. Prefer 'spawn' or 'forkserver'.",
                RuntimeWarning,
                stacklevel=3,
            )
        self.context = context
        ctx = multiprocessing.get_context(context)
        seqs = np.random.SeedSequence(seed).spawn(num_workers)
        self.seeds = [int(s.generate_state(1, np.uint64)[0]) for s in seqs]
        self.workers: list[Worker] = []
        self._idle: list[Worker] = []
        self._cond = threading.Condition()
        try:
            for i in range(num_workers):
                self.workers.append(
                    Worker(ctx, i, num_workers, self.seeds[i], transform, input_bytes)
                )
            # Started in parallel, so one deadline for all (a hung start must not hang iter()).
            deadline = None if timeout is None else (time.monotonic() + timeout, timeout)
            for w in self.workers:
                w.wait_ready(lambda: False, deadline)
        except BaseException:
            self.close()
            raise
        self._idle = list(self.workers)
        self._turn = list(range(num_workers))

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    def start_epoch(self) -> None:
        """Job ``j`` of an epoch goes to worker ``j % num_workers``, in order, as in torch:
        which sample meets which random stream does not depend on thread timing."""
        with self._cond:
            self._turn = list(range(len(self.workers)))

    def checkout(self, job: int, stopped: Callable[[], bool]) -> Worker:
        """The worker of job ``job`` (the epoch's ``job``-th batch), once it is that job's turn."""
        w = self.workers[job % len(self.workers)]
        with self._cond:
            while not (w in self._idle and self._turn[w.id] == job):
                if stopped():
                    raise WorkerError("loader stopped")
                self._cond.wait(_POLL_S)
            self._idle.remove(w)
            return w

    def checkin(self, worker: Worker, job: int) -> None:
        with self._cond:
            self._idle.append(worker)
            self._turn[worker.id] = job + len(self.workers)
            self._cond.notify_all()

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        self.workers.clear()
        self._idle.clear()
