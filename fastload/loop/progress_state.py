"""Progress in terms of the epoch's global order, so a run resumes on other ranks.

Every sampler without replacement splits one global order per epoch between the ranks
(``take_rank``: interleaved; ``take_run``: block shuffle's runs). A loader's state records,
besides its own batches, a *cut* of that order: (world size, split, drop_last, samples each
rank had consumed). Ranks of a data-parallel job step together, so the state of any one of
them says what all of them consumed; the rest of the epoch is the global order minus those
samples, and ``load_state_dict`` on a loader with another world size, rank, batch size or
worker split deals that rest out again: equal counts per rank (padded as every sampler
pads, or trimmed with ``drop_last``), every remaining sample exactly once. A state taken
in a resumed epoch carries the earlier cuts too, so resuming again works the same way.

Refused: a state of another dataset (its URIs and length), another seed or block layout,
draws with replacement (no global order), and batches handed out of order
(``loading_mode="async_pool"``: the ranks' consumed samples are not a known prefix).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from fastload.plan.datasets import Dataset
from fastload.plan.samplers import Sampler, rank_count, split_for_worker, take_rank, take_run

# identity keys that may differ between the saving and the resuming loader
_ELASTIC_KEYS = ("rank", "world_size", "worker_id", "num_workers", "batch_size", "drop_last")

Cut = tuple[int, str, bool, int]  # (world size, split, drop_last, samples consumed per rank)


def dataset_digest(dataset: Dataset) -> str:
    """What identifies a dataset in a state: its sources and its length."""
    h = hashlib.blake2b(digest_size=16)
    for uri in dataset.uris:
        h.update(uri.encode("utf-8", "surrogateescape") + b"\0")
    h.update(str(len(dataset)).encode())
    return h.hexdigest()


def share(order: np.ndarray, rank: int, world: int, split: str, drop_last: bool) -> np.ndarray:
    """Rank ``rank``'s part of ``order`` (equal counts on every rank)."""
    count = rank_count(len(order), world, drop_last)
    take = take_rank if split == "interleave" else take_run
    return take(order, rank, world, count)


def remaining(order: np.ndarray, cuts: list[Cut]) -> np.ndarray:
    """``order`` without what the ranks of each cut consumed, in order."""
    for world, split, drop_last, consumed in cuts:
        n = len(order)
        count = rank_count(n, world, drop_last)
        c = min(int(consumed), count)
        if split == "interleave":  # ranks r took positions r, r + world, ...: a prefix
            order = order[min(world * c, n) :]
            continue
        done = np.zeros(n, dtype=bool)
        if n and c:
            pos = (np.arange(world)[:, None] * count + np.arange(c)[None, :]) % n
            done[pos.ravel()] = True
        order = order[~done]
    return order


class ResumedSampler:
    """The loader's sampler for one resumed epoch: the rest of the global order after
    ``cuts``, dealt to this rank and worker; every other epoch is the base sampler's."""

    def __init__(self, base: Sampler, epoch: int, cuts: list[Cut]) -> None:
        order = base.global_order(epoch)
        if order is None:
            raise ValueError("load_state_dict: draws with replacement have no global order")
        self.base = base
        self.resume_epoch = epoch
        self.cuts = cuts
        rest = remaining(np.asarray(order, dtype=np.int64), cuts)
        mine = share(rest, base.rank, base.world_size, base.split, base.drop_last)
        self._share = split_for_worker(mine, base.worker_id, base.num_workers, base.batch_size)

    def indices(self, epoch: int | None = None) -> np.ndarray:
        if epoch == self.resume_epoch:
            return self._share.astype(np.int64, copy=False)
        return self.base.indices(epoch)

    def epoch_len(self, epoch: int) -> int:
        return len(self._share) if epoch == self.resume_epoch else self.base.epoch_len(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)


def base_sampler(sampler: Any) -> Sampler:
    return sampler.base if isinstance(sampler, ResumedSampler) else sampler


def global_progress(
    sampler: Any, epoch: int, done: list[int], samples_done: int
) -> dict[str, Any] | None:
    """The ``"global"`` entry of a loader state: the cuts of ``epoch``'s global order so far
    (None when the progress cannot be put in those terms). ``done``: the batches handed out,
    sorted; ``samples_done``: the samples they hold."""
    base = base_sampler(sampler)
    if not base.has_global_order or base.num_workers != 1:
        return None  # replacement draws; a share split between torch workers
    if done and done[-1] != len(done) - 1:
        return None  # batches handed out of order (sorted and distinct: a prefix ends at n-1)
    consumed = samples_done
    earlier = (
        list(sampler.cuts)
        if isinstance(sampler, ResumedSampler) and sampler.resume_epoch == epoch
        else []
    )
    cut: Cut = (base.world_size, base.split, base.drop_last, consumed)
    return {"epoch": epoch, "cuts": [list(c) for c in (*earlier, cut)]}


def _from_elsewhere(state: dict[str, Any], mine: dict[str, Any]) -> bool:
    theirs, ours = state.get("sampler") or {}, mine["sampler"]
    return state.get("batch_size") != mine["batch_size"] or any(
        theirs.get(k) != ours.get(k) for k in _ELASTIC_KEYS
    )


def wants_elastic(state: dict[str, Any], mine: dict[str, Any]) -> bool:
    """Whether ``state`` must be resumed through the global order: it carries one, and it
    comes from other ranks / batch size / worker split, or from a resumed epoch. A state
    from elsewhere without one raises ValueError saying why it cannot be resumed here."""
    g = state.get("global")
    if not isinstance(g, dict):
        if "global" in state and _from_elsewhere(state, mine):
            raise ValueError(
                "load_state_dict: the state is from other ranks, batch size or worker split "
                f"and cannot be resumed here: {not_resumable(state)}"
            )
        return False
    return len(g.get("cuts") or ()) > 1 or _from_elsewhere(state, mine)


def resume_elsewhere(sampler: Any, state: dict[str, Any], mine: dict[str, Any]) -> ResumedSampler:
    """The sampler that runs the rest of ``state``'s epoch on this loader's ranks; a
    ValueError naming what differs when the state is of another order."""
    if state.get("dataset") is not None and state.get("dataset") != mine.get("dataset"):
        raise ValueError("load_state_dict: the state is of another dataset (other URIs or length)")
    if state.get("dataset_len") != mine["dataset_len"]:
        raise ValueError(
            f"load_state_dict: the state has dataset_len={state.get('dataset_len')!r}, "
            f"this loader {mine['dataset_len']}"
        )
    theirs = state.get("sampler") or {}
    for key, value in mine["sampler"].items():
        if key not in _ELASTIC_KEYS and theirs.get(key) != value:
            raise ValueError(
                f"load_state_dict: the state's sampler has {key}={theirs.get(key)!r}, "
                f"this loader's {value!r}"
            )
    base = base_sampler(sampler)
    if base.num_workers != 1:
        raise ValueError(
            "load_state_dict: resuming on other ranks needs num_workers_pytorch=1 (each torch "
            "worker's loader holds only its own share)"
        )
    g = state["global"]
    cuts: list[Cut] = []
    for c in g["cuts"]:
        world, split, drop_last, consumed = c
        if split not in ("interleave", "contiguous") or int(world) < 1 or int(consumed) < 0:
            raise ValueError(f"load_state_dict: a malformed cut {c!r} in the state")
        cuts.append((int(world), str(split), bool(drop_last), int(consumed)))
    return ResumedSampler(base, int(g["epoch"]), cuts)


def not_resumable(state: dict[str, Any]) -> str:
    """Why a state from other ranks cannot be resumed here (it carries no global progress)."""
    sampler = state.get("sampler") or {}
    if sampler.get("replacement"):
        return "its sampler draws with replacement (no global order to re-split)"
    return (
        "its batches were handed out of order (loading_mode='async_pool') or split between "
        "torch workers, so what every rank consumed is not known"
    )
