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
from fastload.datasets import Dataset
from fastload.engine import MIN_PART_SIZE, RangeEngine
from fastload.options import LoaderOptions
from fastload.planner import BatchPlan, batch_slices, plan_batch
from fastload.samplers import make_sampler
from fastload.workers import WorkerPool

CONSUMERS = ("numpy",)
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

    data: np.ndarray
    offsets: np.ndarray

    def sample(self, i: int) -> np.ndarray:
        return self.data[self.offsets[i]:self.offsets[i + 1]]

    @property
    def count(self) -> int:
        return len(self.offsets) - 1


def _collate_slab(src: Any, offsets: np.ndarray, sample_shape: tuple[int, ...], src_dtype: np.dtype,
                  **kw: Any) -> np.ndarray:
    """The collate kernel's ``collate_slab`` (numpy stand-in until the kernel lands)."""
    out = kw["out"]
    n = len(offsets)
    nbytes = int(np.prod(sample_shape)) * src_dtype.itemsize
    raw = np.frombuffer(src, dtype=np.uint8)
    x = np.stack([raw[o:o + nbytes].view(src_dtype).reshape(sample_shape) for o in offsets]) if n else \
        np.empty((0, *sample_shape), src_dtype)
    if kw.get("transpose"):
        x = np.moveaxis(x, -1, 1) if kw["layout"] == "HWC" else np.moveaxis(x, 1, -1)
    x = x.astype(out.dtype)
    if kw.get("scale") is not None:
        x = x * np.asarray(kw["scale"], dtype=np.float32)
    if kw.get("mean") is not None:
        ch = (1, -1, 1, 1) if x.ndim == 4 and kw["channels_first"] else (-1,)
        x = (x - np.asarray(kw["mean"], np.float32).reshape(ch)) / np.asarray(kw["std"], np.float32).reshape(ch)
    out[...] = x
    return out


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
    """What a fixed-shape batch becomes: shape, dtype, layout and whether to collate."""

    shape: tuple[int, ...]
    dtype: np.dtype
    transpose: bool
    channels_first: bool
    convert: bool

    @property
    def sample_nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


class DataLoader:
    """Iterates batches of ``dataset`` as configured by ``options`` (a LoaderOptions).

    Keyword arguments that are LoaderOptions knobs override ``options``
    (``DataLoader(ds, batch_size=64, shuffle=True)``). The others shape the
    output: ``dtype`` (e.g. ``np.float32``), ``mean`` / ``std`` (per channel,
    applied after ``scale``), ``scale`` (a multiplier, e.g. ``1/255``),
    ``consumer`` ("numpy"), and ``engine`` (a RangeEngine to read with, e.g.
    one configured for an S3 endpoint; the loader sets its part size,
    in-flight parts, page-cache mode and timeout from the options).

    Yields ``x``, or ``(x, y)`` when the dataset has labels. ``x`` is a
    zero-copy view of a pooled buffer: keep it as long as you like (the pool
    never reuses a buffer that something still views).
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
        self._out_dtype = None if dtype is None else np.dtype(dtype)
        self._mean, self._std, self._scale = self._check_affine(mean, std, scale)
        self.sampler = make_sampler(cfg, len(dataset))
        self.transforms_on = cfg.enable_transforms and dataset.transform is not None
        if dataset.transform is not None and not cfg.enable_transforms:
            warnings.warn("the dataset has a transform but enable_transforms is off: it will not run",
                          UserWarning, stacklevel=2)
        self.output = self._output_spec()

        sequential = cfg.reader_mode == "sequential"
        # Sequential reader mode: one request per range, so the engine must not cut them.
        part = max(MIN_PART_SIZE, -(-dataset.max_object_size // MIN_PART_SIZE) * MIN_PART_SIZE) \
            if sequential else cfg.part_size
        self._owns_engine = engine is None
        self.engine = engine or RangeEngine()
        self.engine.part_size = part
        self.engine.max_inflight_parts = cfg.max_inflight_parts
        self.engine.page_cache_mode = cfg.page_cache_mode
        self.engine.timeout = cfg.timeout_seconds
        self.tuner = AutoTuner(part, cfg.max_inflight_parts, apply=_TuningTarget(self.engine),
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
    @staticmethod
    def _check_affine(mean: Any, std: Any, scale: Any) -> tuple[Any, Any, Any]:
        if (mean is None) != (std is None):
            raise ValueError("mean and std go together: give both or neither")
        if mean is not None:
            mean = np.atleast_1d(np.asarray(mean, dtype=np.float32))
            std = np.atleast_1d(np.asarray(std, dtype=np.float32))
            if mean.shape != std.shape or mean.ndim != 1:
                raise ValueError(f"mean and std must be 1-D of one length, got {mean.shape} and {std.shape}")
            if (std == 0).any():
                raise ValueError(f"std must not contain 0, got {std.tolist()}")
        if scale is not None and not np.isfinite(scale):
            raise ValueError(f"scale must be a finite number, got {scale!r}")
        return mean, std, scale

    def _output_spec(self) -> _OutputSpec | None:
        ds = self.dataset
        if ds.sample_shape is None:
            if self._out_dtype is not None or self._mean is not None or self._scale is not None:
                if not self.transforms_on:
                    raise ValueError("dtype/mean/std/scale need fixed-shape samples; this dataset's are ragged")
            return None
        shape = tuple(ds.sample_shape)
        fmt = self.config.memory_format
        image = ds.layout in ("HWC", "CHW") and len(shape) == 3
        want_first = {"channels_first": True, "channels_last": False}.get(fmt, ds.layout == "CHW")
        transpose = image and want_first != (ds.layout == "CHW")
        if transpose:
            shape = (shape[2], shape[0], shape[1]) if ds.layout == "HWC" else (shape[1], shape[2], shape[0])
        out_dtype = self._out_dtype
        if out_dtype is None:
            out_dtype = np.dtype(np.float32) if (self._mean is not None or self._scale is not None) else ds.dtype
        if self._mean is not None:
            channels = shape[0] if (image and want_first) else shape[-1]
            if len(self._mean) not in (1, channels):
                raise ValueError(f"mean/std have {len(self._mean)} values, the samples have {channels} channels")
        convert = transpose or out_dtype != ds.dtype or self._mean is not None or self._scale is not None
        return _OutputSpec(shape, out_dtype, transpose, image and want_first, convert)

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
        """Run epoch ``epoch`` next (its sampler order), like DistributedSampler.set_epoch."""
        self._next_epoch = int(epoch)
        self._resume = None

    def report(self) -> dict[str, Any]:
        """What the loader really does: pinning, workers, tuning, read-ahead."""
        return {
            "pin_memory": self.config.pin_memory,
            "pin_mode": self.pool.pin_mode,
            "pin_error": self.pool.pin_error,
            "part_size": self.engine.part_size,
            "max_inflight_parts": self.engine.max_inflight_parts,
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
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("batch_size", "dataset_len", "sampler_len"):
            mine = self.state_dict()[key]
            if state.get(key) != mine:
                raise ValueError(f"load_state_dict: the state has {key}={state.get(key)!r}, this loader {mine}")
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
        self.stats["epoch_start_s"].append(time.perf_counter() - t0)
        epoch = _Epoch(self, progress)
        self._current = weakref.ref(epoch)
        return _EpochIterator(epoch)

    def _start_workers(self, epoch: int) -> None:
        cfg = self.config
        # Persistent workers keep one stream each for the whole run; others get one per epoch.
        seed = [cfg.sampler_seed] if cfg.persistent_workers else [cfg.sampler_seed, epoch]
        nbytes = (self.dataset.sample_nbytes or 1 << 20) * cfg.batch_size
        self.workers = WorkerPool(cfg.num_workers, cfg.multiprocessing_context, self.dataset.transform,
                                  seed, nbytes)
        self.stats["worker_starts"] += 1
        self.stats["epoch_pids"].append(self.workers.pids)

    def _stop_current(self) -> None:
        ep = self._current() if self._current else None
        if ep is not None:
            ep.shutdown()

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
    def _produce(self, k: int, ep: _Epoch) -> Any:
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
                worker = self.workers.checkout(ep.stopped)
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
                samples = worker.run(k, plan.offsets, plan.lengths, ds.sample_shape, ds.dtype, ep.stopped)
                x = self._collate_samples(samples, leases)
                del samples
            elif self.transforms_on:
                raw = np.frombuffer(slab, dtype=np.uint8, count=plan.nbytes)
                samples = [np.asarray(ds.transform(ds.view_sample(raw[o:o + n])))  # type: ignore[misc]
                           for o, n in zip(plan.offsets, plan.lengths, strict=False)]
                del raw
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
                x = _collate_slab(slab, plan.offsets, tuple(ds.sample_shape or ()), ds.dtype,
                                  layout=ds.layout, transpose=spec.transpose,
                                  channels_first=spec.channels_first, memory_format=self.config.memory_format,
                                  dtype=spec.dtype, mean=self._mean, std=self._std, scale=self._scale, out=out,
                                  collate_buffer_size=self.config.collate_buffer_size, consumer=self.consumer)
        finally:
            if worker is not None:
                self.workers.checkin(worker)  # type: ignore[union-attr]
            for pool, buf in leases:
                pool.release(buf)
        y = ds.labels_for(idx)
        return self._to_output(x, y)

    def _out_array(self, n: int, spec: _OutputSpec, leases: list[tuple[BufferPool, Any]]) -> np.ndarray:
        buf = self.pool.acquire(n * spec.sample_nbytes)
        leases.append((self.pool, buf))
        return np.frombuffer(buf, dtype=spec.dtype, count=n * (spec.sample_nbytes // spec.dtype.itemsize)) \
            .reshape(n, *spec.shape)

    def _collate_samples(self, samples: list[np.ndarray], leases: list[tuple[BufferPool, Any]]) -> Any:
        """Transformed samples -> one batch (same shapes) or a RaggedBatch (different ones)."""
        if samples and all(s.shape == samples[0].shape and s.dtype == samples[0].dtype for s in samples):
            first = samples[0]
            layout = self.dataset.layout if first.ndim == 3 else ""
            dtype = self._out_dtype or (np.dtype(np.float32) if self._mean is not None or self._scale is not None
                                        else first.dtype)
            transpose = layout != "" and self.config.memory_format != "auto" and \
                (self.config.memory_format == "channels_first") != (layout == "CHW")
            shape = first.shape
            if transpose:
                shape = (shape[2], shape[0], shape[1]) if layout == "HWC" else (shape[1], shape[2], shape[0])
            spec = _OutputSpec(tuple(shape), dtype, transpose,
                               self.config.memory_format == "channels_first" and layout != "", True)
            out = self._out_array(len(samples), spec, leases)
            packed = np.concatenate([s.reshape(-1).view(np.uint8) for s in samples])
            offs = np.arange(len(samples), dtype=np.int64) * first.nbytes
            return _collate_slab(packed, offs, first.shape, first.dtype, layout=layout, transpose=transpose,
                                 channels_first=spec.channels_first, memory_format=self.config.memory_format,
                                 dtype=dtype, mean=self._mean, std=self._std, scale=self._scale, out=out,
                                 collate_buffer_size=self.config.collate_buffer_size, consumer=self.consumer)
        lengths = np.array([s.nbytes for s in samples], dtype=np.int64)
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        buf = self.pool.acquire(int(offsets[-1]))
        leases.append((self.pool, buf))
        data = np.frombuffer(buf, dtype=np.uint8, count=int(offsets[-1]))
        for s, o in zip(samples, offsets[:-1], strict=False):
            data[o:o + s.nbytes] = s.reshape(-1).view(np.uint8)
        return RaggedBatch(data, offsets)

    def _to_output(self, x: Any, y: np.ndarray | None) -> Any:
        """The one place where a batch becomes what the consumer wants (numpy today)."""
        return x if y is None else (x, y)

    @staticmethod
    def _describe(plan: BatchPlan) -> str:
        names = ", ".join(s.uri for s in plan.sources[:3]) + (" ..." if len(plan.sources) > 3 else "")
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
                k = self.todo[self.next_job]
                self.next_job += 1
                self.ahead += 1
                stats = self.loader.stats
                stats["max_read_ahead"] = max(stats["max_read_ahead"], self.ahead)
            try:
                res: Any = self.loader._produce(k, self)
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

    def shutdown(self, failed: bool = False) -> None:
        """Stop the readers; ``failed``: after an error (workers are then restarted)."""
        with self.cond:
            if self.stop:
                return
            self.stop = True
            self.failed = failed
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
        ep.shutdown()
    workers = state.get("workers")
    if workers is not None:
        workers.close()
        state["workers"] = None
    state["pool"].close()
    state["_raw_pool"].close()
    if state.get("_owns_engine"):
        state["engine"].close()
