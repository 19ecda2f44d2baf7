"""Samplers: which sample indices this rank and worker read in an epoch, reproducibly.

An epoch's indices are a pure function of (seed, epoch, rank, world size, worker, worker
count): the same in any process, on any machine, with no state carried between epochs.
Every order is built with numpy in O(n) vector operations, never a Python loop per index
(block shuffle loops once per window of blocks).

Three steps, each a plain array in, array out:

1. The order of the epoch. Sequential: 0..n-1. Random without replacement: a permutation
   drawn by ``Generator(PCG64(SeedSequence(seed, spawn_key=(epoch,))))``, the same on every
   rank. Weighted without replacement: Efraimidis-Spirakis keys (exponential / weight)
   sorted, drawn from the same stream.
2. The rank's share, with torch ``DistributedSampler`` semantics: every rank gets the same
   count, ``ceil(n / world_size)`` (the order is padded by repeating it from its start) or
   ``floor(n / world_size)`` with ``drop_last`` (the tail is dropped); rank r takes
   positions r, r + world_size, ... Samplers that draw WITH replacement skip step 1: each
   rank draws its own count from its own stream, the ``SeedSequence.spawn`` child
   ``spawn_key=(epoch, rank)``.
3. The worker's share inside the rank (``worker_id`` of ``num_workers``, for running inside
   another loader's worker processes): whole batches of ``batch_size``, dealt round-robin,
   so worker w gets batches w, w + num_workers, ... A torch DataLoader that takes one batch
   from each worker in turn therefore yields exactly the rank's order.

Seeds: ``make_sampler`` seeds with ``config.generator_seed`` when it is set, else
``config.seed``. Worker processes that need their own random numbers (transforms) take
``worker_generator(seed, epoch, rank, worker_id)``, a spawned child stream.

Resuming: ``indices(epoch)[position:]`` is the rest of an epoch after ``position``
indices; ``state_dict()`` / ``load_state_dict()`` carry (epoch, position) and refuse a
state from a sampler with other parameters; ``__iter__`` continues from the position.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from numpy.random import PCG64, Generator, SeedSequence

from fastload.checks import check_bool, check_int, check_seed
from fastload.plan.block_map import BlockMap
from fastload.plan.datasets import Dataset
from fastload.plan.distributed import (
    rank_and_world_size,
    resolve_rank,
    resolve_worker,
    worker_and_num_workers,
)
from fastload.plan.options import LoaderConfig, normalise_weights

_INT32_MAX = np.iinfo(np.int32).max
_ITER_CHUNK = 8192
# Draws searched per sorted run: big enough to be cheap to sort, small enough to stay in cache.
_SEARCH_CHUNK = 1 << 20
# Scaled weights below this make exponential / weight overflow (2**-1010: room for draws < 2**13).
_TINY_SCALED = 2.0**-1010


def _power_of_two_scaled(weights: np.ndarray) -> np.ndarray:
    """``weights`` times the power of two that puts the largest in [0.5, 1): an exact scaling
    (no weight changes its bits but the exponent) unless a weight falls below 2**-1074."""
    _, exponent = np.frexp(weights.max())
    return np.ldexp(weights, -int(exponent))


def stable_argsort(keys: np.ndarray) -> np.ndarray:
    """``np.argsort(keys, kind="stable")``, the same permutation, about 3x faster on large
    arrays: numpy's unstable sort (vectorised), then each run of equal keys (rare for random
    floats) put back in index order. Ties are found in chunks: no second array of keys."""
    perm = np.argsort(keys)
    tied: list[np.ndarray] = []  # sorted positions p with keys[perm[p]] == keys[perm[p + 1]]
    for a in range(0, max(len(keys) - 1, 0), _SEARCH_CHUNK):
        ranked = keys[perm[a : a + _SEARCH_CHUNK + 1]]
        tie = np.flatnonzero(ranked[1:] == ranked[:-1])
        if len(tie):
            tied.append(tie + a)
    if not tied:
        return perm
    first = np.concatenate(tied)
    pos = np.union1d(first, first + 1)  # every sorted position inside a run of equal keys
    ranked = keys[perm[pos]]
    # a run starts where the key changes or where the previous position is not in a run
    starts = np.ones(len(pos), dtype=bool)
    starts[1:] = (pos[1:] != pos[:-1] + 1) | (ranked[1:] != ranked[:-1])
    members = perm[pos]
    perm[pos] = members[np.lexsort((members, np.cumsum(starts)))]
    return perm


def searchsorted_unordered(cdf: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``np.searchsorted(cdf, values, side="right")``, the same result, but fast for many
    values in random order over a large ``cdf``: a binary search per random value misses the
    cache at every step (15 s for 10**7 over 10**7); sorted runs of values walk it in order."""
    if len(values) <= 1024 or len(cdf) <= 1 << 16:  # small: the cdf stays in cache anyway
        return np.searchsorted(cdf, values, side="right")
    out = np.empty(len(values), dtype=np.intp)
    for start in range(0, len(values), _SEARCH_CHUNK):
        chunk = values[start : start + _SEARCH_CHUNK]
        order = np.argsort(chunk)
        out[start : start + len(chunk)][order] = np.searchsorted(cdf, chunk[order], side="right")
    return out


def seed_sequence(seed: int, epoch: int, *path: int) -> SeedSequence:
    """The seed sequence of (seed, epoch); ``path`` selects a spawned child, e.g. (rank,)."""
    return SeedSequence(seed, spawn_key=(epoch, *path))


def worker_generator(seed: int, epoch: int, rank: int = 0, worker_id: int = 0) -> Generator:
    """An independent random stream for one worker process of one rank in one epoch
    (a ``SeedSequence.spawn`` child of the rank's stream), e.g. for random transforms."""
    return Generator(PCG64(seed_sequence(seed, epoch, rank, worker_id)))


def rank_count(population: int, world_size: int, drop_last: bool) -> int:
    """Indices per rank: ceil(population / world_size), or floor with ``drop_last``."""
    return population // world_size if drop_last else -(-population // world_size)


def take_rank(order: np.ndarray, rank: int, world_size: int, count: int) -> np.ndarray:
    """Rank ``rank``'s ``count`` indices of ``order`` (torch DistributedSampler layout):
    positions rank, rank + world_size, ... of the order padded by repeating it from its start."""
    n = len(order)
    total = count * world_size
    if total <= n:
        if world_size == 1 and total == n:
            return order
        return order[rank:total:world_size].copy()  # copy: do not pin the whole order
    return order[np.arange(rank, total, world_size) % n]


def worker_count(rank_len: int, worker_id: int, num_workers: int, batch_size: int) -> int:
    """How many of a rank's ``rank_len`` indices worker ``worker_id`` gets (see split_for_worker)."""
    block = batch_size * num_workers
    full = rank_len // block
    return full * batch_size + min(
        max(rank_len - full * block - worker_id * batch_size, 0), batch_size
    )


def split_for_worker(
    indices: np.ndarray, worker_id: int, num_workers: int, batch_size: int
) -> np.ndarray:
    """Worker ``worker_id``'s batches of ``indices``: batches worker_id, worker_id + num_workers, ..."""
    if num_workers == 1:
        return indices
    block = batch_size * num_workers
    full = len(indices) // block
    head = indices[: full * block].reshape(full, num_workers, batch_size)[:, worker_id, :]
    tail = indices[full * block :][worker_id * batch_size : (worker_id + 1) * batch_size]
    return np.concatenate([head.reshape(-1), tail])


class Sampler:
    """Common machinery; subclasses say how a rank's indices for an epoch are made.

    ``rank`` / ``world_size`` / ``worker_id`` / ``num_workers`` of ``None`` are discovered
    (``fastload.plan.distributed``). ``batch_size`` only matters for the split between workers.
    """

    def __init__(
        self,
        dataset_len: int,
        *,
        seed: int = 0,
        rank: int | None = 0,
        world_size: int | None = 1,
        drop_last: bool = False,
        worker_id: int | None = 0,
        num_workers: int | None = 1,
        batch_size: int = 1,
    ) -> None:
        check_int("dataset_len", dataset_len, 0)
        check_seed("seed", seed)
        check_int("batch_size", batch_size, 1)
        check_bool("drop_last", drop_last)
        for knob, value, low in (
            ("shard_rank", rank, 0),
            ("shard_world_size", world_size, 1),
            ("worker_id", worker_id, 0),
            ("num_workers_pytorch", num_workers, 1),
        ):
            check_int(knob, value, low, optional=True)
        self.dataset_len = int(dataset_len)
        self.seed = int(seed)
        self.rank, self.world_size = resolve_rank(rank, world_size)
        self.worker_id, self.num_workers = resolve_worker(worker_id, num_workers)
        self.drop_last = bool(drop_last)
        self.batch_size = int(batch_size)
        self._epoch = 0
        self._position = 0

    # How the epoch's global order is dealt to ranks: "interleave" (rank r takes positions
    # r, r + world_size, ...: take_rank) or "contiguous" (rank r takes one run: take_run).
    split = "interleave"

    # ---- what subclasses provide ---------------------------------------------------
    def global_order(self, epoch: int) -> np.ndarray | None:
        """The epoch's order before the split between ranks (one order shared by every
        rank), or None for draws with replacement, which have no such order."""
        return None

    @property
    def has_global_order(self) -> bool:
        """Whether :meth:`global_order` gives an order (so progress can be re-split)."""
        return type(self).global_order is not Sampler.global_order and not getattr(
            self, "replacement", False
        )

    def epoch_len(self, epoch: int) -> int:
        """Indices of ``epoch`` for this rank and worker (the same every epoch here)."""
        return len(self)

    def _population(self) -> int:
        """How many indices one epoch has before the split between ranks."""
        return self.dataset_len

    def _rank_indices(self, epoch: int) -> np.ndarray:
        """This rank's indices of ``epoch`` (any integer dtype)."""
        raise NotImplementedError

    # ---- the common interface ------------------------------------------------------
    @property
    def rank_len(self) -> int:
        """Indices per epoch for this rank (all workers together); equal on every rank."""
        return rank_count(self._population(), self.world_size, self.drop_last)

    def __len__(self) -> int:
        """Indices per epoch for this rank and worker."""
        return worker_count(self.rank_len, self.worker_id, self.num_workers, self.batch_size)

    def indices(self, epoch: int | None = None) -> np.ndarray:
        """This rank's and worker's indices of ``epoch`` (default: the current epoch), int64."""
        epoch = self._epoch if epoch is None else epoch
        check_int("epoch", epoch, 0)
        mine = split_for_worker(
            self._rank_indices(int(epoch)), self.worker_id, self.num_workers, self.batch_size
        )
        return mine.astype(np.int64, copy=False)

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def position(self) -> int:
        """How many indices of the current epoch have been consumed."""
        return self._position

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that ``__iter__`` walks. A different epoch starts at position 0;
        the same epoch keeps the position (so a resumed run may call set_epoch as usual)."""
        check_int("epoch", epoch, 0)
        if epoch != self._epoch:
            self._epoch = int(epoch)
            self._position = 0

    def remaining(self) -> np.ndarray:
        """The current epoch's indices not yet consumed: ``indices(epoch)[position:]``."""
        return self.indices(self._epoch)[self._position :]

    def __iter__(self) -> Iterator[int]:
        """The current epoch from ``position`` on; a finished pass resets the position to 0,
        an abandoned one leaves it where it stopped (that is the resume point)."""
        order = self.indices(self._epoch)
        for start in range(self._position, len(order), _ITER_CHUNK):
            for offset, index in enumerate(order[start : start + _ITER_CHUNK].tolist()):
                self._position = start + offset + 1
                yield index
        self._position = 0

    def _identity(self) -> dict[str, Any]:
        return {
            "sampler": type(self).__name__,
            "dataset_len": self.dataset_len,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "worker_id": self.worker_id,
            "num_workers": self.num_workers,
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
        }

    def state_dict(self) -> dict[str, Any]:
        """Where this sampler is: epoch, position, and the parameters that fix the order."""
        return {**self._identity(), "epoch": self._epoch, "position": self._position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; refuses a state taken from a sampler with another order."""
        for key, mine in self._identity().items():
            if state.get(key) != mine:
                raise ValueError(
                    f"sampler state does not match this sampler: {key} is "
                    f"{state.get(key)!r} in the state but {mine!r} here"
                )
        check_int("epoch", state.get("epoch"), 0)
        check_int("position", state.get("position"), 0)
        if state["position"] > len(self):
            raise ValueError(
                f"sampler state position={state['position']} is past the end of "
                f"the epoch ({len(self)} indices)"
            )
        self._epoch = int(state["epoch"])
        self._position = int(state["position"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._identity().items() if k != 'sampler')})"

    def _generator(self, epoch: int, *path: int) -> Generator:
        return Generator(PCG64(seed_sequence(self.seed, epoch, *path)))

    def _permutation(self, epoch: int, n: int) -> np.ndarray:
        # int32 halves the memory when the order is only an intermediate; the shuffle draws
        # the same numbers whatever the dtype, so the order does not depend on this choice
        whole = self.world_size == 1 and self.num_workers == 1
        order = np.arange(n, dtype=np.int64 if whole or n > _INT32_MAX else np.int32)
        self._generator(epoch).shuffle(order)
        return order


class SequentialSampler(Sampler):
    """0, 1, ..., n-1 every epoch (split between ranks and workers as described above)."""

    def global_order(self, epoch: int) -> np.ndarray:
        return np.arange(self.dataset_len, dtype=np.int64)

    def _rank_indices(self, epoch: int) -> np.ndarray:
        n, total = self.dataset_len, self.rank_len * self.world_size
        positions = np.arange(self.rank, total, self.world_size, dtype=np.int64)
        return positions % n if total > n else positions


class RandomSampler(Sampler):
    """A new random order each epoch. Without replacement: a permutation shared by all
    ranks, which then split it (disjoint shares). With replacement: each rank draws its
    ``rank_len`` indices uniformly from its own stream (repeats expected)."""

    def __init__(self, dataset_len: int, *, replacement: bool = False, **common: Any) -> None:
        check_bool("replacement", replacement)
        super().__init__(dataset_len, **common)
        self.replacement = bool(replacement)

    def _identity(self) -> dict[str, Any]:
        return {**super()._identity(), "replacement": self.replacement}

    def global_order(self, epoch: int) -> np.ndarray | None:
        return None if self.replacement else self._permutation(epoch, self.dataset_len)

    def _rank_indices(self, epoch: int) -> np.ndarray:
        if self.replacement:
            if self.rank_len == 0:
                return np.empty(0, dtype=np.int64)
            return self._generator(epoch, self.rank).integers(
                0, self.dataset_len, size=self.rank_len, dtype=np.int64
            )
        order = self._permutation(epoch, self.dataset_len)
        return take_rank(order, self.rank, self.world_size, self.rank_len)


class DistributedRandomSampler(RandomSampler):
    """torch ``DistributedSampler(shuffle=True)``: a permutation seeded by (seed, epoch),
    padded by repeating its start (or its tail dropped with ``drop_last``) so every rank
    gets the same count. ``rank`` / ``world_size`` default to discovery (torch.distributed,
    then RANK / WORLD_SIZE). Call ``set_epoch`` each epoch for a new order."""

    def __init__(
        self,
        dataset_len: int,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        **common: Any,
    ) -> None:
        if common.pop("replacement", False):
            raise ValueError(
                "DistributedRandomSampler draws without replacement: "
                "replacement=True is invalid (use RandomSampler)"
            )
        super().__init__(dataset_len, replacement=False, rank=rank, world_size=world_size, **common)


class WeightedRandomSampler(Sampler):
    """Index i drawn with probability weights[i] / sum(weights).

    With replacement (the default, as torch): each rank draws ``rank_len`` indices from its
    own stream, ``dataset_len`` draws per epoch in all. Without replacement: each index of
    positive weight appears once per epoch, in a weighted random order (heavier ones
    earlier), shared by all ranks and split like a permutation; zero weights never appear.
    """

    def __init__(
        self,
        weights: Sequence[float] | np.ndarray,
        *,
        replacement: bool = True,
        dataset_len: int | None = None,
        **common: Any,
    ) -> None:
        check_bool("replacement", replacement)
        w = np.asarray(normalise_weights(weights), dtype=np.float64)
        if dataset_len is not None and dataset_len != len(w):
            raise ValueError(
                f"weights has {len(w)} entries but the dataset has {dataset_len} samples"
            )
        super().__init__(len(w), **common)
        self.replacement = bool(replacement)
        self.weights = w
        self._positive = np.flatnonzero(w > 0)
        # Draws use the weights scaled by a power of two (exact: the same draws as the weights
        # themselves), so that their sum cannot overflow (weights near 1e308) nor round to
        # nothing (weights near 5e-324): any weights that pass validation sample correctly.
        self._scaled = _power_of_two_scaled(w)
        self._cdf = np.cumsum(self._scaled)

    def _identity(self) -> dict[str, Any]:
        # the weights are part of what fixes the order: compare them by digest
        digest = hashlib.blake2b(self.weights.tobytes(), digest_size=16).hexdigest()
        return {**super()._identity(), "replacement": self.replacement, "weights_digest": digest}

    def _population(self) -> int:
        return self.dataset_len if self.replacement else len(self._positive)

    def global_order(self, epoch: int) -> np.ndarray | None:
        if self.replacement:
            return None
        expo = self._generator(epoch).exponential(size=len(self._positive))
        every = len(self._positive) == self.dataset_len  # no zero weight: skip two gathers
        w = self._scaled if every else self._scaled[self._positive]
        if len(w) and w.min() < _TINY_SCALED:
            # exponential / weight would overflow or lose its bits: compare logarithms instead
            keys = np.log(expo) - np.log(self.weights if every else self.weights[self._positive])
        else:
            keys = np.divide(expo, w, out=expo)
        del expo, w
        perm = stable_argsort(keys)
        del keys
        return perm if every else self._positive[perm]

    def _rank_indices(self, epoch: int) -> np.ndarray:
        if self.replacement:
            u = self._generator(epoch, self.rank).random(self.rank_len) * self._cdf[-1]
            drawn = searchsorted_unordered(self._cdf, u)
            # u * total can round up to total; the last positive index is the right answer
            return np.minimum(drawn, self._positive[-1])
        order = self.global_order(epoch)
        assert order is not None
        return take_rank(order, self.rank, self.world_size, self.rank_len)


def take_run(order: np.ndarray, rank: int, world_size: int, count: int) -> np.ndarray:
    """Rank ``rank``'s ``count`` indices of ``order`` as one run: positions rank * count ...
    (rank + 1) * count - 1 of the order padded by repeating it from its start. Each rank then
    reads its own blocks (an interleaved split would make every rank read every block)."""
    n = len(order)
    start = rank * count
    if start + count <= n:
        if world_size == 1 and count == n:
            return order
        return order[start : start + count].copy()
    return order[np.arange(start, start + count) % n]


class BlockShuffleSampler(Sampler):
    """``shuffle="block"``: an order that keeps reads large and is still a full shuffle of
    blocks. Each epoch the blocks (``fastload.plan.block_map``: runs of samples of one
    shard, one request each) are permuted, cut into windows of ``shuffle_buffer`` (samples,
    or bytes of blocks), and the samples of each window shuffled together. Every sample
    appears once per epoch; a reader needs only the blocks of one or two windows at a time.
    Ranks take runs of the order (``take_run``), equal in length as every sampler's.

    The epoch's first ``shuffle_buffer`` ramps up (as webdataset's ``initial`` buffer):
    it is cut into windows of 1/16, 1/16, 1/8, 1/4 and 1/2 of it, so the first batch
    waits on a few blocks, not on a whole buffer's (from remote storage, that whole first
    window is the time to the first batch)."""

    ramp = 4  # the first buffer's windows: 1/2**ramp of it, doubling up to 1/2

    split = "contiguous"

    def __init__(
        self,
        blocks: BlockMap,
        *,
        shuffle_buffer: tuple[str, int] = ("samples", 1),
        **common: Any,
    ) -> None:
        super().__init__(int(blocks.bounds[-1]), **common)
        self.blocks = blocks
        self.buffer_kind, self.buffer = shuffle_buffer
        self._memo: tuple[int, np.ndarray] | None = None

    def _identity(self) -> dict[str, Any]:
        b = self.blocks
        digest = hashlib.blake2b(
            b.bounds.tobytes() + b.src.tobytes() + b.start.tobytes(), digest_size=16
        ).hexdigest()
        return {
            **super()._identity(),
            "block_size": b.block_size,
            "blocks_digest": digest,
            "shuffle_buffer": [self.buffer_kind, self.buffer],
            "ramp": self.ramp,
        }

    def windows(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(block permutation, window of each permuted block) of ``epoch``."""
        gen = self._generator(epoch)
        perm = gen.permutation(len(self.blocks))
        sizes = (self.blocks.counts if self.buffer_kind == "samples" else self.blocks.nbytes)[perm]
        at = np.cumsum(sizes) - sizes  # where each block starts, in samples or bytes
        # windows 0..ramp cut the first buffer at 1/16, 1/8, 1/4, 1/2 of it; then one a buffer
        edges = np.array([self.buffer >> k for k in range(self.ramp, 0, -1)], dtype=np.int64)
        ramped = np.searchsorted(edges, at, side="right")
        return perm, np.where(at < self.buffer, ramped, self.ramp + at // self.buffer)

    def global_order(self, epoch: int) -> np.ndarray:
        if self._memo is not None and self._memo[0] == epoch:
            return self._memo[1]
        gen = self._generator(epoch, 1 << 30)  # the in-window shuffles' own stream
        perm, window = self.windows(epoch)
        counts = self.blocks.counts[perm]
        first = np.cumsum(counts) - counts  # where each permuted block starts in the order
        order = np.repeat(self.blocks.bounds[:-1][perm] - first, counts) + np.arange(
            self.dataset_len, dtype=np.int64
        )
        edges = np.flatnonzero(np.diff(window)) + 1
        cuts = np.concatenate(([0], first[edges], [self.dataset_len]))
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            gen.shuffle(order[a:b])
        self._memo = (epoch, order)
        return order

    def _rank_indices(self, epoch: int) -> np.ndarray:
        return take_run(self.global_order(epoch), self.rank, self.world_size, self.rank_len)


def make_sampler(config: LoaderConfig, dataset_len: int, dataset: Dataset | None = None) -> Sampler:
    """The sampler ``config`` asks for over ``dataset_len`` samples.

    ``sampler_type`` picks the class; ``"sequential"`` with ``shuffle=True`` becomes a
    ``RandomSampler``, and any sampler but the weighted one with ``shuffle="block"`` a
    ``BlockShuffleSampler`` over ``dataset``'s blocks. Rank and worker come from
    ``fastload.plan.distributed`` (explicit values win, ``None`` discovers); the seed is
    ``config.sampler_seed``.
    """
    config.validate_for(dataset_len)
    rank, world_size = rank_and_world_size(config)
    worker_id, num_workers = worker_and_num_workers(config)
    common: dict[str, Any] = {
        "seed": config.sampler_seed,
        "rank": rank,
        "world_size": world_size,
        "drop_last": config.rank_drop_last,
        "worker_id": worker_id,
        "num_workers": num_workers,
        "batch_size": config.batch_size,
    }
    kind = config.sampler_type
    if config.shuffle == "block":
        if dataset is None or len(dataset) != dataset_len:
            raise ValueError("shuffle='block' needs the dataset (its blocks) to build the order")
        return BlockShuffleSampler(
            BlockMap.of(dataset, config.block_size),
            shuffle_buffer=config.shuffle_buffer_spec,
            **common,
        )
    if kind == "sequential" and not config.shuffle:
        return SequentialSampler(dataset_len, **common)
    if kind in ("sequential", "random"):
        return RandomSampler(dataset_len, replacement=config.replacement, **common)
    if kind == "weighted_random":
        assert config.weights is not None  # LoaderConfig guarantees it
        return WeightedRandomSampler(
            config.weights, replacement=config.replacement, dataset_len=dataset_len, **common
        )
    return DistributedRandomSampler(dataset_len, **common)


__all__ = [
    "BlockShuffleSampler",
    "DistributedRandomSampler",
    "RandomSampler",
    "Sampler",
    "SequentialSampler",
    "WeightedRandomSampler",
    "make_sampler",
    "rank_count",
    "searchsorted_unordered",
    "seed_sequence",
    "split_for_worker",
    "stable_argsort",
    "take_rank",
    "take_run",
    "worker_count",
    "worker_generator",
]
