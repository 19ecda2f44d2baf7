"""The DataLoader: sampler -> planner -> engine -> collate kernel -> pooled batch.

Reader threads (``prefetch`` of them, or ``num_workers`` when transforms run
in worker processes) each take the next batch of the epoch, read its ranges
with the engine (native threads, GIL released) and collate it into a pooled
buffer, while the training step runs. ``loading_mode="sequential"`` hands
batches out in the sampler's order; ``"async_pool"`` in the order they
complete, so one slow object does not hold the others back.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from fastload.batch.collate import CollatePlan, collate_ragged, loader_stores, plan_collate
from fastload.batch.image_pipeline import ImageBatch, ImagePipeline, image_batcher_for
from fastload.batch.ragged import RaggedBatch
from fastload.checks import check_bool, check_int
from fastload.errors import ReadTimeoutError, TransformError, as_original
from fastload.loop.autotune import AutoTuner
from fastload.loop.epoch import JOIN_S, Epoch, EpochIterator, Progress
from fastload.loop.observer import LoaderObserver, debug_read
from fastload.loop.output import OutputStage, make_output
from fastload.loop.progress_state import (
    STATE_VERSION,
    base_sampler,
    check_state,
    dataset_digest,
    global_progress,
    resume_elsewhere,
    same_layout,
    wants_elastic,
)
from fastload.loop.python_datasets import is_python_dataset, torch_loader
from fastload.loop.read_path import (
    end_epoch_reads,
    make_read_path,
    plan_epoch,
    read_path_report,
)
from fastload.loop.stage_stats import COLLATE, DECODE, OUTPUT, PLAN, READ, TRANSFORM, EpochStats
from fastload.loop.torch_compat import TorchAttributes, batch_slices_of, torch_arguments
from fastload.loop.trace import TraceRecorder
from fastload.loop.transform_result import sample_array
from fastload.loop.workers import WorkerPool
from fastload.plan.datasets import Dataset
from fastload.plan.options import LoaderOptions
from fastload.plan.planner import BatchPlan, BatchSlices, batch_slices, plan_batch
from fastload.storage.buffer_pool import BufferPool
from fastload.storage.engine import RangeEngine
from fastload.storage.read_settings import WHOLE_RANGES, ReadSettings

__all__ = ["DataLoader", "PythonDatasetLoader", "RaggedBatch"]

Leases = list[tuple[BufferPool, Any]]


class DataLoader(TorchAttributes):
    """Iterates batches of ``dataset`` as configured by ``options`` (a LoaderOptions).

    Keyword arguments that are LoaderOptions knobs override ``options``
    (``DataLoader(ds, batch_size=64, shuffle=True)``). The others shape the
    output through the collate kernel: ``dtype`` (e.g. ``np.float32``;
    float32 by default when normalising), ``mean`` / ``std`` / ``scale``
    (``(x - mean) / std * scale`` per channel, mean and std in the stored
    units, e.g. 0..255), ``consumer`` ("numpy", or "torch" for tensors: see
    fastload.torch_adapter; "auto" memory_format follows it), ``device``
    (torch consumer only: copy each batch there, asynchronously with
    ``non_blocking``), ``engine`` (a RangeEngine to read with, e.g. one configured for
    an S3 endpoint; the loader reads with its own ReadSettings from the options and
    never changes the engine), ``output`` (an output stage that turns each batch
    into what the consumer wants, instead of the one ``consumer`` names), and
    ``transform`` (an ImagePipeline: the dataset's files are images, decoded, cropped,
    resized and flipped natively into fixed-size batches; see fastload.batch.image_pipeline).

    Yields ``x``, or ``(x, y)`` when the dataset has labels. ``x`` is a
    zero-copy view of a pooled buffer: keep it as long as you like (the pool
    never reuses a buffer that something still views).

    One epoch runs at a time: a new ``iter(loader)`` (or ``close()``) ends the
    previous iterator, whose ``next()`` then raises ``RuntimeError`` saying so.
    A transform that raises gives ``TransformError`` naming the sample (index,
    URI, bytes) and its batch.

    A Python dataset (a torch ``Dataset`` / ``IterableDataset``, any object with
    ``__getitem__`` or ``__iter__``) has no byte ranges to read: ``DataLoader(ds, ...)``
    is then a :class:`PythonDatasetLoader`, torch's DataLoader with torch's arguments and
    torch's meanings (see fastload.loop.python_datasets).
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> DataLoader:
        dataset = args[0] if args else kwargs.get("dataset")
        if cls is DataLoader and not isinstance(dataset, Dataset) and is_python_dataset(dataset):
            cls = PythonDatasetLoader
        return super().__new__(cls)

    def __init__(
        self,
        dataset: Dataset,
        options: LoaderOptions | int | None = None,
        *torch_positional: Any,
        dtype: Any = None,
        mean: Any = None,
        std: Any = None,
        scale: float | None = None,
        consumer: str = "numpy",
        engine: RangeEngine | None = None,
        device: Any = None,
        output: OutputStage | None = None,
        progress: bool = False,
        transform: ImagePipeline | None = None,
        **knobs: Any,
    ) -> None:
        if not isinstance(dataset, Dataset):
            raise TypeError(f"DataLoader needs a fastload Dataset, got {type(dataset).__name__}")
        # torch's keywords (sampler, collate_fn, batch_size=None ...): fastload.loop.torch_compat
        options, self.torch_args = torch_arguments(options, knobs, torch_positional)
        options.validate_for(len(dataset))
        _check_loader_objects(engine, output, progress)
        self.options = options
        self.config = cfg = options.config
        self.dataset = dataset
        self.consumer = consumer
        # before any buffer exists: pinning must see torch's CUDA runtime
        self.output_stage = self.torch_args.wrap_output(
            output
            if output is not None
            else make_output(consumer, cfg, dataset.layout, dtype, device)
        )
        self.sampler: Any = self.torch_args.make_sampler(cfg, dataset)  # or a ResumedSampler
        self.transforms_on = cfg.enable_transforms and dataset.transform is not None
        if dataset.transform is not None and not cfg.enable_transforms:  # never silently skipped
            name = getattr(dataset.transform, "__qualname__", type(dataset.transform).__name__)
            raise ValueError(
                f"enable_transforms=False is invalid: the dataset has a transform ({name}) that "
                "would not run; pass enable_transforms=True to run it, or make the dataset "
                "without transform="
            )
        # The collate kernel's arguments: checked once, in the plan of each sample shape.
        self._kernel_args: dict[str, Any] = {
            "layout": dataset.layout or "HWC",
            "memory_format": cfg.memory_format,
            "consumer": consumer,
            "dtype": dtype,
            "mean": mean,
            "std": std,
            "scale": scale,
            "collate_buffer_size": cfg.collate_buffer_size,
        }
        self._plans: dict[tuple[tuple[int, ...], np.dtype], CollatePlan] = {}
        self.collate_plan: CollatePlan | None = None
        # Encoded images: decoded natively with the same output options (batch.image_pipeline).
        self.images = image_batcher_for(
            dataset,
            transform,
            self._kernel_args,
            cfg.sampler_seed,
            self.transforms_on,
            cfg.on_error,
        )
        if dataset.sample_shape is not None:
            self.collate_plan = self._plan_for(tuple(dataset.sample_shape), dataset.dtype)
        elif (
            self.images is None
            and not self.transforms_on
            and not (dtype is None and mean is None and std is None and scale is None)
        ):
            raise ValueError(
                "dtype/mean/std/scale need fixed-shape samples; this dataset's are ragged "
                "(use a transform that returns arrays of one shape)"
            )

        sequential = cfg.reader_mode == "sequential"
        # Sequential reader mode: one request per range, so the native readers must not cut them.
        self._settings = _TunedSettings(
            ReadSettings(
                WHOLE_RANGES if sequential else cfg.part_size,
                cfg.max_inflight_parts,
                cfg.page_cache_mode,
                cfg.timeout_seconds,
            )
        )
        self._owns_engine = engine is None
        if engine is None:
            # the dataset's store, credentials and pinned versions, in an engine of its own
            listed_by = getattr(dataset, "_engine", None)
            engine = (
                listed_by.derive(timeout=cfg.timeout_seconds)
                if listed_by is not None
                else RangeEngine(timeout=cfg.timeout_seconds)
            )
        self.engine = engine
        # blocks, the node-local cache and shard version checks, or the engine itself
        self._reader = make_read_path(self.engine, cfg, dataset, self.sampler)
        # The scheme whose default in-flight depth this loader starts from (its first source's).
        self._scheme = dataset.sources[0].scheme if dataset.sources else "file"
        self.tuner = (
            AutoTuner(
                self.read_settings.part_size_for(self._scheme),
                self.read_settings.inflight_for(self._scheme),
                apply=self._settings.apply,
                tune_part_size=not sequential,
            )
            if cfg.auto_tune
            else None
        )

        self.pin = cfg.pin_memory or cfg.non_blocking
        self.pool = BufferPool(pin=self.pin, keep=cfg.prefetch + max(cfg.num_workers, 1) + 2)
        self._raw_pool = BufferPool(keep=cfg.prefetch + 1)  # read slabs that collate reads from
        self.use_workers = cfg.num_workers > 0 and self.transforms_on
        if self.use_workers and hasattr(dataset, "read_batch"):  # decoded in this process
            warnings.warn(
                f"{type(dataset).__name__} decodes its samples in this process: its transform "
                "runs here too, no worker process is started",
                UserWarning,
                stacklevel=2,
            )
            self.use_workers = False
        if cfg.num_workers > 0 and not self.transforms_on:
            warnings.warn(
                "num_workers > 0 without a transform to run (enable_transforms and a dataset "
                "transform): reads already run on native threads, so no worker process is started",
                UserWarning,
                stacklevel=2,
            )
        # Decided once: the same path every batch (a plain function: a bound method kept on
        # self would be a reference cycle, and the loader must die with its last reference).
        self._make_batch = self._choose_batch_maker()
        self.workers: WorkerPool | None = None
        self._next_epoch = 0
        self._progress: Progress | None = None
        self._resume: Progress | None = None
        self._current: weakref.ref[Epoch] | None = None
        self._counters: dict[str, Any] = {
            "max_read_ahead": 0,
            "inline_batches": 0,  # made on the consumer's thread (fastload.loop.inline_batches)
            "worker_starts": 0,
            "epoch_start_s": [],
            "epoch_pids": [],
            "images": None if self.images is None else self.images.stats,
        }
        names = ", ".join(src.display for src in dataset.sources[:2])
        more = " ..." if len(dataset.sources) > 2 else ""
        self.observer = LoaderObserver(
            names + more, progress, _weak_counters(weakref.WeakMethod(self._engine_counters))
        )
        self._lifecycle: tuple[int, threading.RLock] = (os.getpid(), threading.RLock())
        self._finalizer = weakref.finalize(self, _shutdown, self.__dict__)
        if self.pin and self.pool.pin_error is None:
            self._check_pinning()

    # -- configuration helpers ----------------------------------------------------
    def _plan_for(self, shape: tuple[int, ...], dtype: np.dtype) -> CollatePlan:
        """The collate plan of samples of ``shape`` / ``dtype`` (made once per shape)."""
        plan = self._plans.get((shape, dtype))
        if plan is None:
            plan = self._plans[(shape, dtype)] = plan_collate(shape, dtype, **self._kernel_args)
        return plan

    @property
    def read_settings(self) -> ReadSettings:
        """How the next batch is read (the options' settings, or the auto-tuner's latest)."""
        return self._settings.value

    def _check_pinning(self) -> None:
        probe = self.pool.acquire(1)
        self.pool.release(probe)
        if self.pool.pin_error:
            warnings.warn(
                f"pin_memory: buffers are not pinned ({self.pool.pin_error})",
                RuntimeWarning,
                stacklevel=3,
            )

    # -- the public surface -------------------------------------------------------
    def __len__(self) -> int:
        return len(self._slices(self.epoch))

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
        check_int("epoch", epoch, 0)
        if self._resume is not None and self._resume.epoch == epoch:
            return
        self._next_epoch = int(epoch)
        self._resume = None
        self._progress = None  # state_dict() now describes the epoch chosen, not the one left
        self.sampler = base_sampler(self.sampler)  # a resumed epoch run again runs in full

    def report(self) -> LoaderReport:
        """What the loader really does: pinning, workers, tuning, read-ahead, and the last
        epoch's stage breakdown. ``print(loader.report())`` shows the breakdown as a table
        with a one-line verdict (is the step waiting for data, and on what)."""
        return LoaderReport(
            self.observer.render(),
            {
                "pin_memory": self.config.pin_memory,
                "pin_mode": self.pool.pin_mode,
                "pin_error": self.pool.pin_error,
                "part_size": self.read_settings.part_size_for(self._scheme),
                "max_inflight_parts": self.read_settings.inflight_for(self._scheme),
                "page_cache_mode": self.read_settings.page_cache_mode,
                "workers": None
                if self.workers is None
                else {
                    "pids": self.workers.pids,
                    "context": self.workers.context,
                    "seeds": self.workers.seeds,
                },
                "worker_starts": self._counters["worker_starts"],
                "epoch_pids": list(self._counters["epoch_pids"]),
                "epoch_start_s": list(self._counters["epoch_start_s"]),
                "max_read_ahead": self._counters["max_read_ahead"],
                "inline_batches": self._counters["inline_batches"],
                "buffers": len(self.pool),
                "buffer_allocations": self.pool.allocations,
                "auto_tune": None if self.tuner is None else self.tuner.report(),
                "collate": self._counters.get("collate"),
                "images": self._counters["images"],
                "verdict": self.observer.epochs()[-1]["verdict"]
                if self.observer.epochs()
                else None,
                **read_path_report(self._reader),  # "blocks" and "cache" counters
            },
        )

    def stats(self) -> dict[str, Any]:
        """Where the time went, per epoch: stage totals and p50/p99 per batch (plan, read,
        decode, transform, collate, output; the consumer's wait and step), samples, bytes,
        requests, retries and the verdict (``epochs[-1]`` is the running epoch, if any);
        the block reader's and the node-local cache's counters."""
        return {
            "epochs": self.observer.epochs(),
            "index_s": getattr(self.dataset, "index_seconds", None),
            "max_read_ahead": self._counters["max_read_ahead"],
            "images": self._counters["images"],  # the image decoder's counters, skips named
            **read_path_report(self._reader),
        }

    def trace(self, path: str | os.PathLike[str]) -> TraceRecorder:
        """Record a Chrome / Perfetto trace of the stages of every batch, per thread, into
        ``path`` from now on; written when the returned recorder stops (``with``, ``.stop()``)
        or the loader closes."""
        return self.observer.trace(path)

    def state_dict(self) -> dict[str, Any]:
        """Where the loader is: resume with :meth:`load_state_dict` at the exact next sample."""
        p = self._progress
        if p is None or p.finished:
            p = self._resume or Progress(self._next_epoch)
        slices = self._slices(p.epoch)
        done = p.done.tolist()
        samples_done = _samples_in(slices, p.done)
        return {
            "version": STATE_VERSION,
            "epoch": p.epoch,
            "batches_done": done,
            "samples_done": samples_done,
            # the progress against the epoch's global order: resume on other ranks with it
            "global": global_progress(
                self.sampler,
                p.epoch,
                done,
                samples_done,
                in_order=self.config.loading_mode == "sequential",
            ),
            "dataset": dataset_digest(self.dataset),
            "batch_size": self.config.batch_size,
            "dataset_len": len(self.dataset),
            "sampler_len": len(self.sampler),
            # what fixes the order (seed, rank, weights ...); the loader keeps the position itself
            "sampler": {
                k: v for k, v in self.sampler.state_dict().items() if k not in ("epoch", "position")
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state``; refuses one from a loader with another order (the next sample
        of another order would repeat some samples and skip others). A state from another
        world size, rank, batch size or worker split resumes the rest of its epoch through
        the global order (``fastload.loop.progress_state``). A state that is malformed
        (``check_state``: a key missing or unknown, a value of the wrong type or range, a
        newer version) raises ValueError naming the key. An epoch still running is ended
        first: its iterator raises, and it does not hand out batches of the old position."""
        state = check_state(state)
        self._stop_current(
            "load_state_dict() (the loader now resumes the state loaded; iterate it again)"
        )
        self._progress = None  # state_dict() describes the state loaded, not the epoch left
        self._resume = None
        self.sampler = base_sampler(self.sampler)
        mine_state = self.state_dict()
        if wants_elastic(state, mine_state):
            self.sampler = resumed = resume_elsewhere(self.sampler, state, mine_state)
            self._resume = Progress(resumed.resume_epoch)
            self._next_epoch = resumed.resume_epoch
            return
        if state.get("dataset", mine_state["dataset"]) != mine_state["dataset"]:
            raise ValueError("load_state_dict: the state is of another dataset (URIs or length)")
        for key in ("batch_size", "dataset_len", "sampler_len"):
            mine = mine_state[key]
            if state.get(key) != mine:
                raise ValueError(
                    f"load_state_dict: the state has {key}={state.get(key)!r}, this loader {mine}"
                )
        theirs = state.get("sampler") or {}
        # another rank's in-order state: its batches_done is this rank's too (same_layout)
        other_rank_ok = same_layout(state)
        for key, mine in mine_state["sampler"].items():
            if theirs.get(key) != mine and not (key == "rank" and other_rank_ok):
                raise ValueError(
                    f"load_state_dict: the state's sampler has {key}={theirs.get(key)!r}, "
                    f"this loader's {mine!r}"
                )
        done = set(state["batches_done"])
        if done and max(done) >= len(self):
            raise ValueError(
                f"load_state_dict: batch {max(done)} does not exist ({len(self)} batches)"
            )
        # on this path batches_done is the position; samples_done is derived from it again
        self._resume = Progress(int(state["epoch"]), done)
        self._next_epoch = int(state["epoch"])

    def _slices(self, epoch: int) -> BatchSlices | list[tuple[int, int]]:
        n = (
            self.sampler.epoch_len(epoch)
            if hasattr(self.sampler, "epoch_len")
            else len(self.sampler)
        )
        return self.epoch_slices(epoch, n)

    def epoch_slices(self, epoch: int, n: int) -> BatchSlices | list[tuple[int, int]]:
        """(start, stop) of each batch of ``epoch``'s ``n`` indices (a batch_sampler's own cut)."""
        cut = batch_slices_of(self.sampler, epoch)
        return (
            cut
            if cut is not None
            else batch_slices(n, self.config.batch_size, self.config.drop_last)
        )

    def __iter__(self) -> Iterator[Any]:
        # One epoch at a time, also when threads call iter() together: each ends the
        # previous epoch (its iterator then says so) before it starts workers and readers.
        with _lifecycle_lock(self.__dict__):
            return self._start_epoch()

    def _start_epoch(self) -> EpochIterator:
        self._stop_current()
        if self._resume is not None:
            progress, self._resume = self._resume, None
        else:
            progress = Progress(self._next_epoch)
            # the rest of an elastic resume is one pass: any later epoch, the resumed one
            # run again included, is the sampler's whole epoch
            self.sampler = base_sampler(self.sampler)
        self._next_epoch = progress.epoch + 1
        self._progress = progress
        t0 = time.perf_counter()
        if self.workers is not None and not self.workers.owned:  # a copy made by os.fork()
            self.workers.close()  # drops this process's handles only; the parent keeps its own
            self.workers = None
        if self.use_workers and self.workers is None:
            self._start_workers(progress.epoch)
        if self.workers is not None:
            self.workers.start_epoch()
        self._counters["epoch_start_s"].append(time.perf_counter() - t0)
        epoch = Epoch(self, progress)
        plan_epoch(self._reader, self.dataset, epoch)  # blocks read ahead, in the epoch's order
        self._current = weakref.ref(epoch)
        return EpochIterator(epoch)

    def _start_workers(self, epoch: int) -> None:
        cfg = self.config
        # Persistent workers keep one stream each for the whole run; others get one per epoch.
        seed = [cfg.sampler_seed] if cfg.persistent_workers else [cfg.sampler_seed, epoch]
        nbytes = (self.dataset.sample_nbytes or 1 << 20) * cfg.batch_size
        transform = self.dataset.transform
        assert transform is not None  # use_workers implies transforms_on, so a transform
        self.workers = WorkerPool(
            cfg.num_workers,
            cfg.multiprocessing_context,
            transform,
            seed,
            nbytes,
            cfg.timeout_seconds,
            self.torch_args.worker_init_fn,
        )
        self._counters["worker_starts"] += 1
        self._counters["epoch_pids"].append(self.workers.pids)

    def _stop_current(
        self,
        by: str = "a newer iter(loader) (one loader runs one epoch at a time; "
        "use a second DataLoader to read two at once)",
    ) -> None:
        ep = self._current() if self._current else None
        if ep is not None:
            ep.shutdown(ended_by=by)

    def begin_epoch_stats(self, epoch: int, batches: int) -> EpochStats:
        """The stats the epoch about to start records into (called before its threads start)."""
        return self.observer.begin_epoch(epoch, batches, self._engine_counters())

    def _engine_counters(self) -> dict[str, int]:
        """The counters an epoch reports as its own (their growth over the epoch): the
        engine's, the node-local cache's as ``cache_hits``, ``cache_misses`` ..., and the image
        decoder's skipped samples as ``image_skipped``."""
        try:
            counters = dict(self.engine.stats())
        except Exception:  # a user's engine without counters: the epoch reports none
            counters = {}
        cache = read_path_report(self._reader)["cache"]
        for name, value in (cache or {}).items():
            if isinstance(value, int) and not isinstance(value, bool) and name != "limit":
                counters[f"cache_{name}"] = value
        if self.images is not None:  # the image decoder's skips (on_error="skip"), per epoch
            counters["image_skipped"] = int(self.images.stats["skipped"])
        return counters

    def end_epoch(self, failed: bool) -> None:
        """After an epoch's threads stopped: close its stats; drop workers unless persistent
        (always after a failure)."""
        end_epoch_reads(self._reader)
        self.observer.end_epoch(failed, self._engine_counters())
        if self.workers is not None and (failed or not self.config.persistent_workers):
            self.workers.close()
            self.workers = None

    def close(self) -> None:
        """Stop reading, end worker processes, free buffers. Idempotent."""
        self._finalizer()

    def __getstate__(self) -> dict[str, Any]:
        # what pickle said was "self.args cannot be converted ..." of some native member
        raise TypeError(
            "a fastload DataLoader cannot be pickled: it holds reader threads, buffers and "
            "worker processes; pickle its dataset and options and build a DataLoader in the "
            "other process (TorchIterableDataset does so for torch's workers)"
        )

    def __enter__(self) -> DataLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one batch ----------------------------------------------------------------
    def produce(self, k: int, job: int, ep: Epoch, asked: float = -1.0) -> Any:
        """Batch ``k`` of the epoch, the ``job``-th the readers took, as the consumer wants it.
        ``asked`` (>= 0): ``next()`` makes it itself, called at that time (stage clock's
        time line); the batch's clock starts then and its record holds the consumer's wait
        too, ending at the record (the clock's last lap)."""
        a, b = ep.slices[k]
        idx = ep.order[a:b]
        if asked < 0:  # a reader's batch: its clock starts before its plan
            clock = self.observer.clock()
            plan = plan_batch(self.dataset, idx)
            clock.lap(PLAN)
        else:  # the clock started in next(): one call restarts it and laps the plan
            plan = plan_batch(self.dataset, idx)
            clock = ep.inline_clock.restart(asked)
        plan.clock = clock
        leases: Leases = []
        # What a batch is doing names it when next() times out waiting; a batch next()
        # makes itself is never waited on that way (inline needs timeout_seconds=None).
        try:
            if asked < 0:
                ep.status[k] = _Reading(plan)
            x = self._make_batch(self, plan, k, job, ep, leases)
        finally:
            for pool, buf in leases:
                pool.release(buf)
        if isinstance(x, ImageBatch):  # failed images replaced: their labels follow
            x, idx = x
        if asked < 0:
            ep.status[k] = _InOutputStage(self.output_stage)
        out = self.output_stage(x, self.dataset.labels_for(idx), self.pool)
        if asked >= 0:  # made in next(): the output lap, the row and the wait, one call
            ep.stats.table.made_and_taken(k, clock, plan.nbytes, len(idx))
        elif clock.spans is None:  # always on: the output lap and the row, one call
            ep.stats.table.made(k, clock, plan.nbytes, len(idx), OUTPUT)
        else:
            clock.lap(OUTPUT)
            self.observer.batch_made(ep.stats, k, clock, plan.nbytes, len(idx))
        return out

    def _choose_batch_maker(self) -> Any:
        """The one way every batch of this loader is made (a function of the loader)."""
        cls = type(self)
        if self.images is not None:
            return cls._batch_images
        if hasattr(self.dataset, "read_batch"):  # it reads its own batches (ParquetDataset)
            return cls._batch_from_dataset
        if self.use_workers:
            return cls._batch_from_workers
        if self.transforms_on:
            return cls._batch_transformed_here
        if self.collate_plan is None:
            return cls._batch_ragged
        if not self.collate_plan.convert:
            return cls._batch_as_read
        return cls._batch_collated

    def _read(self, plan: BatchPlan, slab: Any, ep: Epoch) -> None:
        try:
            self._reader.read_into(
                plan.sources, plan.table, slab, settings=self.read_settings, cancel=ep.cancel
            )
        except ReadTimeoutError as exc:  # the loader's knob bounds each batch's reads: name it
            if self.config.timeout_seconds is not None:  # else a stall (low_speed_time) ended it
                exc.args = (
                    f"{exc.args[0]} (reading a batch; "
                    f"timeout_seconds={self.config.timeout_seconds:g})",
                )
            raise
        seconds = plan.clock.lap(READ)
        if ep.debug_reads:  # DEBUG was on as the epoch began
            debug_read(plan, seconds, self._describe)
        if self.tuner is not None:
            self.tuner.record(plan.nbytes)

    def _batch_from_dataset(
        self, plan: BatchPlan, k: int, job: int, ep: Epoch, leases: Leases
    ) -> Any:
        """A dataset that reads its own samples (views); transforms run here, then collate."""
        ep.status[k] = f"reading {len(plan.indices)} samples of {self._describe(plan)}"
        samples = self.dataset.read_batch(  # type: ignore[attr-defined]
            plan.indices, self.engine, self.read_settings, ep.cancel
        )
        plan.clock.lap(READ)  # its reads and its decoding
        if self.transforms_on:
            samples = self._transform_here_samples(samples, plan, k, ep)
        return self._collate_samples(samples, plan, leases)

    def _batch_ragged(self, plan: BatchPlan, k: int, job: int, ep: Epoch, leases: Leases) -> Any:
        slab = self._lease(self.pool, plan.nbytes, leases)
        self._read(plan, slab, ep)
        data = np.frombuffer(slab, dtype=np.uint8, count=plan.nbytes)
        return RaggedBatch(data, np.append(plan.offsets, plan.nbytes))

    def _batch_as_read(self, plan: BatchPlan, k: int, job: int, ep: Epoch, leases: Leases) -> Any:
        """Samples stored as the batch wants them: the read slab is the batch."""
        cp = self.collate_plan
        assert cp is not None
        slab = self._lease(self.pool, plan.nbytes, leases)
        self._read(plan, slab, ep)
        n = len(plan.indices)
        x = np.frombuffer(
            slab, dtype=cp.src_dtype, count=n * (cp.sample_nbytes // cp.src_dtype.itemsize)
        )
        return x.reshape(n, *cp.out_sample_shape)

    def _batch_collated(self, plan: BatchPlan, k: int, job: int, ep: Epoch, leases: Leases) -> Any:
        cp = self.collate_plan
        assert cp is not None
        slab = self._lease(self._raw_pool, plan.nbytes, leases)
        self._read(plan, slab, ep)
        if k in ep.status:  # a reader's batch (next() makes its own without status lines)
            ep.status[k] = f"collating its {len(plan.indices)} samples"
        out = self._out_array(len(plan.indices), cp, leases)
        stores = loader_stores(len(ep.threads) + 1, plan.nbytes, out.nbytes)  # + the consumer's
        x = cp.run_slab(slab, plan.offsets, out, self._collate_stats(), stores)
        plan.clock.lap(COLLATE)
        return x

    def _batch_images(self, plan: BatchPlan, k: int, job: int, ep: Epoch, leases: Leases) -> Any:
        """Encoded image files -> decoded, cropped, converted batch (native threads)."""
        images = self.images
        assert images is not None
        slab = self._lease(self._raw_pool, plan.nbytes, leases)
        self._read(plan, slab, ep)
        ep.status[k] = f"decoding {len(plan.indices)} images"
        x = images.decode(
            slab,
            plan.offsets,
            plan.lengths,
            plan.indices,
            ep.progress.epoch,
            lambda nbytes: self._lease(self.pool, nbytes, leases),
            self._uri_of,
            self.dataset.member_name,
        )
        plan.clock.lap(DECODE)
        return x

    def _uri_of(self, index: int) -> str:
        src = int(self.dataset.sample_ranges(np.array([index]))[0][0])
        return self.dataset.sources[src].display

    def _batch_transformed_here(
        self, plan: BatchPlan, k: int, job: int, ep: Epoch, leases: Leases
    ) -> Any:
        slab = self._lease(self._raw_pool, plan.nbytes, leases)
        self._read(plan, slab, ep)
        raw = np.frombuffer(slab, dtype=np.uint8, count=plan.nbytes)
        samples = self._transform_here(raw, plan, k, ep)
        ep.status[k] = f"collating its {len(samples)} transformed samples"
        return self._collate_samples(samples, plan, leases)

    def _batch_from_workers(
        self, plan: BatchPlan, k: int, job: int, ep: Epoch, leases: Leases
    ) -> Any:
        workers = self.workers
        assert workers is not None
        ds = self.dataset
        ep.status[k] = "waiting for an idle worker"
        worker = workers.checkout(job, ep.stopped)
        plan.clock.lap(TRANSFORM)  # waiting for a worker: the transforms set the pace
        try:
            ep.status[k] = f"reading {self._describe(plan)} for worker {worker.id}"
            slab: Any = worker.input_view(plan.nbytes, ep.stopped)
            self._read(plan, slab, ep)
            ep.status[k] = f"waiting for worker {worker.id} (pid {worker.pid}) to run the transform"
            del slab
            idx = plan.indices
            samples = worker.run(
                k,
                plan.offsets,
                plan.lengths,
                ds.sample_shape,
                ds.dtype,
                ep.stopped,
                lambda pos: ds.describe(int(idx[pos])),
            )
            plan.clock.lap(TRANSFORM)
            ep.status[k] = f"collating the {len(samples)} samples worker {worker.id} transformed"
            x = self._collate_samples(samples, plan, leases)
            del samples
            return x
        finally:
            workers.checkin(worker, job)

    @staticmethod
    def _lease(pool: BufferPool, nbytes: int, leases: Leases) -> Any:
        buf = pool.acquire(nbytes)
        leases.append((pool, buf))
        return buf

    def _transform_here(
        self, raw: np.ndarray, plan: BatchPlan, k: int, ep: Epoch
    ) -> list[np.ndarray]:
        """The transform of each sample of batch ``k``, in this process; a failure names the sample."""
        ds = self.dataset
        views = [
            ds.view_sample(raw[o : o + n]) for o, n in zip(plan.offsets, plan.lengths, strict=True)
        ]
        return self._transform_here_samples(views, plan, k, ep)

    def _transform_here_samples(
        self, samples: list[Any], plan: BatchPlan, k: int, ep: Epoch
    ) -> list[Any]:
        ds = self.dataset
        out = []
        # a timeout names the sample the transform is on (one that never returns included)
        ep.status[k] = status = _Transforming(ds, plan.indices)
        for pos, sample in enumerate(samples):
            status.pos = pos
            try:
                out.append(sample_array(ds.transform(sample)))  # type: ignore[misc]
            except Exception as exc:  # the transform's own type, and a TransformError
                raise as_original(
                    type(exc),
                    f"fastload: the transform failed on {ds.describe(int(plan.indices[pos]))}, "
                    f"position {pos} of batch {k}: {type(exc).__name__}: {exc}",
                    TransformError,
                ) from exc
        plan.clock.lap(TRANSFORM)
        return out

    def _collate_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {}
        self._counters["collate"] = stats  # what the kernel did for the latest batch
        return stats

    def _out_array(self, n: int, plan: CollatePlan, leases: Leases) -> np.ndarray:
        buf = self._lease(self.pool, n * plan.out_sample_nbytes, leases)
        # numpy's stubs (Python < 3.12) list concrete buffer types, not the buffer protocol
        # that AlignedBuffer implements; a memoryview would change the array's .base chain.
        flat = np.frombuffer(
            buf,
            dtype=plan.out_dtype,  # type: ignore[call-overload]
            count=n * (plan.out_sample_nbytes // plan.out_dtype.itemsize),
        )
        return flat.reshape(plan.out_shape(n))

    def _collate_samples(self, samples: list[np.ndarray], plan: BatchPlan, leases: Leases) -> Any:
        """Transformed samples -> one batch (same shapes) or a RaggedBatch (different ones)."""
        x = self._collate_samples_now(samples, leases)
        plan.clock.lap(COLLATE)
        return x

    def _collate_samples_now(self, samples: list[np.ndarray], leases: Leases) -> Any:
        first = samples[0] if samples else None
        if first is not None and all(
            s.shape == first.shape and s.dtype == first.dtype for s in samples
        ):
            plan = self._plan_for(first.shape, first.dtype)
            out = self._out_array(len(samples), plan, leases)
            arrays = [s if s.flags.c_contiguous else np.ascontiguousarray(s) for s in samples]
            return plan.run_samples(arrays, out, self._collate_stats())
        args = self._kernel_args
        if args["dtype"] is not None or args["mean"] is not None or args["scale"] is not None:
            shapes = sorted({(s.shape, str(s.dtype)) for s in samples})[:3]
            raise ValueError(
                f"dtype/mean/std/scale need samples of one shape; the transform returned {shapes}"
            )
        data, offsets = collate_ragged(samples, collate_buffer_size=self.config.collate_buffer_size)
        return RaggedBatch(data, offsets)

    @staticmethod
    def _describe(plan: BatchPlan) -> str:
        names = ", ".join(s.display for s in plan.sources[:3]) + (
            " ..." if len(plan.sources) > 3 else ""
        )
        return f"{plan.requests} ranges ({plan.nbytes} bytes) of {names}"


def _check_loader_objects(engine: Any, output: Any, progress: Any) -> None:
    """The loader's object keywords, checked before anything is built: a string as
    ``engine`` would fail only at the first read, deep in an epoch."""
    if engine is not None and not isinstance(engine, RangeEngine):
        raise TypeError(
            f"engine={type(engine).__name__} is invalid: must be a fastload RangeEngine or None"
        )
    if output is not None and not callable(output):
        raise TypeError(
            f"output={type(output).__name__} is invalid: must be an output stage, a callable "
            "(x, y, pool) -> batch, or None"
        )
    check_bool("progress", progress)


def _torch_attribute(name: str) -> property:
    return property(lambda self: getattr(self._torch, name), doc=f"torch's ``{name}``")


class PythonDatasetLoader(DataLoader):
    """``fastload.DataLoader`` of a Python dataset: torch's DataLoader of it, with torch's
    arguments (positional ones too) and meanings; a ``__getitem__`` failure names the index
    (fastload.loop.python_datasets). ``set_epoch(e)`` reaches the sampler's, the batch
    sampler's or the dataset's ``set_epoch`` (a ``DistributedSampler``'s, say). fastload's
    reports and resume state need a fastload Dataset and raise ``TypeError`` saying so."""

    # torch refuses to set these after __init__ (ValueError), as here
    _torch: Any
    _user_init: Any
    _epoch: int
    _FROZEN = (
        "batch_size",
        "batch_sampler",
        "sampler",
        "drop_last",
        "dataset",
        "persistent_workers",
    )

    def __init__(self, dataset: Any, *args: Any, **kwargs: Any) -> None:
        loader, user_init = torch_loader(dataset, args, kwargs)
        # not __setattr__: the attributes torch freezes are frozen here too
        self.__dict__.update(
            _torch=loader,
            dataset=dataset,
            _user_init=user_init,
            _epoch=0,
        )

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._FROZEN:
            raise ValueError(f"{name} attribute should not be set after DataLoader is initialized")
        super().__setattr__(name, value)

    batch_size = _torch_attribute("batch_size")
    drop_last = _torch_attribute("drop_last")
    num_workers = _torch_attribute("num_workers")
    timeout = _torch_attribute("timeout")
    sampler = _torch_attribute("sampler")
    batch_sampler = _torch_attribute("batch_sampler")
    collate_fn = _torch_attribute("collate_fn")
    generator = _torch_attribute("generator")
    prefetch_factor = _torch_attribute("prefetch_factor")
    pin_memory = _torch_attribute("pin_memory")
    pin_memory_device = _torch_attribute("pin_memory_device")
    persistent_workers = _torch_attribute("persistent_workers")
    multiprocessing_context = _torch_attribute("multiprocessing_context")
    in_order = _torch_attribute("in_order")

    @property
    def worker_init_fn(self) -> Any:
        return self._user_init

    @property
    def torch_loader(self) -> Any:
        """The ``torch.utils.data.DataLoader`` doing the work."""
        return self._torch

    def __len__(self) -> int:
        return len(self._torch)

    def __iter__(self) -> Iterator[Any]:
        self._epoch += 1
        return iter(self._torch)

    @property
    def epoch(self) -> int:
        """The epoch the next ``iter()`` runs (set_epoch's, else one more each ``iter()``)."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Tell the sampler / batch sampler / dataset (those with ``set_epoch``) the epoch."""
        check_int("epoch", epoch, 0)
        self._epoch = int(epoch)
        t = self._torch
        targets = [t.sampler, t.batch_sampler, getattr(t.batch_sampler, "sampler", None)]
        told = set()
        for target in [*targets, self.dataset]:
            fn = getattr(target, "set_epoch", None)
            if callable(fn) and id(target) not in told:
                told.add(id(target))
                fn(int(epoch))

    def close(self) -> None:
        """End a persistent iterator's worker processes (torch's do so when collected)."""
        it = self._torch._iterator
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()

    def _needs_fastload_dataset(self, what: str) -> TypeError:
        return TypeError(
            f"{what} needs a fastload Dataset (RecordDataset, NpyDataset, ...): this loader's "
            f"{type(self.dataset).__name__} is a Python dataset, loaded by torch's DataLoader"
        )

    def report(self) -> LoaderReport:
        raise self._needs_fastload_dataset("report()")

    def stats(self) -> dict[str, Any]:
        raise self._needs_fastload_dataset("stats()")

    def trace(self, path: str | os.PathLike[str]) -> TraceRecorder:
        raise self._needs_fastload_dataset("trace()")

    def state_dict(self) -> dict[str, Any]:
        raise self._needs_fastload_dataset("state_dict()")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise self._needs_fastload_dataset("load_state_dict()")

    @property
    def pin_mode(self) -> str:
        raise self._needs_fastload_dataset("pin_mode")

    @property
    def read_settings(self) -> ReadSettings:
        raise self._needs_fastload_dataset("read_settings")

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class _Reading:
    """Batch status "reading ...", made into text only when a timeout names it (formatting
    its sources on every batch cost ~1 us of a ~20 us batch of small records)."""

    __slots__ = ("plan",)

    def __init__(self, plan: BatchPlan) -> None:
        self.plan = plan

    def __str__(self) -> str:
        return f"reading {DataLoader._describe(self.plan)}"


class _Transforming:
    """Batch status "running the transform ... at sample ...", as text only when asked."""

    __slots__ = ("dataset", "indices", "pos")

    def __init__(self, dataset: Dataset, indices: Any) -> None:
        self.dataset, self.indices, self.pos = dataset, indices, 0

    def __str__(self) -> str:
        pos = self.pos
        sample = self.dataset.describe(int(self.indices[pos]))
        return (
            f"running the transform on its {len(self.indices)} samples (in this process), "
            f"on {sample}, position {pos}"
        )


class _InOutputStage:
    """Batch status "in the output stage (...)", as text only when asked."""

    __slots__ = ("stage",)

    def __init__(self, stage: Any) -> None:
        self.stage = stage

    def __str__(self) -> str:
        return f"in the output stage ({type(self.stage).__name__})"


def _samples_in(slices: BatchSlices | list[tuple[int, int]], done: Any) -> int:
    """Samples in the batches ``done`` marks (a caller's batch_sampler cuts its own list)."""
    mask = done.mask(len(slices))
    if isinstance(slices, BatchSlices):
        return slices.samples_in(mask)
    return int(sum(b - a for k, (a, b) in enumerate(slices) if mask[k]))


class LoaderReport(dict):  # type: ignore[type-arg]
    """``report()``'s dict; printed, the last epoch's stage table and verdict."""

    def __init__(self, table: str, fields: dict[str, Any]) -> None:
        super().__init__(fields)
        self.table = table

    def __str__(self) -> str:
        return self.table


class _TunedSettings:
    """The ReadSettings the loader reads with; the auto-tuner swaps them (and holds no
    reference to the loader)."""

    def __init__(self, value: ReadSettings) -> None:
        self.value = value

    def apply(self, part_size: int, inflight: int) -> None:
        self.value = self.value.replace(part_size=part_size, max_inflight_parts=inflight)


def _lifecycle_lock(state: dict[str, Any]) -> threading.RLock:
    """The lock under which a loader starts and ends epochs (a new one in a process made
    by os.fork(): a thread of the parent may have held it at the fork)."""
    pid, lock = state["_lifecycle"]
    if pid != os.getpid():
        state["_lifecycle"] = (os.getpid(), lock := threading.RLock())
    return lock


def _shutdown(state: dict[str, Any]) -> None:
    """Finaliser of a DataLoader (its __dict__, so the loader itself can be collected)."""
    lock = _lifecycle_lock(state)
    # bounded: at interpreter exit, a daemon thread may be stuck in iter() holding it
    locked = lock.acquire(timeout=2 * JOIN_S)
    try:
        _shutdown_now(state)
    finally:
        if locked:
            lock.release()


def _shutdown_now(state: dict[str, Any]) -> None:
    cur = state.get("_current")
    ep = cur() if cur else None
    if ep is not None:
        ep.shutdown(ended_by="closing the loader", rejoin=True)
    workers = state.get("workers")
    if workers is not None:
        workers.close()
        state["workers"] = None
    state["observer"].close()
    state["pool"].close()
    state["_raw_pool"].close()
    if state.get("_reader") is not state.get("engine"):
        state["_reader"].close()
    if state.get("_owns_engine"):
        state["engine"].close()


def _weak_counters(method: weakref.WeakMethod) -> Callable[[], dict[str, int]]:
    """The loader's counters for its observer, through a weak reference: a strong one would
    make a cycle, and ``del loader`` would no longer stop its threads at once."""

    def counters() -> dict[str, int]:
        fn = method()
        return {} if fn is None else fn()

    return counters
