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
(``loading_mode="async_pool"``: the ranks' consumed samples are not a known prefix; on
several ranks even when the saving rank's happen to be one). A state is checked key by key
(``check_state``) before anything else: a ValueError names what is malformed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fastload.checks import INT64_MAX, is_int, shown
from fastload.plan.datasets import Dataset
from fastload.plan.samplers import Sampler, rank_count, split_for_worker, take_rank, take_run

# identity keys that may differ between the saving and the resuming loader
_ELASTIC_KEYS = ("rank", "world_size", "worker_id", "num_workers", "batch_size", "drop_last")

Cut = tuple[int, str, bool, int]  # (world size, split, drop_last, samples consumed per rank)

# The layout of a loader state. A state without "version" is of version 1 (written before
# the key existed, the same layout); a larger one is of a newer fastload and is refused.
STATE_VERSION = 1
STATE_KEYS = (
    "version",
    "epoch",
    "batches_done",
    "samples_done",
    "global",
    "dataset",
    "batch_size",
    "dataset_len",
    "sampler_len",
    "sampler",
)
_SPLITS = ("interleave", "contiguous")


def _bad(key: str, value: Any, why: str) -> ValueError:
    return ValueError(f"load_state_dict: the state's {key}={shown(value)} is invalid: {why}")


def _count(key: str, value: Any, minimum: int = 0) -> int:
    if not is_int(value):
        raise _bad(key, value, f"must be an integer, not {type(value).__name__}")
    if not minimum <= value <= INT64_MAX:
        raise _bad(key, value, f"must be in [{minimum}, 2**63 - 1]")
    return int(value)


def _is_list(value: Any) -> bool:
    """A list as a checkpoint format may give it back: list, tuple, a config framework's
    sequence, a numpy array (not a str, which is a sequence too)."""
    if isinstance(value, np.ndarray):
        return value.ndim == 1
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def check_state(state: Any) -> dict[str, Any]:
    """``state`` checked key by key, as ``state_dict()`` writes it (a JSON or torch.save
    round trip keeps it so): a ValueError naming the key and what is wrong with it for a
    state that is no mapping, lacks a key, has one this version does not know, is of a
    newer version, or holds a value of the wrong type or range (a float, a str or NaN
    where an int belongs, a negative count, batches listed twice, a cut that is no
    (world size, split, drop_last, consumed) or disagrees with ``samples_done``)."""
    if not isinstance(state, Mapping):
        raise ValueError(
            f"load_state_dict: the state must be a dict (as state_dict() returns), "
            f"not {type(state).__name__}"
        )
    version = _count("version", state.get("version", 1), 1)
    if version > STATE_VERSION:
        raise _bad(
            "version", version, f"a newer fastload wrote it (this one reads {STATE_VERSION})"
        )
    unknown = sorted(str(k) for k in state if k not in STATE_KEYS)
    if unknown:
        raise ValueError(
            f"load_state_dict: the state has keys this fastload does not know: {unknown}"
        )
    missing = [k for k in STATE_KEYS[1:] if k not in state]
    if missing:
        raise ValueError(f"load_state_dict: the state lacks {missing}")
    out = dict(state)
    out["version"] = version
    out["epoch"] = epoch = _count("epoch", state["epoch"])
    for key in ("samples_done", "dataset_len", "sampler_len"):
        out[key] = _count(key, state[key])
    out["batch_size"] = _count("batch_size", state["batch_size"], 1)
    done = state["batches_done"]
    if not _is_list(done):
        raise _bad("batches_done", done, "must be a list of batch numbers")
    out["batches_done"] = [_count(f"batches_done[{i}]", k) for i, k in enumerate(done)]
    if len(set(out["batches_done"])) != len(done):
        raise _bad("batches_done", done, "lists a batch twice")
    if not isinstance(state["dataset"], str):
        raise _bad("dataset", state["dataset"], "must be the dataset's digest (a str)")
    if not isinstance(state["sampler"], Mapping):
        raise _bad("sampler", state["sampler"], "must be a dict of the sampler's parameters")
    g = state["global"]
    if g is not None:
        if not isinstance(g, Mapping) or sorted(g) != ["cuts", "epoch"]:
            raise _bad("global", g, "must be None or a dict of 'epoch' and 'cuts'")
        if _count("global.epoch", g["epoch"]) != epoch:
            raise _bad("global.epoch", g["epoch"], f"must be the state's epoch {epoch}")
        cuts = g["cuts"]
        if not _is_list(cuts) or not len(cuts):
            raise _bad("global.cuts", cuts, "must be a non-empty list of cuts")
        checked: list[Cut] = []
        for i, c in enumerate(cuts):
            key = f"global.cuts[{i}]"
            if not _is_list(c) or len(c) != 4:
                raise _bad(key, c, "must be [world size, split, drop_last, consumed]")
            world, split, drop_last, consumed = c
            if split not in _SPLITS or not isinstance(drop_last, bool):
                raise _bad(key, c, f"split must be one of {list(_SPLITS)}, drop_last a bool")
            checked.append(
                (_count(key + "[0]", world, 1), split, drop_last, _count(key + "[3]", consumed))
            )
        if checked[-1][3] != out["samples_done"]:
            raise _bad(
                "global.cuts",
                cuts,
                f"the last cut's consumed must be samples_done={out['samples_done']}",
            )
        out["global"] = {"epoch": epoch, "cuts": checked}
    return out


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
        if consumed > count:
            raise ValueError(
                f"load_state_dict: the state's cut {[world, split, drop_last, consumed]} "
                f"consumed more samples per rank than the {count} each of {world} ranks had "
                f"({n} samples left)"
            )
        c = int(consumed)
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
    sampler: Any, epoch: int, done: list[int], samples_done: int, in_order: bool = True
) -> dict[str, Any] | None:
    """The ``"global"`` entry of a loader state: the cuts of ``epoch``'s global order so far
    (None when the progress cannot be put in those terms). ``done``: the batches handed out,
    sorted; ``samples_done``: the samples they hold; ``in_order``: batches are handed out in
    their order (not ``async_pool``)."""
    base = base_sampler(sampler)
    if not base.has_global_order or base.num_workers != 1:
        return None  # replacement draws; a share split between torch workers
    if not in_order and base.world_size > 1:
        # this rank's batches may happen to be a prefix, the other ranks' need not be (each
        # hands out whichever completes first): what they consumed is not known
        return None
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


def _from_elsewhere(state: dict[str, Any], mine: dict[str, Any], keys: tuple[str, ...]) -> bool:
    theirs, ours = state.get("sampler") or {}, mine["sampler"]
    return state.get("batch_size") != mine["batch_size"] or any(
        theirs.get(k) != ours.get(k) for k in keys
    )


def same_layout(state: dict[str, Any]) -> bool:
    """Whether ``state`` comes from a rank of the same layout as this loader (or this rank)
    with its batches handed out in order: ranks step together, so every rank has handed out
    the same prefix of its batches, and ``batches_done`` says where each of them is. Every
    rank then resumes on the exact path (the order the run would have had, and the same
    ``len(loader)`` on every rank, which a mix of exact and re-dealt ranks would not give)."""
    g = state.get("global")
    return isinstance(g, dict) and len(g.get("cuts") or ()) == 1


def wants_elastic(state: dict[str, Any], mine: dict[str, Any]) -> bool:
    """Whether ``state`` must be resumed through the global order: it carries one, and it
    comes from other ranks / batch size / worker split, or from a resumed epoch. A state
    from elsewhere without one raises ValueError saying why it cannot be resumed here."""
    g = state.get("global")
    if not isinstance(g, dict):
        if "global" in state and _from_elsewhere(state, mine, _ELASTIC_KEYS):
            raise ValueError(
                "load_state_dict: the state is from other ranks, batch size or worker split "
                f"and cannot be resumed here: {not_resumable(state)}"
            )
        return False
    keys = tuple(k for k in _ELASTIC_KEYS if k != "rank") if same_layout(state) else _ELASTIC_KEYS
    return not same_layout(state) or _from_elsewhere(state, mine, keys)


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
    g = state["global"]  # checked by check_state
    for c in g["cuts"]:
        if c[1] != base.split:
            raise ValueError(
                f"load_state_dict: the state's cut {list(c)} splits the order "
                f"{c[1]!r}, this loader's sampler {base.split!r}"
            )
    return ResumedSampler(base, g["epoch"], list(g["cuts"]))


def not_resumable(state: dict[str, Any]) -> str:
    """Why a state from other ranks cannot be resumed here (it carries no global progress)."""
    sampler = state.get("sampler") or {}
    if "world_size" not in sampler:
        return (
            f"its order is the caller's sampler's ({sampler.get('sampler')!r}): fastload knows "
            "no global order to re-split, so it resumes only with the same batch size"
        )
    if sampler.get("replacement"):
        return "its sampler draws with replacement (no global order to re-split)"
    return (
        "its batches were handed out of order (loading_mode='async_pool') or split between "
        "torch workers, so what every rank consumed is not known"
    )
