"""How a loader reads: straight through the engine, or through blocks and the node cache.

The loader reads every batch with ``read_into(sources, table, out, settings, cancel)``;
this module decides, once per loader, what answers that call:

- the engine itself, when nothing below applies (today's path, unchanged);
- a ``BlockReader`` over the dataset's blocks when remote sources are read with
  ``shuffle="block"`` (blocks in memory: two shuffle windows' worth) or with a
  ``cache_dir`` (blocks in the node-local cache), and whenever the dataset knows the
  versions its index was built from (tar shards), so a shard that changed since is
  refused instead of read at stale offsets.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from fastload.errors import CacheFullError
from fastload.plan.block_map import BlockMap
from fastload.plan.datasets import Dataset
from fastload.plan.options import LoaderConfig
from fastload.plan.samplers import BlockShuffleSampler
from fastload.storage.block_reader import BlockReader
from fastload.storage.cache import NodeCache, entry_bytes
from fastload.storage.engine import RangeEngine
from fastload.storage.uri import redact

CACHE_AHEAD_BYTES = 256 << 20


def window_bytes(cfg: LoaderConfig, blocks: BlockMap) -> int:
    """Bytes of one shuffle window (a window ends one block past its budget)."""
    kind, size = cfg.shuffle_buffer_spec
    biggest = int(blocks.nbytes.max()) if len(blocks) else 0
    if kind == "bytes":
        return size + biggest
    per_sample = float(blocks.nbytes.sum()) / max(int(blocks.bounds[-1]), 1)
    return int(size * per_sample) + biggest


def make_read_path(
    engine: RangeEngine, cfg: LoaderConfig, dataset: Dataset, sampler: object
) -> RangeEngine | BlockReader:
    """What the loader's reads go through (see the module notes)."""
    remote = any(not s.is_local for s in dataset.sources)
    versions = getattr(dataset, "versions", None)
    expected = (
        {s.uri: v for s, v in zip(dataset.sources, versions, strict=True)} if versions else {}
    )
    if cfg.cache_dir is not None and not remote:
        warnings.warn(
            "cache_dir: every source of this dataset is local; there is nothing to cache",
            UserWarning,
            stacklevel=3,
        )
    with_blocks = remote and (cfg.shuffle == "block" or cfg.cache_dir is not None)
    if not with_blocks and not expected:
        return engine
    blocks: BlockMap | None = None
    if with_blocks:
        blocks = (
            sampler.blocks
            if isinstance(sampler, BlockShuffleSampler)
            else BlockMap.of(dataset, cfg.block_size)
        )
    cache = (
        NodeCache(cfg.cache_dir, cfg.cache_limit, cfg.on_error)
        if with_blocks and cfg.cache_dir is not None
        else None
    )
    if cache is not None and blocks is not None:
        _check_cache_limit(cfg, blocks)
    # a cache read around (on_error="skip": it could not be used) reads as without cache_dir:
    # block shuffle's blocks in memory, other orders straight through the engine (blocks
    # with no cache and no memory would fetch a whole block per row, again per batch)
    usable = cache is not None and cache.disabled is None
    if not usable and cfg.shuffle != "block":
        blocks = None
    memory = ahead = 0
    if blocks is not None:
        window = window_bytes(cfg, blocks)
        if not usable and cfg.shuffle == "block":
            # the window being read and the next one (read ahead), plus the batches in flight
            memory = 2 * window + (cfg.prefetch + 2) * int(blocks.nbytes.max())
            ahead = window
        elif usable:
            ahead = max(window, CACHE_AHEAD_BYTES)  # on disk: room to read further ahead
    return BlockReader(
        engine,
        blocks.extents_by_uri() if blocks is not None else {},
        memory_bytes=memory,
        cache=cache,
        versions=expected,
        ahead_bytes=ahead,
    )


def _check_cache_limit(cfg: LoaderConfig, blocks: BlockMap) -> None:
    """A block larger than ``cache_limit`` can never be kept: with on_error="raise" say so
    now, naming the knobs, not at that block's first read (possibly hours into an epoch);
    "skip" reads such blocks around the cache, counted."""
    if cfg.cache_limit is None or not len(blocks) or cfg.on_error != "raise":
        return
    b = int(np.argmax(blocks.nbytes))
    need = entry_bytes(int(blocks.nbytes[b]))
    if need > cfg.cache_limit:
        raise CacheFullError(
            f"cache_limit={cfg.cache_limit} is smaller than the cache entry of the largest "
            f"block ({need} bytes: {redact(blocks.uris[int(blocks.src[b])])} bytes "
            f"{int(blocks.start[b])}-{int(blocks.end[b]) - 1}, block_size={cfg.block_size}); "
            f"raise cache_limit, lower block_size, or read around with on_error='skip'"
        )


def plan_epoch(reader: Any, dataset: Dataset, epoch: Any) -> None:
    """Tell a block reader which blocks ``epoch`` needs, in order of first use, so it reads
    them ahead of the loader's reader threads (nothing to do for the plain engine)."""
    if not isinstance(reader, BlockReader) or not reader.blocks or reader.ahead_bytes <= 0:
        return
    parts = [epoch.order[a:b] for a, b in (epoch.slices[k] for k in epoch.todo)]
    order = np.concatenate(parts) if parts else np.empty(0, np.int64)
    if not len(order):
        return
    src, off, length = dataset.sample_ranges(order)
    # (position of first use, uri, block start, bytes the epoch reads from the block)
    firsts: list[tuple[int, str, int, int]] = []
    for s in np.unique(src):
        uri = dataset.uris[int(s)]
        ext = reader.blocks.get(uri)
        if ext is None:
            continue
        pos = np.flatnonzero(src == s)
        k = np.searchsorted(ext[0], off[pos], side="right") - 1
        used, first, inverse = np.unique(k, return_index=True, return_inverse=True)
        nbytes = np.bincount(inverse, weights=length[pos], minlength=len(used))
        firsts.extend(
            (int(pos[f]), uri, int(ext[0][b]), int(n))
            for b, f, n in zip(used, first, nbytes, strict=True)
            if b >= 0
        )
    firsts.sort()
    keys = [(uri, start) for _, uri, start, _ in firsts]
    uses = [n for *_, n in firsts]
    reader.plan(keys, epoch.loader.read_settings, epoch.cancel, uses=uses)


def end_epoch_reads(reader: Any) -> None:
    """An epoch ended (done, failed or dropped): a block reader stops reading its blocks
    ahead (an abandoned epoch's fetchers would go on taking requests and memory)."""
    if isinstance(reader, BlockReader):
        reader.stop_ahead()


def read_path_report(reader: Any) -> dict[str, Any]:
    """``{"blocks": ..., "cache": ...}``: the counters of a loader's read path (the block
    reader's fetches and memory hits; the cache's hits, misses, bytes, evictions ...), None
    for what it does not have."""
    if not isinstance(reader, BlockReader):
        return {"blocks": None, "cache": None}
    stats = reader.stats()
    return {"cache": stats.pop("cache"), "blocks": stats}
