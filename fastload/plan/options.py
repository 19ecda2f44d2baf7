"""Loader options: one frozen ``LoaderConfig`` and the s3dlio-style fluent ``LoaderOptions``.

``LoaderConfig`` holds every knob as plain data and checks each value when it is built, so a
bad value fails where it is written, with a ``ValueError`` naming the knob and the value.

``LoaderOptions`` wraps one ``LoaderConfig`` and offers s3dlio's fluent builder (each method
returns a NEW options object) and keyword construction like torch's ``DataLoader``.

Name-collision rule: s3dlio's fluent setters share names with the fields they set
(``pin_memory(True)`` sets the field ``pin_memory``). On ``LoaderOptions`` such a name is
ALWAYS the fluent method. Every field, colliding or not, is readable through
``opts.config.<field>``, ``opts.get("<field>")`` and ``opts.to_dict()["<field>"]``; a field
whose name is not a method is also a read-only property (``opts.batch_size``), and a
colliding one is also readable as ``opts.<field>_value`` (s3dlio's spelling, e.g.
``opts.pin_memory_value``).
"""

from __future__ import annotations

import dataclasses
import difflib
import multiprocessing
import os
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastload.batch.layout import MEMORY_FORMATS
from fastload.checks import (
    check_bool,
    check_byte_size,
    check_choice,
    check_int,
    check_number,
    check_seed,
    check_str,
    fail,
    number_kind_fault,
)
from fastload.plan.s3dlio_options import from_s3dlio_dict
from fastload.storage.read_settings import (
    MAX_INFLIGHT_PARTS,
    MAX_PART_SIZE,
    MAX_TIMEOUT_S,
    MIN_PART_SIZE,
    PAGE_CACHE_MODES,
)

LOADING_MODES = ("sequential", "async_pool")
READER_MODES = ("sequential", "range")
# The loader always chooses a layout ("auto" follows the consumer); None is collate()'s alone.
LOADER_MEMORY_FORMATS = tuple(f for f in MEMORY_FORMATS if f is not None)
MP_CONTEXTS = ("spawn", "fork", "forkserver")
SAMPLER_TYPES = ("sequential", "random", "weighted_random", "distributed_random")
SHUFFLES = (False, True, "block")
ON_ERROR = ("raise", "skip")
DEFAULT_BLOCK_SIZE = 4 << 20  # one ranged GET per block: big enough to amortise a request
DEFAULT_SHUFFLE_BUFFER = "64MiB"
# Past these a count is a typo: each worker is a process, each prefetched batch a thread
# and a buffer, so 10**6 of them would fail late and far from the knob.
MAX_WORKERS = 1024
MAX_PREFETCH = 4096


def _fspath(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def normalise_weights(value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, Iterator):  # weighted_sampling(w for w in ...): read it once
        value = list(value)
    try:
        fault = number_kind_fault(value)
        if fault is not None:
            raise TypeError(fault)
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise fail("weights", value, f"must be a sequence of numbers ({exc})") from None
    if arr.ndim != 1 or arr.size == 0:
        raise fail("weights", value, "must be a non-empty 1-D sequence of numbers")
    if not np.isfinite(arr).all():
        raise fail("weights", value, "must all be finite")
    if (arr < 0).any():
        bad = int(np.flatnonzero(arr < 0)[0])
        raise fail("weights", value, f"must be >= 0 (weights[{bad}] = {arr[bad]})")
    if not (arr > 0).any():
        raise fail("weights", value, "are all zero: nothing can be drawn")
    return tuple(arr.tolist())


@dataclass(frozen=True)
class LoaderConfig:
    """Every loader knob as plain, validated data (immutable, hashable, picklable).

    ``shard_rank`` / ``shard_world_size`` / ``worker_id`` / ``num_workers_pytorch`` may be
    ``None``, meaning "discover at run time" (see ``fastload.plan.distributed``): rank and world
    size from an initialised ``torch.distributed`` process group, else the ``RANK`` /
    ``WORLD_SIZE`` environment variables that torchrun sets, else rank 0 of 1 (rank and
    world size default to ``None``, so a job under torchrun shards by itself); worker id and
    count from ``torch.utils.data.get_worker_info()``. An explicit integer always wins.

    ``max_inflight_parts`` ``None`` (the default) lets the engine pick per scheme: 4
    reader threads for local files, 32 transfers for ``http(s)://`` and ``s3://``,
    where a request's latency, not bandwidth, bounds small reads (measured figures in
    ``fastload.storage.read_settings``); an integer applies to every source.

    ``shuffle="block"`` permutes blocks of ``block_size`` bytes (whole samples of one shard,
    read as one request each) and shuffles samples inside windows of ``shuffle_buffer``
    (samples, or bytes as ``"64MiB"``; an epoch's first buffer ramps up in smaller windows,
    so its first batch waits on a few blocks); ``cache_dir`` / ``cache_limit`` keep remote blocks
    on local disk for later epochs; ``on_error`` says whether a cache that cannot work raises
    or is read around ("skip").
    """

    batch_size: int = 32
    drop_last: bool = False
    sampler_drop_last: bool | None = None
    shuffle: bool | str = False
    seed: int = 0
    num_workers: int = 0
    prefetch: int = 2
    auto_tune: bool = False
    loading_mode: str = "sequential"
    reader_mode: str = "sequential"
    part_size: int | None = None
    max_inflight_parts: int | None = None
    shard_rank: int | None = None
    shard_world_size: int | None = None
    worker_id: int | None = 0
    num_workers_pytorch: int | None = 1
    pin_memory: bool = False
    persistent_workers: bool = False
    timeout_seconds: float | None = None
    multiprocessing_context: str = "spawn"
    sampler_type: str = "sequential"
    replacement: bool = False
    weights: tuple[float, ...] | None = None
    memory_format: str = "auto"
    non_blocking: bool = False
    generator_seed: int | None = None
    enable_transforms: bool = False
    collate_buffer_size: int = 0
    page_cache_mode: str = "auto"
    block_size: int = DEFAULT_BLOCK_SIZE
    shuffle_buffer: int | str = DEFAULT_SHUFFLE_BUFFER
    cache_dir: str | None = None
    cache_limit: int | None = None
    on_error: str = "raise"

    def __post_init__(self) -> None:
        check_int("batch_size", self.batch_size, 1)
        check_seed("seed", self.seed)
        check_int("num_workers", self.num_workers, 0, MAX_WORKERS)
        check_int("prefetch", self.prefetch, 1, MAX_PREFETCH)
        check_int("part_size", self.part_size, MIN_PART_SIZE, MAX_PART_SIZE, optional=True)
        check_int(
            "max_inflight_parts", self.max_inflight_parts, 1, MAX_INFLIGHT_PARTS, optional=True
        )
        check_int("shard_rank", self.shard_rank, 0, optional=True)
        check_int("shard_world_size", self.shard_world_size, 1, optional=True)
        check_int("worker_id", self.worker_id, 0, optional=True)
        check_int("num_workers_pytorch", self.num_workers_pytorch, 1, optional=True)
        check_seed("generator_seed", self.generator_seed, optional=True)
        check_int("collate_buffer_size", self.collate_buffer_size, 0)
        if self.sampler_drop_last is not None:
            check_bool("sampler_drop_last", self.sampler_drop_last)
        check_int("block_size", self.block_size, MIN_PART_SIZE, MAX_PART_SIZE)
        self.shuffle_buffer_spec  # noqa: B018 -- validates shuffle_buffer
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", check_str("cache_dir", _fspath(self.cache_dir)))
        if self.cache_limit is not None:
            object.__setattr__(
                self, "cache_limit", check_byte_size("cache_limit", self.cache_limit, 1)
            )
        check_choice("on_error", self.on_error, ON_ERROR)
        if not (isinstance(self.shuffle, (bool, np.bool_)) or self.shuffle == "block"):
            raise fail("shuffle", self.shuffle, "must be True, False or 'block'")
        if self.shuffle == "block" and self.sampler_type == "weighted_random":
            raise fail(
                "shuffle",
                "block",
                "block shuffle reads whole blocks; it cannot draw by weights "
                "(sampler_type 'weighted_random')",
            )
        if self.shuffle == "block" and self.replacement:
            raise fail("replacement", True, "block shuffle draws every sample once per epoch")
        for knob in (
            "drop_last",
            "auto_tune",
            "pin_memory",
            "persistent_workers",
            "replacement",
            "non_blocking",
            "enable_transforms",
        ):
            check_bool(knob, getattr(self, knob))
        check_choice("loading_mode", self.loading_mode, LOADING_MODES)
        check_choice("reader_mode", self.reader_mode, READER_MODES)
        check_choice("multiprocessing_context", self.multiprocessing_context, MP_CONTEXTS)
        if self.multiprocessing_context not in multiprocessing.get_all_start_methods():
            raise fail(
                "multiprocessing_context",
                self.multiprocessing_context,
                "this platform does not offer that start method",
            )
        check_choice("sampler_type", self.sampler_type, SAMPLER_TYPES)
        check_choice("memory_format", self.memory_format, LOADER_MEMORY_FORMATS)
        check_choice("page_cache_mode", self.page_cache_mode, PAGE_CACHE_MODES)
        object.__setattr__(
            self,
            "timeout_seconds",
            check_number(
                "timeout_seconds",
                self.timeout_seconds,
                maximum=MAX_TIMEOUT_S,
                optional=True,
                what="a number of seconds",
            ),
        )
        if (
            self.shard_rank is not None
            and self.shard_world_size is not None
            and self.shard_rank >= self.shard_world_size
        ):
            raise fail(
                "shard_rank",
                self.shard_rank,
                f"must be < shard_world_size ({self.shard_world_size})",
            )
        if (
            self.worker_id is not None
            and self.num_workers_pytorch is not None
            and self.worker_id >= self.num_workers_pytorch
        ):
            raise fail(
                "worker_id",
                self.worker_id,
                f"must be < num_workers_pytorch ({self.num_workers_pytorch})",
            )
        # numpy integers/bools would make the config unhashable-equal to its dict round trip
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.bool_):
                object.__setattr__(self, f.name, bool(v))
            elif isinstance(v, np.integer):
                object.__setattr__(self, f.name, int(v))
        object.__setattr__(self, "weights", normalise_weights(self.weights))
        if self.sampler_type == "weighted_random" and self.weights is None:
            raise fail("weights", None, "sampler_type 'weighted_random' needs weights")
        if self.sampler_type != "weighted_random" and self.weights is not None:
            raise fail(
                "weights",
                self.weights,
                f"only act with sampler_type 'weighted_random', not {self.sampler_type!r}",
            )
        if self.replacement and self.sampler_type == "sequential" and not self.shuffle:
            raise fail(
                "replacement",
                True,
                "only acts with shuffle=True or sampler_type 'random' / 'weighted_random'",
            )
        if self.sampler_type == "distributed_random" and self.replacement:
            raise fail(
                "replacement",
                True,
                "sampler_type 'distributed_random' draws without replacement; "
                "use 'random' for draws with replacement",
            )

    # ---- derived values --------------------------------------------------------------
    @property
    def rank_drop_last(self) -> bool:
        """Whether the sampler drops the rank tail (``sampler_drop_last``; None: ``drop_last``)."""
        return self.drop_last if self.sampler_drop_last is None else self.sampler_drop_last

    @property
    def shuffle_buffer_spec(self) -> tuple[str, int]:
        """``("samples", n)`` for an integer ``shuffle_buffer``, ``("bytes", n)`` for a size
        string like ``"64MiB"``."""
        v = self.shuffle_buffer
        if isinstance(v, str):
            return "bytes", check_byte_size("shuffle_buffer", v, 1)
        return "samples", check_int("shuffle_buffer", v, 1)

    @property
    def sampler_seed(self) -> int:
        """The seed of every random order: ``generator_seed`` when set, else ``seed``."""
        return self.seed if self.generator_seed is None else self.generator_seed

    def validate_for(self, dataset_len: int) -> None:
        """Check the knobs that depend on the dataset (weights length) against ``dataset_len``."""
        check_int("dataset_len", dataset_len, 0)
        # Checked here, not at construction, so the fluent setters can come in any order.
        if self.cache_limit is not None and self.cache_dir is None:
            raise fail(
                "cache_limit",
                self.cache_limit,
                "needs cache_dir: without one no cache is kept, so the limit would be ignored",
            )
        if self.weights is not None and len(self.weights) != dataset_len:
            raise fail(
                "weights",
                self.weights,
                f"has {len(self.weights)} entries but the dataset has {dataset_len} samples",
            )

    # ---- conversion ------------------------------------------------------------------
    def replace(self, **changes: Any) -> LoaderConfig:
        """A copy with ``changes`` applied (validated like construction)."""
        _reject_unknown(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (weights as a list), JSON-serialisable."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if d["weights"] is not None:
            d["weights"] = list(d["weights"])
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoaderConfig:
        """From ``to_dict()`` output, fastload's or s3dlio's (``sampler_rank`` ...)."""
        if not isinstance(data, Mapping):
            raise TypeError(
                f"LoaderOptions.from_dict needs a mapping of knob names, not {type(data).__name__}"
            )
        data = from_s3dlio_dict(data)
        _reject_unknown(data)
        return cls(**data)


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(LoaderConfig))
DEFAULTS = LoaderConfig()


def _reject_unknown(names: Iterable[str]) -> None:
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"LoaderOptions: a knob name must be a str, not {name!r}")
        if name not in FIELD_NAMES:
            close = difflib.get_close_matches(name, FIELD_NAMES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"LoaderOptions: unknown knob {name!r}{hint}")


class _preset:
    """A method callable on the class (starts from the defaults) or on an instance (starts
    from that instance): ``LoaderOptions.gpu_optimized()`` or ``opts.gpu_optimized()``."""

    def __init__(self, fn: Callable[..., LoaderOptions]) -> None:
        self.fn = fn
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__

    def __get__(
        self, obj: LoaderOptions | None, cls: type[LoaderOptions]
    ) -> Callable[..., LoaderOptions]:
        return types.MethodType(self.fn, obj if obj is not None else cls())


class LoaderOptions:
    """Loader options with s3dlio's fluent API and torch-style keyword construction.

    ``LoaderOptions(batch_size=128, shuffle=True)`` and
    ``LoaderOptions().with_batch_size(128).shuffle(True, 0)`` build equal objects. Every
    fluent method returns a new object; the original is never changed. Names shared by a
    field and a fluent method are the method: read the value with ``opts.get(name)``,
    ``opts.config.<name>``, ``opts.to_dict()`` or ``opts.<name>_value``.
    """

    __slots__ = ("_config",)

    def __init__(self, **knobs: Any) -> None:
        _reject_unknown(knobs)
        self._config = LoaderConfig(**knobs)

    # ---- construction and reading ----------------------------------------------------
    @classmethod
    def from_config(cls, config: LoaderConfig) -> LoaderOptions:
        if not isinstance(config, LoaderConfig):
            raise ValueError(
                f"LoaderOptions.from_config needs a LoaderConfig, not {type(config).__name__}"
            )
        new = cls.__new__(cls)
        new._config = config
        return new

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoaderOptions:
        return cls.from_config(LoaderConfig.from_dict(data))

    @property
    def config(self) -> LoaderConfig:
        return self._config

    def get(self, name: str) -> Any:
        """The value of field ``name`` (works for every field, colliding names included)."""
        _reject_unknown([name])
        return getattr(self._config, name)

    def to_dict(self) -> dict[str, Any]:
        return self._config.to_dict()

    def replace(self, **knobs: Any) -> LoaderOptions:
        """New options with any fields changed by keyword (e.g. ``worker_id=1``)."""
        return self.from_config(self._config.replace(**knobs))

    def validate_for(self, dataset_len: int) -> None:
        self._config.validate_for(dataset_len)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LoaderOptions):
            return self._config == other._config
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._config)

    def __repr__(self) -> str:
        parts = []
        for name in FIELD_NAMES:
            value = getattr(self._config, name)
            if value != getattr(DEFAULTS, name):
                shown = (
                    f"<{len(value)} weights>"
                    if name == "weights" and len(value) > 8
                    else repr(value)
                )
                parts.append(f"{name}={shown}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self).from_config, (self._config,))

    def _with(self, **changes: Any) -> LoaderOptions:
        return self.from_config(dataclasses.replace(self._config, **changes))

    # ---- fluent setters (s3dlio names) -----------------------------------------------
    def with_batch_size(self, size: int) -> LoaderOptions:
        return self._with(batch_size=size)

    def drop_last(self, enabled: bool = True) -> LoaderOptions:
        """Drop the last partial batch (and the rank tail, unless ``sampler_drop_last`` is set)."""
        return self._with(drop_last=enabled)

    def shuffle(self, enabled: bool | str = True, seed: int | None = None) -> LoaderOptions:
        """Shuffle each epoch (turns the sequential sampler random; ``"block"``: block
        shuffle, see :meth:`block_shuffle`); ``seed`` None keeps the seed.

        ``shuffle(False)`` after ``distributed_sampling()`` keeps the rank's share but in
        order, as torch's ``DistributedSampler(shuffle=False)`` (the sequential sampler,
        which splits between ranks the same way)."""
        seed = self._config.seed if seed is None else seed
        if enabled is False and self._config.sampler_type == "distributed_random":
            return self._with(shuffle=False, seed=seed, sampler_type="sequential")
        return self._with(shuffle=enabled, seed=seed)

    def num_workers(self, n: int) -> LoaderOptions:
        return self._with(num_workers=n)

    def prefetch(self, n: int) -> LoaderOptions:
        return self._with(prefetch=n)

    def auto_tune(self, enabled: bool = True) -> LoaderOptions:
        return self._with(auto_tune=enabled)

    def pin_memory(self, enabled: bool = True) -> LoaderOptions:
        return self._with(pin_memory=enabled)

    def persistent_workers(self, enabled: bool = True) -> LoaderOptions:
        return self._with(persistent_workers=enabled)

    def with_timeout(self, seconds: float | None) -> LoaderOptions:
        return self._with(timeout_seconds=seconds)

    def use_spawn(self) -> LoaderOptions:
        return self._with(multiprocessing_context="spawn")

    def use_fork(self) -> LoaderOptions:
        return self._with(multiprocessing_context="fork")

    def use_forkserver(self) -> LoaderOptions:
        return self._with(multiprocessing_context="forkserver")

    def channels_first(self) -> LoaderOptions:
        return self._with(memory_format="channels_first")

    def channels_last(self) -> LoaderOptions:
        return self._with(memory_format="channels_last")

    def non_blocking(self, enabled: bool = True) -> LoaderOptions:
        return self._with(non_blocking=enabled)

    def random_sampling(self, replacement: bool = False) -> LoaderOptions:
        return self._with(sampler_type="random", replacement=replacement, weights=None)

    def weighted_sampling(
        self, weights: Iterable[float], replacement: bool = True
    ) -> LoaderOptions:
        """Draw index i with probability weights[i] / sum(weights); with replacement by
        default (as torch's WeightedRandomSampler)."""
        return self._with(sampler_type="weighted_random", weights=weights, replacement=replacement)

    def distributed_sampling(
        self,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool | None = None,
    ) -> LoaderOptions:
        """Shuffle and shard across ranks (torch DistributedSampler semantics); ``None``
        discovers the value from torch.distributed or RANK / WORLD_SIZE at run time.
        ``drop_last``: the sampler's own (drop the rank tail instead of padding), apart from
        the loader's partial-batch ``drop_last``; None follows that one."""
        return self._with(
            sampler_type="distributed_random",
            shard_rank=rank,
            shard_world_size=world_size,
            replacement=False,
            weights=None,
            sampler_drop_last=drop_last,
        )

    def sequential_sampling(self) -> LoaderOptions:
        return self._with(sampler_type="sequential", replacement=False, weights=None)

    def with_generator_seed(self, seed: int | None) -> LoaderOptions:
        return self._with(generator_seed=seed)

    def enable_transforms(self, enabled: bool = True) -> LoaderOptions:
        return self._with(enable_transforms=enabled)

    def collate_buffer_size(self, size: int) -> LoaderOptions:
        return self._with(collate_buffer_size=size)

    def reader_mode(self, mode: str) -> LoaderOptions:
        return self._with(reader_mode=mode)

    def part_size(self, nbytes: int) -> LoaderOptions:
        return self._with(part_size=nbytes)

    def max_inflight_parts(self, n: int | None) -> LoaderOptions:
        """Parts read at once; None: per scheme (4 for local files, 32 for http(s)/s3)."""
        return self._with(max_inflight_parts=n)

    def loading_mode(self, mode: str) -> LoaderOptions:
        return self._with(loading_mode=mode)

    def page_cache_mode(self, mode: str) -> LoaderOptions:
        return self._with(page_cache_mode=mode)

    def block_size(self, nbytes: int) -> LoaderOptions:
        """Bytes per block of ``shuffle="block"`` and of the node-local cache: one ranged
        GET each (blocks hold whole samples)."""
        return self._with(block_size=nbytes)

    def shuffle_buffer(self, size: int | str) -> LoaderOptions:
        """Block shuffle's window: samples (an int) or bytes (``"64MiB"``) of blocks whose
        samples are shuffled together."""
        return self._with(shuffle_buffer=size)

    def block_shuffle(
        self,
        block_size: int | None = None,
        shuffle_buffer: int | str | None = None,
        seed: int | None = None,
    ) -> LoaderOptions:
        """``shuffle="block"``: blocks permuted, samples shuffled inside a bounded window."""
        cfg = self._config
        return self._with(
            shuffle="block",
            block_size=cfg.block_size if block_size is None else block_size,
            shuffle_buffer=cfg.shuffle_buffer if shuffle_buffer is None else shuffle_buffer,
            seed=cfg.seed if seed is None else seed,
        )

    def cache_dir(self, path: str | None) -> LoaderOptions:
        """A node-local folder that keeps remote blocks for later epochs (None: no cache)."""
        return self._with(cache_dir=path)

    def cache_limit(self, nbytes: int | str | None) -> LoaderOptions:
        """Bytes the cache may hold (least recently used blocks go first); None: no limit."""
        return self._with(cache_limit=nbytes)

    def on_error(self, mode: str) -> LoaderOptions:
        """What a cache that cannot work does: "raise" a CacheError, or "skip" it (read
        around it, counted)."""
        return self._with(on_error=mode)

    # ---- presets ---------------------------------------------------------------------
    @_preset
    def gpu_optimized(self) -> LoaderOptions:
        """Feed a GPU: pinned buffers copied with non_blocking, channels_last layout (no
        transpose from NHWC storage; the fast layout for convolutions on tensor cores),
        4 batches read ahead, worker processes kept across epochs."""
        return self._with(
            pin_memory=True,
            non_blocking=True,
            memory_format="channels_last",
            prefetch=max(self._config.prefetch, 4),
            persistent_workers=True,
        )

    @_preset
    def distributed_optimized(
        self, rank: int | None = None, world_size: int | None = None
    ) -> LoaderOptions:
        """``gpu_optimized`` plus a shuffled shard per rank; ``None`` discovers rank / world
        size from torch.distributed or RANK / WORLD_SIZE at run time."""
        return self.gpu_optimized().distributed_sampling(rank, world_size)

    @_preset
    def debug_mode(self) -> LoaderOptions:
        """Everything serial and in this process, so a failure is easy to trace: no worker
        processes, one batch and one part in flight, batches in order, no auto-tuning, and a
        10 s timeout so a hang surfaces as a TimeoutError."""
        return self._with(
            num_workers=0,
            persistent_workers=False,
            prefetch=1,
            max_inflight_parts=1,
            loading_mode="sequential",
            auto_tune=False,
            timeout_seconds=10.0,
        )


def _field_property(name: str) -> property:
    def read(self: LoaderOptions) -> Any:
        return getattr(self._config, name)

    read.__name__ = name
    read.__doc__ = (
        f"The ``{name}`` field (read-only; use a fluent method or replace() to change it)."
    )
    return property(read)


# Non-colliding fields read as properties; colliding ones as <field>_value (s3dlio's spelling).
for _name in FIELD_NAMES:
    if hasattr(LoaderOptions, _name):
        setattr(LoaderOptions, f"{_name}_value", _field_property(_name))
    else:
        setattr(LoaderOptions, _name, _field_property(_name))
del _name

PyLoaderOptions = LoaderOptions

__all__ = [
    "DEFAULTS",
    "FIELD_NAMES",
    "LoaderConfig",
    "LoaderOptions",
    "PyLoaderOptions",
]
