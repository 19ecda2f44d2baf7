"""torch DataLoader keyword arguments with torch's meanings, for ``fastload.DataLoader``.

``torch_arguments(options, knobs)`` takes what a torch script passes
(``DataLoader(ds, 64, shuffle=True, sampler=..., collate_fn=..., timeout=30, ...)``) and
returns fastload's options plus a :class:`TorchArgs` holding the torch-only parts:

- ``batch_size`` (also positional), ``shuffle`` (None = False), ``drop_last``,
  ``num_workers``, ``pin_memory``, ``persistent_workers``, ``multiprocessing_context``
  (a name or a context object): the fastload knobs of the same meaning, checked as torch
  checks them (``persistent_workers`` needs ``num_workers > 0``, ...).
- ``sampler`` / ``batch_sampler``: the caller's order (any iterable of indices / of index
  lists); the exclusions torch makes (with ``shuffle``, ``batch_size``, ``drop_last``).
- ``batch_size=None``: no batching: single samples, as torch's ``default_convert``.
- ``collate_fn``: called with the batch as a list of samples (``x`` or ``(x, y)`` numpy
  views), its result is the batch.
- ``worker_init_fn``: called with the worker id in each worker process fastload starts.
- ``generator``: seeds fastload's sampler (``generator.initial_seed()``); fastload's random
  orders are its own (numpy PCG64), not torch's.
- ``prefetch_factor``: batches read ahead per worker (``prefetch = prefetch_factor *
  max(num_workers, 1)``); only with ``num_workers > 0``, as torch.
- ``timeout``: seconds, 0 = none (fastload's ``timeout_seconds``).
- ``in_order=False``: batches as they complete (``loading_mode="async_pool"``).
- ``pin_memory_device``: "" or a CUDA device (fastload pins for CUDA).

:class:`TorchAttributes` gives the loader torch's attributes (``batch_size``,
``drop_last``, ``num_workers``, ``timeout``, ``collate_fn`` ...).
"""

from __future__ import annotations

import multiprocessing.context
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastload.batch.ragged import RaggedBatch
from fastload.checks import check_int, is_int
from fastload.plan.datasets import Dataset
from fastload.plan.external_sampler import ExternalBatchSampler, ExternalSampler
from fastload.plan.options import LoaderConfig, LoaderOptions
from fastload.plan.samplers import Sampler, make_sampler

# keywords only torch's DataLoader has; fastload's own knobs pass through LoaderOptions
TORCH_ONLY = (
    "sampler",
    "batch_sampler",
    "collate_fn",
    "worker_init_fn",
    "generator",
    "prefetch_factor",
    "timeout",
    "in_order",
    "pin_memory_device",
)
_UNSET = object()
# torch's DataLoader's positional arguments after batch_size, in its order
TORCH_POSITIONAL = (
    "shuffle",
    "sampler",
    "batch_sampler",
    "num_workers",
    "collate_fn",
    "pin_memory",
    "drop_last",
    "timeout",
    "worker_init_fn",
    "multiprocessing_context",
    "generator",
)


@dataclass
class TorchArgs:
    """The torch-only arguments of one loader (all None / defaults when none was given)."""

    sampler: Any = None
    batch_sampler: Any = None
    collate_fn: Callable[[list[Any]], Any] | None = None
    worker_init_fn: Callable[[int], Any] | None = None
    generator: Any = None
    prefetch_factor: int | None = None
    timeout: float = 0.0
    in_order: bool = True
    pin_memory_device: str = ""
    unbatched: bool = False  # batch_size=None
    context: Any = None  # a multiprocessing context object, when one was given

    def make_sampler(self, config: LoaderConfig, dataset: Dataset) -> Sampler | ExternalSampler:
        """The caller's sampler / batch sampler, else the dataset's own (``make_sampler``,
        e.g. ParquetDataset's row-group order), else fastload's for ``config``."""
        if self.batch_sampler is not None:
            return ExternalBatchSampler(self.batch_sampler, len(dataset))
        if self.sampler is not None:
            return ExternalSampler(self.sampler, len(dataset))
        own = getattr(dataset, "make_sampler", None)
        if own is not None:
            return own(config)  # type: ignore[no-any-return]
        return make_sampler(config, len(dataset), dataset)

    def wrap_output(self, stage: Any) -> Any:
        if self.unbatched:
            return _Unbatched(stage)
        if self.collate_fn is not None:
            return _CollateFn(stage, self.collate_fn)
        return stage


def _fail(knob: str, value: Any, why: str, cls: type[Exception] = ValueError) -> Exception:
    return cls(f"{knob}={value!r} is invalid: {why}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _check_type(knob: str, value: Any, ok: Callable[[Any], bool], what: str) -> None:
    """TypeError for a value of the wrong type (torch's, where it compares it with 0)."""
    if not ok(value):
        raise _fail(knob, value, f"must be {what}, not {type(value).__name__}", TypeError)


def torch_arguments(
    options: Any, knobs: dict[str, Any], positional: tuple[Any, ...] = ()
) -> tuple[LoaderOptions, TorchArgs]:
    """fastload's options and the torch-only arguments from a DataLoader call; ``positional``:
    the arguments after torch's positional ``batch_size``, in torch's order."""
    knobs = dict(knobs)
    args = TorchArgs()
    if positional:
        if isinstance(options, LoaderOptions) or len(positional) > len(TORCH_POSITIONAL):
            raise TypeError(
                "DataLoader takes torch's positional arguments (batch_size, shuffle, sampler, "
                f"..., generator: at most {len(TORCH_POSITIONAL) + 1} after the dataset) or a "
                f"LoaderOptions alone; got {type(options).__name__} and {len(positional)} more"
            )
        for name, value in zip(TORCH_POSITIONAL, positional, strict=False):
            if name in knobs:
                raise TypeError(f"DataLoader got multiple values for argument '{name}'")
            knobs[name] = value
    if options is not None and not isinstance(options, LoaderOptions):
        if isinstance(options, (int, np.integer)) and not isinstance(options, bool):
            knobs.setdefault("batch_size", int(options))  # torch's second positional
            options = None
        else:
            raise TypeError(
                f"DataLoader's second argument is a LoaderOptions or torch's batch_size, "
                f"not {type(options).__name__}"
            )
    options = options if options is not None else LoaderOptions()
    if not knobs:
        return options, args
    given = {k: knobs.pop(k) for k in TORCH_ONLY if k in knobs}

    batch_size = knobs.pop("batch_size", _UNSET)
    shuffle = knobs.pop("shuffle", None)
    sampler, batch_sampler = given.get("sampler"), given.get("batch_sampler")
    drop_last = knobs.get("drop_last", False)
    if sampler is not None and shuffle:
        raise ValueError("sampler option is mutually exclusive with shuffle")
    if batch_sampler is not None:
        if (batch_size not in (_UNSET, 1)) or shuffle or sampler is not None or drop_last:
            raise ValueError(
                "batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, "
                "and drop_last"
            )
        batch_size = 1  # unused: the batch sampler cuts the batches
    if batch_size is None:
        if drop_last:
            raise ValueError(
                "batch_size=None option disables auto-batching and is mutually exclusive with "
                "drop_last"
            )
        args.unbatched = True
        batch_size = 1
    if batch_size is not _UNSET:
        knobs["batch_size"] = batch_size
    if shuffle is not None:
        # torch's truthy shuffle is True; fastload's "block" shuffle stays a string
        knobs["shuffle"] = shuffle if shuffle == "block" else bool(shuffle)
    args.sampler, args.batch_sampler = sampler, batch_sampler

    workers = knobs.get("num_workers", options.get("num_workers"))
    _check_type("num_workers", workers, is_int, "an integer")
    check_int("num_workers", workers, 0)
    if knobs.get("persistent_workers") and workers == 0:
        raise ValueError("persistent_workers option needs num_workers > 0")
    ctx = knobs.get("multiprocessing_context")
    if ctx is not None and not isinstance(ctx, str):
        if not isinstance(ctx, multiprocessing.context.BaseContext):  # torch's TypeError
            raise _fail(
                "multiprocessing_context",
                ctx,
                "must be a start method's name or a multiprocessing context object",
                TypeError,
            )
        args.context = ctx
        knobs["multiprocessing_context"] = ctx.get_start_method()
    elif ctx is None and "multiprocessing_context" in knobs:
        del knobs["multiprocessing_context"]

    prefetch_factor = given.get("prefetch_factor")
    if prefetch_factor is not None:
        if workers == 0:
            raise ValueError(
                "prefetch_factor option could only be specified in multiprocessing. "
                "let num_workers > 0 to enable multiprocessing, otherwise set prefetch_factor "
                "to None."
            )
        _check_type("prefetch_factor", prefetch_factor, is_int, "an integer")
        check_int("prefetch_factor", prefetch_factor, 1)
        knobs["prefetch"] = int(prefetch_factor) * workers
    args.prefetch_factor = prefetch_factor

    timeout = given.get("timeout", 0)
    _check_type("timeout", timeout, _is_number, "a number of seconds")
    if not timeout >= 0:  # NaN too
        raise ValueError("timeout option should be non-negative")
    args.timeout = float(timeout)
    if timeout:
        knobs["timeout_seconds"] = float(timeout)

    in_order = given.get("in_order", True)
    if not isinstance(in_order, bool):
        raise _fail("in_order", in_order, "must be True or False", TypeError)
    args.in_order = in_order
    if not in_order:
        knobs["loading_mode"] = "async_pool"

    generator = given.get("generator")
    if generator is not None:
        if not hasattr(generator, "initial_seed"):
            raise _fail(
                "generator", generator, "must be a torch.Generator (initial_seed())", TypeError
            )
        args.generator = generator
        knobs["generator_seed"] = int(generator.initial_seed()) % 2**63

    device = given.get("pin_memory_device", "")
    if not isinstance(device, str) or (device and not device.startswith("cuda")):
        raise _fail(
            "pin_memory_device", device, "fastload pins host memory for CUDA: '' or 'cuda[:N]'"
        )
    args.pin_memory_device = device

    for name in ("collate_fn", "worker_init_fn"):
        fn = given.get(name)
        if fn is not None and not callable(fn):
            raise _fail(name, fn, "must be callable", TypeError)
    args.collate_fn = given.get("collate_fn")
    args.worker_init_fn = given.get("worker_init_fn")
    return options.replace(**knobs), args


def _samples(x: Any, y: Any) -> list[Any]:
    """A batch as torch's list of samples: ``x[i]`` or ``(x[i], y[i])``."""
    n = len(x)
    xs = list(x) if isinstance(x, RaggedBatch) else [x[i] for i in range(n)]
    return xs if y is None else [(xs[i], y[i]) for i in range(n)]


class _CollateFn:
    """The caller's ``collate_fn`` on the batch's samples."""

    def __init__(self, stage: Any, collate_fn: Callable[[list[Any]], Any]) -> None:
        self.stage = stage
        self.collate_fn = collate_fn

    def __call__(self, x: Any, y: Any, pool: Any) -> Any:
        return self.collate_fn(_samples(x, y))


class _Unbatched:
    """``batch_size=None``: each sample on its own (the consumer's type, no batch axis)."""

    def __init__(self, stage: Any) -> None:
        self.stage = stage

    def __call__(self, x: Any, y: Any, pool: Any) -> Any:
        out = self.stage(x, y, pool)
        if isinstance(out, tuple):
            return tuple(o[0] for o in out)
        return out[0]


class TorchAttributes:
    """torch DataLoader's attributes, read from the loader's config and torch arguments."""

    config: LoaderConfig
    torch_args: TorchArgs

    @property
    def batch_size(self) -> int | None:
        t = self.torch_args
        return None if t.unbatched or t.batch_sampler is not None else self.config.batch_size

    @property
    def drop_last(self) -> bool:
        return self.config.drop_last

    @property
    def num_workers(self) -> int:
        return self.config.num_workers

    @property
    def timeout(self) -> float:
        return self.torch_args.timeout or (self.config.timeout_seconds or 0.0)

    @property
    def batch_sampler(self) -> Any:
        return self.torch_args.batch_sampler

    @property
    def collate_fn(self) -> Callable[[list[Any]], Any] | None:
        return self.torch_args.collate_fn

    @property
    def worker_init_fn(self) -> Callable[[int], Any] | None:
        return self.torch_args.worker_init_fn

    @property
    def generator(self) -> Any:
        return self.torch_args.generator

    @property
    def prefetch_factor(self) -> int | None:
        """torch's: batches ahead per worker (2 unless given), None without workers."""
        if not self.config.num_workers:
            return None
        return self.torch_args.prefetch_factor or 2

    @property
    def pin_memory(self) -> bool:
        return self.config.pin_memory

    @property
    def pin_memory_device(self) -> str:
        return self.torch_args.pin_memory_device

    @property
    def persistent_workers(self) -> bool:
        return self.config.persistent_workers

    @property
    def multiprocessing_context(self) -> Any:
        return self.torch_args.context or self.config.multiprocessing_context

    @property
    def in_order(self) -> bool:
        return self.config.loading_mode == "sequential"


def batch_slices_of(sampler: Any, epoch: int) -> list[tuple[int, int]] | None:
    """The batches a caller's batch_sampler cut for ``epoch`` (None for every other sampler)."""
    cut = (
        getattr(sampler, "batch_slices", None)
        if isinstance(sampler, ExternalBatchSampler)
        else None
    )
    return cut(epoch) if cut is not None else None


__all__ = [
    "TORCH_ONLY",
    "TORCH_POSITIONAL",
    "TorchArgs",
    "TorchAttributes",
    "batch_slices_of",
    "torch_arguments",
]
