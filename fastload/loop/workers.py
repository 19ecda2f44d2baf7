"""Worker processes that run user transforms, fed and drained through shared memory.

The loader's reader threads read a batch's raw bytes straight into a
worker's input segment (the engine writes into it like into any buffer);
the worker runs the transform on each sample (zero-copy views of that
segment) and packs the results into its output segment; only small
metadata (offsets, shapes, dtypes) crosses the pipe. The loader then runs
the collate kernel from the output segment into its pooled batch buffer, so
a batch is never pickled and never copied an extra time.

Segments (:class:`fastload.loop.shared_memory.SharedBuffer`) have no name: each is handed
to the other side as a file descriptor over the worker's Unix socket, so nothing is ever
left in /dev/shm, whatever kills whom. Workers die with the loader's process and are never
touched from a process forked off it (:mod:`fastload.loop.worker_lifetime`); what goes
wrong at their start is said with the fix (:mod:`fastload.loop.worker_pitfalls`).
Workers never run the engine, so they are started (``fork`` included) only
while no reader thread of the loader is alive.

The pipe's protocol, loader -> worker: ``("input", nbytes)`` + a descriptor (a new input
segment; the worker answers ``("ready", pid)``), ``("batch", seq, offsets, lengths, shape,
dtype)`` (answered ``("ok", seq, new_output_nbytes | None, meta)``, + a descriptor when a
new output segment was made, or ``("error", seq, pos, what, traceback)``), ``None`` (exit).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import random
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.reduction import recv_handle, send_handle
from typing import Any

import numpy as np

from fastload.errors import WorkerError, WorkerTransformError, as_original
from fastload.loop.shared_memory import SharedBuffer
from fastload.loop.transform_result import sample_array
from fastload.loop.worker_lifetime import (
    close_inherited,
    die_with_parent,
    parent_gone,
    track_pool,
    want_death_signal,
)
from fastload.loop.worker_pitfalls import (
    check_transform_reaches_workers,
    refuse_start_while_bootstrapping,
    start_failure_hint,
)

_POLL_S = 0.05
STOP_S = 1.0  # how long stopping workers waits at each step (asked, SIGTERM, SIGKILL)
_PARENT_CHECK_S = 0.25  # how often an idle worker checks that the loader's process lives


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
    inp: SharedBuffer,
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


def _pack(
    out: SharedBuffer | None, results: list[np.ndarray]
) -> tuple[SharedBuffer, bool, list[Any]]:
    """Results back to back in the output segment (a larger new one when needed: ``True``)."""
    starts = np.concatenate(([0], np.cumsum([r.nbytes for r in results]))).astype(int)
    new = out is None or out.nbytes < starts[-1]
    if out is None or new:
        if out is not None:
            out.close()
        out = SharedBuffer(int(starts[-1] * 5 // 4))  # headroom for the next batches
    dst = np.frombuffer(out.mm, dtype=np.uint8)
    for r, s in zip(results, starts[:-1], strict=False):
        dst[s : s + r.nbytes] = r.reshape(-1).view(np.uint8)
    del dst
    return (
        out,
        new,
        [(int(s), r.shape, r.dtype.str) for r, s in zip(results, starts[:-1], strict=False)],
    )


def _picklable_type(exc: BaseException) -> type[BaseException] | None:
    """The exception's class when it can cross the pipe (by reference), else None."""
    try:
        pickle.dumps(type(exc))
    except Exception:
        return None
    return type(exc)


def _set_torch_worker_info(worker_id: int, num_workers: int, seed: int) -> None:
    """torch.utils.data.get_worker_info() and torch's seed, as in a torch DataLoader worker."""
    import torch
    from torch.utils.data._utils import worker as torch_worker

    torch.manual_seed(seed % 2**63)
    torch_worker._worker_info = torch_worker.WorkerInfo(
        id=worker_id,
        num_workers=num_workers,
        seed=seed % 2**63,
        dataset=None,  # type: ignore[arg-type]  # fastload workers run transforms, not a dataset
    )


def _worker_main(
    worker_id: int,
    num_workers: int,
    seed: int,
    transform: Callable[[Any], Any],
    conn: Any,
    parent_pid: int | None,
    death_signal: bool,
    inherited: list[int],
    init_fn: Callable[[int], Any] | None = None,
    torch_info: bool = False,
) -> None:
    parent = os.getppid() if parent_pid is None else parent_pid  # forkserver: the server
    die_with_parent(parent, death_signal)
    close_inherited(inherited)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the loader's to handle
    try:
        _serve(worker_id, num_workers, seed, transform, conn, parent, init_fn, torch_info)
    except (EOFError, OSError):  # the loader closed the pipe or is gone: nothing to report to
        pass


def _serve(
    worker_id: int,
    num_workers: int,
    seed: int,
    transform: Callable[[Any], Any],
    conn: Any,
    parent: int,
    init_fn: Callable[[int], Any] | None,
    torch_info: bool,
) -> None:
    global _worker_info
    # Independent, reproducible streams per worker for the usual random modules.
    np.random.seed(seed % 2**32)
    random.seed(seed)
    _worker_info = WorkerInfo(worker_id, num_workers, seed, os.getpid())
    inp: SharedBuffer | None = None
    out: SharedBuffer | None = None
    initialised = False
    while True:
        while not conn.poll(_PARENT_CHECK_S):
            if parent_gone(parent):
                return
        msg = conn.recv()
        if msg is None:
            break
        if msg[0] == "input":
            if inp is not None:
                inp.close()
            inp = SharedBuffer(fd=recv_handle(conn))
            inp.close_fd()
            if not initialised:  # after the first hand-over: the loader then waits for a reply
                initialised = True
                try:
                    if torch_info:
                        _set_torch_worker_info(worker_id, num_workers, seed)
                    if init_fn is not None:
                        init_fn(worker_id)  # torch's worker_init_fn
                except Exception as exc:
                    tb = "".join(traceback.format_exception(exc))
                    conn.send(
                        ("init_failed", f"{type(exc).__name__}: {exc}", tb, _picklable_type(exc))
                    )
                    return
            conn.send(("ready", os.getpid()))
            continue
        _, batch, offsets, lengths, shape, dtype = msg
        assert inp is not None  # the loader sends an input segment first
        new = False
        try:
            out, new, meta = _pack(
                out, _transform_all(inp, transform, offsets, lengths, shape, dtype)
            )
            reply: tuple[Any, ...] = ("ok", batch, out.nbytes if new else None, meta)
        except _SampleError as err:  # reported to the loader, which raises it
            cause = err.__cause__
            assert cause is not None
            what = f"{type(cause).__name__}: {cause}"
            tb = "".join(traceback.format_exception(cause))
            reply = ("error", batch, err.pos, what, tb, _picklable_type(cause))
        except Exception as exc:  # packing failed (no memory for the output segment ...)
            what = f"{type(exc).__name__}: {exc}"
            reply = ("error", batch, -1, what, traceback.format_exc(), _picklable_type(exc))
        conn.send(reply)
        if reply[0] == "ok" and new:
            assert out is not None and out.fd is not None
            send_handle(conn, out.fd, parent)
            out.close_fd()


def _signal_name(number: int) -> str:
    """`` (SIGKILL)`` for 9: what the number means, said with it."""
    try:
        return f" ({signal.Signals(number).name})"
    except ValueError:
        return ""


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
        siblings: list[int],
        init_fn: Callable[[int], Any] | None = None,
        torch_info: bool = False,
    ) -> None:
        self.id = worker_id
        self.context = ctx.get_start_method()
        self.owner = os.getpid()
        self.input = SharedBuffer(input_bytes)
        self.output: SharedBuffer | None = None
        self._seq = 0
        self.conn, child = ctx.Pipe()
        # A fork child inherits the loader's end of its own pipe and of its siblings' pipes.
        inherited = [*siblings, self.conn.fileno()] if self.context == "fork" else []
        self.proc = ctx.Process(
            target=_worker_main,
            name=f"fastload-worker-{worker_id}",
            args=(
                worker_id,
                num_workers,
                seed,
                transform,
                child,
                None if self.context == "forkserver" else self.owner,
                want_death_signal(self.context),
                inherited,
                init_fn,
                torch_info,
            ),
            daemon=True,
        )
        try:
            self.proc.start()
        except BaseException:
            self.conn.close()
            self.input.close()
            raise
        finally:
            child.close()
        self.pid = self.proc.pid
        try:
            self._hand_over_input("starting")
        except BaseException:
            self.stop()
            raise

    @property
    def owned(self) -> bool:
        """False in a process forked off the loader's: there, this worker is not ours."""
        return os.getpid() == self.owner

    def _hand_over_input(self, doing: str) -> None:
        self._send(("input", self.input.nbytes), doing)
        try:
            assert self.input.fd is not None
            send_handle(self.conn, self.input.fd, self.pid)
        except (BrokenPipeError, ConnectionResetError):
            self._died(doing)
        self.input.close_fd()  # the worker has its own descriptor now

    def wait_ready(
        self, stopped: Callable[[], bool], deadline: tuple[float, float] | None = None
    ) -> None:
        """Wait for the worker's "ready"; ``deadline``: (time.monotonic() limit, the timeout it came from)."""
        while True:
            reply = self._recv(
                stopped, "starting" if self._seq == 0 else "mapping its input", deadline
            )
            if reply[0] == "init_failed":
                _, what, tb, exc_type = reply
                self.proc.join(1.0)
                raise as_original(
                    exc_type,
                    f"fastload worker {self.id} (pid {self.pid}): worker_init_fn failed: {what}"
                    f"\n--- worker traceback ---\n{tb}",
                    WorkerError,
                )
            if reply[0] == "ready":
                break

    def _wait(
        self, stopped: Callable[[], bool], doing: str, deadline: tuple[float, float] | None
    ) -> None:
        """Until the pipe has something to read; raises when the worker died or time ran out."""
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

    def _recv(
        self, stopped: Callable[[], bool], doing: str, deadline: tuple[float, float] | None = None
    ) -> Any:
        """The next reply; a new output segment announced by it is mapped on the way."""
        self._wait(stopped, doing, deadline)
        try:
            reply = self.conn.recv()
            if reply[0] == "ok" and reply[2] is not None:
                self._wait(stopped, doing, deadline)
                self._attach_output(recv_handle(self.conn))
        except (EOFError, OSError):  # a duplex pipe is a socket: a killed peer may reset it
            self.proc.join(1.0)
            self._died(doing)
        return reply

    def _send(self, msg: Any, doing: str) -> None:
        try:
            self.conn.send(msg)
        except (BrokenPipeError, ConnectionResetError):  # it died while idle: say who and how
            self._died(doing)

    def _died(self, doing: str) -> None:
        self.proc.join(1.0)
        code = self.proc.exitcode
        how = (
            f"was killed by signal {-code}{_signal_name(-code)}"
            if code is not None and code < 0
            else f"exited with code {code}"
        )
        hint = start_failure_hint(code, self.context) if doing == "starting" else ""
        raise WorkerError(f"fastload worker {self.id} (pid {self.pid}) {how} while {doing}{hint}")

    def input_view(self, nbytes: int, stopped: Callable[[], bool]) -> memoryview:
        """A writable view of at least ``nbytes`` of the input segment (grown when needed)."""
        if self.input.nbytes < nbytes:
            self.input.close()
            self.input = SharedBuffer(nbytes * 5 // 4)
            self._seq += 1  # "mapping its input" from now on
            self._hand_over_input("waiting for work (before its input segment grew)")
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
            if reply[0] in ("ok", "error") and reply[1] == self._seq:
                break  # older replies belong to a batch whose reader was stopped
        if reply[0] == "error":
            # the worker's exception type comes back (as torch's ExceptionWrapper does),
            # also a WorkerError / WorkerTransformError, with the worker's traceback text
            _, _, pos, what, tb, exc_type = reply
            if pos < 0:
                raise as_original(
                    exc_type,
                    f"fastload worker {self.id} (pid {self.pid}): packing the results of batch "
                    f"{batch} failed: {what}\n--- worker traceback ---\n{tb}",
                    WorkerError,
                )
            raise as_original(
                exc_type,
                f"fastload worker {self.id} (pid {self.pid}): the transform failed on {describe(pos)}, "
                f"position {pos} of batch {batch}: {what}\n--- worker traceback ---\n{tb}",
                WorkerTransformError,
            )
        assert self.output is not None
        buf = np.frombuffer(self.output.mm, dtype=np.uint8)
        out = []
        for start, shp, dt in reply[3]:
            d = np.dtype(dt)
            n = int(np.prod(shp, dtype=np.int64)) * d.itemsize
            out.append(buf[start : start + n].view(d).reshape(shp))
        return out

    def _attach_output(self, fd: int) -> None:
        if self.output is not None:
            self.output.close()
        self.output = SharedBuffer(fd=fd)
        self.output.close_fd()

    def ask_to_stop(self) -> None:
        """Tell the worker to exit once its batch is done (see :meth:`stop`)."""
        if self.owned:
            try:
                self.conn.send(None)
            except (OSError, ValueError):
                pass

    def stop(self, timeout: float = STOP_S) -> None:
        """End the worker: asked, then SIGTERM, then SIGKILL (a transform may ignore
        SIGTERM), ``timeout`` each; in a process forked off the loader's, only drop this
        copy's handles."""
        if self.owned:
            self.ask_to_stop()
            _end_processes([self.proc], timeout)
        self.release()

    def release(self) -> None:
        """Close this side's handles (the process has ended, or is not this process's)."""
        if self.owned and self.proc.exitcode is not None:
            self.proc.close()
        self.conn.close()
        self.input.close()
        if self.output is not None:
            self.output.close()


def _end_processes(procs: list[Any], timeout: float) -> None:
    """Wait ``timeout`` for ``procs`` to exit, all together; SIGTERM the rest and wait
    again, then SIGKILL them: a process that ignores SIGTERM must not outlive its loader."""
    for send in (None, "terminate", "kill"):
        alive = [p for p in procs if p.is_alive()]
        if not alive:
            return
        if send is not None:
            for p in alive:
                getattr(p, send)()
        deadline = time.monotonic() + timeout
        for p in alive:
            p.join(max(0.0, deadline - time.monotonic()))


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
        init_fn: Callable[[int], Any] | None = None,
    ) -> None:
        refuse_start_while_bootstrapping(context)
        check_transform_reaches_workers(transform, context)
        if threading.active_count() > 1 and context == "fork":
            import warnings

            warnings.warn(
                f"fastload: forking workers while {threading.active_count() - 1} other thread(s) "
                "are alive; a child may inherit a held lock. Prefer 'spawn' or 'forkserver'.",
                RuntimeWarning,
                stacklevel=3,
            )
        self.context = context
        self.owner = os.getpid()
        ctx = multiprocessing.get_context(context)
        torch_info = "torch" in sys.modules  # torch's get_worker_info() only where torch is used
        seqs = np.random.SeedSequence(seed).spawn(num_workers)
        self.seeds = [int(s.generate_state(1, np.uint64)[0]) for s in seqs]
        self.workers: list[Worker] = []
        self._idle: list[Worker] = []
        self._cond = threading.Condition()
        track_pool(self)
        try:
            for i in range(num_workers):
                siblings = [w.conn.fileno() for w in self.workers]
                self.workers.append(
                    Worker(
                        ctx,
                        i,
                        num_workers,
                        self.seeds[i],
                        transform,
                        input_bytes,
                        siblings,
                        init_fn,
                        torch_info,
                    )
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
    def owned(self) -> bool:
        """False in a process forked off the loader's: these workers belong to the parent."""
        return os.getpid() == self.owner

    def processes(self) -> list[Any]:
        return [w.proc for w in self.workers]

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
        """End the workers, all at once (in a forked copy of the loader: only drop this
        process's handles)."""
        workers = list(self.workers)
        self.workers.clear()
        self._idle.clear()
        if self.owned:
            for w in workers:
                w.ask_to_stop()
            _end_processes([w.proc for w in workers], STOP_S)
        for w in workers:
            w.release()
