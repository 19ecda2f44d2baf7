"""The DataLoader: sampler -> planner -> engine -> collate kernel -> pooled batch.

Reader threads (``prefetch`` of them, or ``num_workers`` when transforms run
in worker processes) each take the next batch of the epoch, read its ranges
with the engine (native threads, GIL released) and collate it into a pooled
buffer, while the training step runs. ``loading_mode="sequential"`` hands
batches out in the sampler's order; ``"async_pool"`` in the order they
complete, so one slow object does not hold the others back.
"""

from __future__ import annotations

import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from fastload._file_engine import CancelToken
from fastload.autotune import AutoTuner
from fastload.buffer_pool import BufferPool
from fastload.collate import _plan_batch as _plan_collate
from fastload.collate import collate, collate_ragged, collate_slab
from fastload.datasets import Dataset
from fastload.engine import MIN_PART_SIZE, RangeEngine
from fastload.options import LoaderOptions, _check_int
from fastload.planner import BatchPlan, batch_slices, plan_batch
from fastload.samplers import make_sampler
from fastload.workers import TransformError, WorkerPool

CONSUMERS = ("numpy", "torch")
_JOIN_S = 10.0


class _TuningTarget:
    """Applies the tuner's choices to the engine (no reference back to the loader)."""

    def __init__(self, engine: RangeEngine) -> None:
        self.engine = engine

    def __call__(self, part_size: int, inflight: int) -> None:
        self.engine.part_size = part_size
        self.engine.max_inflight_parts = inflight


class RaggedBatch(NamedTuple):
    """Samples of different lengths packed back to back: sample ``i`` is
    ``data[offsets[i]:offsets[i + 1]]``."""

    # numpy arrays from the loader; the torch adapter and fastload.interop put their
    # framework's arrays (torch, jax, cupy ...) in the same two fields.
    data: Any
    offsets: Any

    def sample(self, i: int) -> Any:
        return self.data[self.offsets[i]:self.offsets[i + 1]]

    # Shadows tuple.count on purpose: callers (tests, benchmarks) read
    # ``batch.count`` as the number of samples, so the public name stays.
    @property
    def count(self) -> int:  # type: ignore[override]
        return len(self.offsets) - 1


@dataclass
class _Progress:
    """Which batches of an epoch were handed out (for state_dict)."""

    epoch: int
    done: set[int] = field(default_factory=set)
    finished: bool = False


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


@dataclass(frozen=True)
class _OutputSpec:
    """What a fixed-shape batch becomes (decided by the collate kernel's planner)."""

    shape: tuple[int, ...]   # one output sample
    dtype: np.dtype
    layout: str              # the stored layout the kernel is told
    convert: bool            # False: the read slab already is the batch

    @property
    def sample_nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


class DataLoader:
    """Iterates batches of ``dataset`` as configured by ``options`` (a LoaderOptions).

    Keyword arguments that are LoaderOptions knobs override ``options``
    (``DataLoader(ds, batch_size=64, shuffle=True)``). The others shape the
    output through the collate kernel: ``dtype`` (e.g. ``np.float32``;
    float32 by default when normalising), ``mean`` / ``std`` / ``scale``
    (``(x - mean) / std * scale`` per channel, mean and std in the stored
    units, e.g. 0..255), ``consumer`` ("numpy", or "torch" for tensors: see
    fastload.torch_adapter; "auto" memory_format follows it), ``device``
    (torch consumer only: copy each batch there, asynchronously with
    ``non_blocking``), and ``engine`` (a RangeEngine to read with, e.g. one configured for
    an S3 endpoint; the loader sets its part size, in-flight parts,
    page-cache mode and timeout from the options).

    Yields ``x``, or ``(x, y)`` when the dataset has labels. ``x`` is a
    zero-copy view of a pooled buffer: keep it as long as you like (the pool
    never reuses a buffer that something still views).

    One epoch runs at a time: a new ``iter(loader)`` (or ``close()``) ends the
    previous iterator, whose ``next()`` then raises ``RuntimeError`` saying so.
    A transform that raises gives ``TransformError`` naming the sample (index,
    URI, bytes) and its batch.
    """

    def __init__(
        self,
        dataset: Dataset,
        options: LoaderOptions | None = None,
        *,
        dtype: Any = None,
        mean: Any = None,
        std: Any = None,
        scale: float | None = None,
        consumer: str = "numpy",
        engine: RangeEngine | None = None,
        device: Any = None,
        **knobs: Any,
    ) -> None:
        if not isinstance(dataset, Dataset):
            raise TypeError(f"DataLoader needs a fastload Dataset, got {type(dataset).__name__}")
        options = options if options is not None else LoaderOptions()
        if knobs:
            options = options.replace(**knobs)
        options.validate_for(len(dataset))
        self.options = options
        self.config = cfg = options.config
        self.dataset = dataset
        if consumer not in CONSUMERS:
            raise ValueError(f"consumer must be one of {CONSUMERS}, got {consumer!r}")
        self.consumer = consumer
        if device is not None and consumer != "torch":
            raise ValueError(f"device={device!r} needs consumer='torch', not {consumer!r}")
        self._torch = None
        if consumer == "torch":  # before any buffer exists: pinning must see torch's CUDA runtime
            from fastload.torch_adapter import TorchOutput
            self._torch = TorchOutput(cfg, dataset.layout, dtype, device)
        self._out_dtype = dtype
        self._mean, self._std, self._scale = mean, std, scale
        self.sampler = make_sampler(cfg, len(dataset))
        self.transforms_on = cfg.enable_transforms and dataset.transform is not None
        if dataset.transform is not None and not cfg.enable_transforms:
            warnings.warn("the dataset has a transform but enable_transforms is off: it will not run",
                          UserWarning, stacklevel=2)
        self.output: _OutputSpec | None = None
        if dataset.sample_shape is not None:
            self.output = self._output_spec(tuple(dataset.sample_shape), dataset.dtype)
        elif not self.transforms_on and not (dtype is None and mean is None and std is None and scale is None):
            raise ValueError("dtype/mean/std/scale need fixed-shape samples; this dataset's are ragged "
                             "(use a transform that returns arrays of one shape)")

        sequential = cfg.reader_mode == "sequential"
        # Sequential reader mode: one request per range, so the engine must not cut them.
        part = max(MIN_PART_SIZE, -(-dataset.max_object_size // MIN_PART_SIZE) * MIN_PART_SIZE) \
            if sequential else cfg.part_size
        self._owns_engine = engine is None
        self.engine = engine or RangeEngine()
        self.engine.part_size = part
        self.engine.max_inflight_parts = cfg.max_inflight_parts  # None: the engine's per-scheme default
        self.engine.page_cache_mode = cfg.page_cache_mode
        self.engine.timeout = cfg.timeout_seconds
        # The scheme whose default in-flight depth this loader starts from (its first source's).
        self._scheme = dataset.sources[0].scheme if dataset.sources else "file"
        self.tuner = AutoTuner(part, self.engine.inflight_for(self._scheme), apply=_TuningTarget(self.engine),
                               tune_part_size=not sequential) if cfg.auto_tune else None

        self.pin = cfg.pin_memory or cfg.non_blocking
        self.pool = BufferPool(pin=self.pin, keep=cfg.prefetch + max(cfg.num_workers, 1) + 2)
        self._raw_pool = BufferPool(keep=cfg.prefetch + 1)  # read slabs that collate reads from
        self.use_workers = cfg.num_workers > 0 and self.transforms_on
        if cfg.num_workers > 0 and not self.transforms_on:
            warnings.warn(
                "num_workers > 0 without a transform to run (enable_transforms and a dataset "
                "transform): reads already run on native threads, so no worker process is started",
                UserWarning, stacklevel=2,
            )
        self.workers: WorkerPool | None = None
        self._next_epoch = 0
        self._progress: _Progress | None = None
        self._resume: _Progress | None = None
        self._current: weakref.ref[_Epoch] | None = None
        self.stats: dict[str, Any] = {"max_read_ahead": 0, "worker_starts": 0, "epoch_start_s": [],
                                      "epoch_pids": []}
        self._finalizer = weakref.finalize(self, _shutdown, self.__dict__)
        if self.pin and self.pool.pin_error is None:
            self._check_pinning()

    # -- configuration helpers ----------------------------------------------------
    def _output_spec(self, shape: tuple[int, ...], src_dtype: np.dtype) -> _OutputSpec:
        """Output shape/dtype of a batch of ``shape`` samples; checks mean/std/scale/dtype."""
        layout = self.dataset.layout or "HWC"
        batch = _plan_collate(
            1, shape, src_dtype, layout=layout, memory_format=self.config.memory_format,
            consumer=self.consumer, dtype=self._out_dtype, mean=self._mean, std=self._std,
            scale=self._scale, num_threads=0, collate_buffer_size=self.config.collate_buffer_size, isa="auto",
        )
        normalised = self._mean is not None or self._std is not None or self._scale is not None
        transposed = batch.plan is not None and batch.plan.transpose
        convert = transposed or normalised or batch.out_dtype != src_dtype
        return _OutputSpec(tuple(batch.out_shape[1:]), batch.out_dtype, layout, convert)

    def _check_pinning(self) -> None:
        probe = self.pool.acquire(1)
        self.pool.release(probe)
        if self.pool.pin_error:
            warnings.warn(f"pin_memory: buffers are not pinned ({self.pool.pin_error})", RuntimeWarning,
                          stacklevel=3)

    # -- the public surface -------------------------------------------------------
    def __len__(self) -> int:
        return len(batch_slices(len(self.sampler), self.config.batch_size, self.config.drop_last))

    @property
    def pin_mode(self) -> str:
        """How the batch buffers are pinned: "cuda", "mlock" or "none"."""
        return self.pool.pin_mode

    @property
    def epoch(self) -> int:
        """The epoch the next ``iter()`` runs."""
        return self._resume.epoch if self._resume else self._next_epoch

    def set_epoch(self, epoch: int) -> None:
        """Run epoch ``epoch`` next (its sampler order), like DistributedSampler.set_epoch.

        After :meth:`load_state_dict`, setting the resumed epoch keeps the resume point, so a
        training loop that calls ``set_epoch(epoch)`` every epoch resumes as it should."""
        _check_int("epoch", epoch, 0)
        if self._resume is not None and self._resume.epoch == epoch:
            return
        self._next_epoch = int(epoch)
        self._resume = None
        self._progress = None  # state_dict() now describes the epoch chosen, not the one left

    def report(self) -> dict[str, Any]:
        """What the loader really does: pinning, workers, tuning, read-ahead."""
        return {
            "pin_memory": self.config.pin_memory,
            "pin_mode": self.pool.pin_mode,
            "pin_error": self.pool.pin_error,
            "part_size": self.engine.part_size,
            "max_inflight_parts": self.engine.inflight_for(self._scheme),
            "page_cache_mode": self.engine.page_cache_mode,
            "workers": None if self.workers is None else {
                "pids": self.workers.pids, "context": self.workers.context, "seeds": self.workers.seeds},
            "worker_starts": self.stats["worker_starts"],
            "epoch_pids": list(self.stats["epoch_pids"]),
            "epoch_start_s": list(self.stats["epoch_start_s"]),
            "max_read_ahead": self.stats["max_read_ahead"],
            "buffers": len(self.pool),
            "buffer_allocations": self.pool.allocations,
            "auto_tune": None if self.tuner is None else self.tuner.report(),
            "collate": self.stats.get("collate"),
        }

    def state_dict(self) -> dict[str, Any]:
        """Where the loader is: resume with :meth:`load_state_dict` at the exact next sample."""
        p = self._progress
        if p is None or p.finished:
            p = self._resume or _Progress(self._next_epoch)
        return {
            "epoch": p.epoch,
            "batches_done": sorted(p.done),
            "samples_done": int(sum(b - a for k, (a, b) in enumerate(self._slices()) if k in p.done)),
            "batch_size": self.config.batch_size,
            "dataset_len": len(self.dataset),
            "sampler_len": len(self.sampler),
            # what fixes the order (seed, rank, weights ...); the loader keeps the position itself
            "sampler": {k: v for k, v in self.sampler.state_dict().items() if k not in ("epoch", "position")},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state``; refuses one from a loader with another order (the next sample
        of another order would repeat some samples and skip others)."""
        mine_state = self.state_dict()
        for key in ("batch_size", "dataset_len", "sampler_len"):
            mine = mine_state[key]
            if state.get(key) != mine:
                raise ValueError(f"load_state_dict: the state has {key}={state.get(key)!r}, this loader {mine}")
        theirs = state.get("sampler") or {}
        for key, mine in mine_state["sampler"].items():
            if theirs.get(key) != mine:
                raise ValueError(f"load_state_dict: the state's sampler has {key}={theirs.get(key)!r}, "
                                 f"this loader's {mine!r}")
        done = {int(k) for k in state["batches_done"]}
        if done and max(done) >= len(self):
            raise ValueError(f"load_state_dict: batch {max(done)} does not exist ({len(self)} batches)")
        self._resume = _Progress(int(state["epoch"]), done)
        self._next_epoch = int(state["epoch"])

    def _slices(self) -> list[tuple[int, int]]:
        return batch_slices(len(self.sampler), self.config.batch_size, self.config.drop_last)

    def __iter__(self) -> Iterator[Any]:
        self._stop_current()
        if self._resume is not None:
            progress, self._resume = self._resume, None
        else:
            progress = _Progress(self._next_epoch)
        self._next_epoch = progress.epoch + 1
        self._progress = progress
        t0 = time.perf_counter()
        if self.use_workers and self.workers is None:
            self._start_workers(progress.epoch)
        if self.workers is not None:
            self.workers.start_epoch()
        self.stats["epoch_start_s"].append(time.perf_counter() - t0)
        epoch = _Epoch(self, progress)
        self._current = weakref.ref(epoch)
        return _EpochIterator(epoch)

    def _start_workers(self, epoch: int) -> None:
        cfg = self.config
        # Persistent workers keep one stream each for the whole run; others get one per epoch.
        seed = [cfg.sampler_seed] if cfg.persistent_workers else [cfg.sampler_seed, epoch]
        nbytes = (self.dataset.sample_nbytes or 1 << 20) * cfg.batch_size
        transform = self.dataset.transform
        assert transform is not None  # use_workers implies transforms_on, so a transform
        self.workers = WorkerPool(cfg.num_workers, cfg.multiprocessing_context, transform,
                                  seed, nbytes, cfg.timeout_seconds)
        self.stats["worker_starts"] += 1
        self.stats["epoch_pids"].append(self.workers.pids)

    def _stop_current(self) -> None:
        ep = self._current() if self._current else None
        if ep is not None:
            ep.shutdown(ended_by="a newer iter(loader) (one loader runs one epoch at a time; "
                                 "use a second DataLoader to read two at once)")

    def _end_epoch(self, failed: bool) -> None:
        """After an epoch's threads stopped: drop workers unless persistent (always after a failure)."""
        if self.workers is not None and (failed or not self.config.persistent_workers):
            self.workers.close()
            self.workers = None

    def close(self) -> None:
        """Stop reading, end worker processes, free buffers. Idempotent."""
        self._finalizer()

    def __enter__(self) -> DataLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one batch ----------------------------------------------------------------
    def _produce(self, k: int, job: int, ep: _Epoch) -> Any:
        """Batch ``k`` of the epoch, the ``job``-th the readers took."""
        a, b = ep.slices[k]
        idx = ep.order[a:b]
        ds = self.dataset
        plan = plan_batch(ds, idx, reader_mode=self.config.reader_mode, part_size=self.engine.part_size)
        spec = self.output
        direct = not self.transforms_on and (spec is None or not spec.convert)
        leases: list[tuple[BufferPool, Any]] = []
        worker = None
        try:
            ep.status[k] = f"reading {self._describe(plan)}"
            if self.use_workers:
                assert self.workers is not None
                ep.status[k] = "waiting for an idle worker"
                worker = self.workers.checkout(job, ep.stopped)
                ep.status[k] = f"reading {self._describe(plan)} for worker {worker.id}"
                slab: Any = worker.input_view(plan.nbytes, ep.stopped)
            else:
                pool = self.pool if direct else self._raw_pool
                slab = pool.acquire(plan.nbytes)
                leases.append((pool, slab))
            self.engine.read_into(plan.sources, plan.table, slab, cancel=ep.cancel)
            if self.tuner is not None:
                self.tuner.record(plan.nbytes)
            if worker is not None:
                ep.status[k] = f"waiting for worker {worker.id} (pid {worker.pid}) to run the transform"
                del slab
                samples = worker.run(k, plan.offsets, plan.lengths, ds.sample_shape, ds.dtype, ep.stopped,
                                     lambda pos: ds.describe(int(idx[pos])))
                x = self._collate_samples(samples, leases)
                del samples
            elif self.transforms_on:
                samples = self._transform_here(np.frombuffer(slab, dtype=np.uint8, count=plan.nbytes), plan, k)
                x = self._collate_samples(samples, leases)
            elif spec is None:
                data = np.frombuffer(slab, dtype=np.uint8, count=plan.nbytes)
                x = RaggedBatch(data, np.append(plan.offsets, plan.nbytes))
            elif direct:
                x = np.frombuffer(slab, dtype=ds.dtype, count=len(idx) * (spec.sample_nbytes // ds.dtype.itemsize))
                x = x.reshape(len(idx), *spec.shape)
            else:
                ep.status[k] = "collating"
                out = self._out_array(len(idx), spec, leases)
                x = collate_slab(slab, plan.offsets, tuple(ds.sample_shape or ()), ds.dtype,
                                 out=out, **self._kernel_args(spec))
        finally:
            if worker is not None:
                self.workers.checkin(worker, job)  # type: ignore[union-attr]
            for pool, buf in leases:
                pool.release(buf)
        y = ds.labels_for(idx)
        return self._to_output(x, y)

    def _transform_here(self, raw: np.ndarray, plan: BatchPlan, k: int) -> list[np.ndarray]:
        """The transform of each sample of batch ``k``, in this process; a failure names the sample."""
        ds = self.dataset
        samples = []
        for pos, (o, n) in enumerate(zip(plan.offsets, plan.lengths, strict=True)):
            try:
                samples.append(np.asarray(ds.transform(ds.view_sample(raw[o:o + n]))))  # type: ignore[misc]
            except Exception as exc:
                raise TransformError(f"fastload: the transform failed on {ds.describe(int(plan.indices[pos]))}, "
                                     f"position {pos} of batch {k}: {type(exc).__name__}: {exc}") from exc
        return samples

    def _kernel_args(self, spec: _OutputSpec) -> dict[str, Any]:
        stats: dict[str, Any] = {}
        self.stats["collate"] = stats  # what the kernel did for the latest batch
        return {
            "layout": spec.layout, "memory_format": self.config.memory_format, "dtype": self._out_dtype,
            "mean": self._mean, "std": self._std, "scale": self._scale, "consumer": self.consumer,
            "collate_buffer_size": self.config.collate_buffer_size, "stats": stats,
        }

    def _out_array(self, n: int, spec: _OutputSpec, leases: list[tuple[BufferPool, Any]]) -> np.ndarray:
        buf = self.pool.acquire(n * spec.sample_nbytes)
        leases.append((self.pool, buf))
        # numpy's stubs (Python < 3.12) list concrete buffer types, not the buffer protocol
        # that AlignedBuffer implements; a memoryview would change the array's .base chain.
        flat = np.frombuffer(buf, dtype=spec.dtype,  # type: ignore[call-overload]
                             count=n * (spec.sample_nbytes // spec.dtype.itemsize))
        return flat.reshape(n, *spec.shape)

    def _collate_samples(self, samples: list[np.ndarray], leases: list[tuple[BufferPool, Any]]) -> Any:
        """Transformed samples -> one batch (same shapes) or a RaggedBatch (different ones)."""
        first = samples[0] if samples else None
        if first is not None and all(s.shape == first.shape and s.dtype == first.dtype for s in samples):
            spec = self._output_spec(first.shape, first.dtype)
            out = self._out_array(len(samples), spec, leases)
            return collate(samples, out=out, **self._kernel_args(spec))
        if self._out_dtype is not None or self._mean is not None or self._scale is not None:
            shapes = sorted({(s.shape, str(s.dtype)) for s in samples})[:3]
            raise ValueError(f"dtype/mean/std/scale need samples of one shape; the transform returned {shapes}")
        data, offsets = collate_ragged(samples, collate_buffer_size=self.config.collate_buffer_size)
        return RaggedBatch(data, offsets)

    def _to_output(self, x: Any, y: np.ndarray | None) -> Any:
        """The one place where a batch becomes what the consumer wants."""
        if self._torch is not None:
            return self._torch(x, y, self.pool)
        return x if y is None else (x, y)

    @staticmethod
    def _describe(plan: BatchPlan) -> str:
        names = ", ".join(s.display for s in plan.sources[:3]) + (" ..." if len(plan.sources) > 3 else "")
        return f"{plan.requests} ranges ({plan.nbytes} bytes) of {names}"


class _Epoch:
    """One pass: reader threads, the results they produced, and how to stop them.

    Threads reference this object, never the iterator the caller holds, so
    dropping the iterator (a ``break``, an exception) finalises it and stops them.
    """

    def __init__(self, loader: DataLoader, progress: _Progress) -> None:
        cfg = loader.config
        self.loader = loader
        self.progress = progress
        self.order = np.asarray(loader.sampler.indices(progress.epoch), dtype=np.int64)
        self.slices = batch_slices(len(self.order), cfg.batch_size, cfg.drop_last)
        self.todo = [k for k in range(len(self.slices)) if k not in progress.done]
        self.in_order = cfg.loading_mode == "sequential"
        self.timeout = cfg.timeout_seconds
        self.cond = threading.Condition()
        self.results: dict[int, Any] = {}
        self.status: dict[int, str] = {}
        self.next_job = 0
        self.next_out = 0
        self.ahead = 0
        self.stop = False
        self.failed = False
        self.ended_by: str | None = None  # set when something else ended the epoch under its iterator
        self.cancel = CancelToken()
        depth = cfg.prefetch if not loader.use_workers else max(cfg.prefetch, cfg.num_workers)
        self.slots = threading.Semaphore(depth)
        n = min(depth, len(self.todo))
        self.threads = [threading.Thread(target=self._run, name=f"fastload-reader-{i}", daemon=True)
                        for i in range(n)]
        for t in self.threads:
            t.start()

    def stopped(self) -> bool:
        return self.stop

    def _run(self) -> None:
        while True:
            self.slots.acquire()
            with self.cond:
                if self.stop or self.next_job >= len(self.todo):
                    self.slots.release()
                    return
                job = self.next_job
                k = self.todo[job]
                self.next_job += 1
                self.ahead += 1
                stats = self.loader.stats
                stats["max_read_ahead"] = max(stats["max_read_ahead"], self.ahead)
            try:
                res: Any = self.loader._produce(k, job, self)
            except BaseException as exc:
                res = _Failure(exc)
            with self.cond:
                self.results[k] = res
                self.status.pop(k, None)
                self.cond.notify_all()

    def next(self) -> Any:
        if self.next_out >= len(self.todo):
            self.finish(failed=False)
            raise StopIteration
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        late: TimeoutError | None = None
        with self.cond:
            while True:
                if self.stop:
                    if self.ended_by is not None:  # not a silent end: the rest of the epoch is lost
                        raise RuntimeError(f"fastload: this iterator of epoch {self.progress.epoch} was "
                                           f"ended by {self.ended_by}")
                    raise StopIteration
                k = self._ready()
                if k is not None:
                    res = self.results.pop(k)
                    # todo[:next_out] are the batches handed out (async: in completion order).
                    i = self.todo.index(k, self.next_out)
                    self.todo[i], self.todo[self.next_out] = self.todo[self.next_out], k
                    self.next_out += 1
                    self.ahead -= 1
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    late = self._timeout_error()
                    break
                self.cond.wait(left)
        if late is not None:
            self.finish(failed=True)
            raise late
        assert k is not None  # the loop ends with a ready batch, or a timeout raised above
        self.slots.release()
        if isinstance(res, _Failure):
            self.finish(failed=True)
            raise res.exc
        self.progress.done.add(k)
        if self.next_out >= len(self.todo):
            self.finish(failed=False)
        return res

    def _timeout_error(self) -> TimeoutError:
        k = self.todo[self.next_out]  # in order: the next batch; async: the oldest in flight
        what = "batch" if self.in_order else "any batch; the oldest in flight is batch"
        waited = self.status.get(k, "queued: no reader had started it")
        return TimeoutError(
            f"fastload: {what} {k} of epoch {self.progress.epoch} not ready after {self.timeout:g} s "
            f"(timeout_seconds); it was {waited}"
        )

    def _ready(self) -> int | None:
        if self.in_order:
            k = self.todo[self.next_out]
            return k if k in self.results else None
        pending = self.todo[self.next_out:self.next_job]
        for k in pending:
            if k in self.results:
                return k
        return None

    def finish(self, failed: bool) -> None:
        if not failed:
            self.progress.finished = True
        self.shutdown(failed)

    def shutdown(self, failed: bool = False, ended_by: str | None = None) -> None:
        """Stop the readers; ``failed``: after an error (workers are then restarted);
        ``ended_by``: what ended the epoch while its iterator may still be used."""
        with self.cond:
            if self.stop:
                return
            self.stop = True
            self.failed = failed
            self.ended_by = ended_by
            self.cond.notify_all()
        self.cancel.cancel()
        for _ in self.threads:
            self.slots.release()
        me = threading.current_thread()
        for t in self.threads:
            if t is not me:
                t.join(_JOIN_S)
        self.results.clear()
        self.loader._end_epoch(failed)


class _EpochIterator:
    """What ``iter(loader)`` returns; dropping it stops the epoch's threads."""

    def __init__(self, epoch: _Epoch) -> None:
        self._epoch = epoch
        self._finalizer = weakref.finalize(self, epoch.shutdown)

    def __iter__(self) -> _EpochIterator:
        return self

    def __next__(self) -> Any:
        return self._epoch.next()

    def close(self) -> None:
        self._finalizer()


def _shutdown(state: dict[str, Any]) -> None:
    """Finaliser of a DataLoader (its __dict__, so the loader itself can be collected)."""
    cur = state.get("_current")
    ep = cur() if cur else None
    if ep is not None:
        ep.shutdown(ended_by="closing the loader")
    workers = state.get("workers")
    if workers is not None:
        workers.close()
        state["workers"] = None
    state["pool"].close()
    state["_raw_pool"].close()
    if state.get("_owns_engine"):
        state["engine"].close()
