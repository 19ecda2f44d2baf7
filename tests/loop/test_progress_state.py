"""Elastic resume (fastload.loop.progress_state): a state taken mid-epoch on 2 ranks resumes
on 3 (or 1, or with another batch size), the rest of the epoch seen exactly once; states of
another dataset or seed, draws with replacement and out-of-order batches are refused."""

from __future__ import annotations

import numpy as np
import pytest

from fastload.loop.loader import DataLoader
from fastload.plan.datasets import RecordDataset
from tests.support.loader_helpers import invert, write_records

N = 360  # divisible by 2, 3, 4 and by the batch sizes, so nothing is padded unless asked
MODES = [
    {"shuffle": False},
    {"shuffle": True, "seed": 4},
    {"sampler_type": "distributed_random", "seed": 4},
    {"shuffle": "block", "seed": 4, "block_size": 4096, "shuffle_buffer": 50},
]


@pytest.fixture
def ds(tmp_path):
    write_records(str(tmp_path / "r"), N, (4, 4, 3), 3)  # 48-byte records: 85 per block
    return RecordDataset(str(tmp_path / "r"), (4, 4, 3), labels=np.arange(N))


def loader(ds, rank, world, **knobs):
    opts = {"batch_size": 12, **knobs}
    return DataLoader(ds, shard_rank=rank, shard_world_size=world, **opts)


def take(dl, batches):
    """Labels of the next ``batches`` batches (a training loop that stops there)."""
    out = []
    it = iter(dl)
    for _ in range(batches):
        out.extend(next(it)[1].tolist())
    return out, it


def rest(dl):
    return [y for _, ys in dl for y in ys.tolist()]


@pytest.mark.parametrize("mode", MODES, ids=["sequential", "random", "distributed", "block"])
def test_two_ranks_resume_on_three_exactly_once(ds, mode):
    old = [loader(ds, r, 2, **mode) for r in range(2)]
    seen, its = [], []
    for dl in old:
        got, it = take(dl, 4)  # ranks step together: 4 batches each
        seen += got
        its.append(it)
    state = old[0].state_dict()  # a checkpoint written by rank 0 only
    assert state["global"]["cuts"][-1][3] == 48
    new = [loader(ds, r, 3, **mode) for r in range(3)]
    for dl in new:
        dl.load_state_dict(state)
    assert [len(dl) for dl in new] == [8] * 3  # the resumed epoch: 264 left, 88 a rank
    shares = [rest(dl) for dl in new]
    assert [len(s) for s in shares] == [88] * 3  # equal batch counts on the new ranks
    everything = seen + [y for s in shares for y in s]
    assert sorted(everything) == list(range(N))  # the rest exactly once
    # the next epoch is the ordinary one of three ranks
    fresh = [loader(ds, r, 3, **mode) for r in range(3)]
    for dl, f in zip(new, fresh, strict=True):
        f.set_epoch(1)
        assert rest(dl) == rest(f)


def test_padding_and_drop_last_on_the_new_ranks(ds):
    old = [loader(ds, r, 2, shuffle=True) for r in range(2)]
    seen = [y for dl in old for y in take(dl, 5)[0]]  # 120 consumed, 240 left
    state = old[1].state_dict()
    for drop_last, world in ((False, 7), (True, 7)):
        new = [loader(ds, r, world, shuffle=True, drop_last=drop_last) for r in range(world)]
        for dl in new:
            dl.load_state_dict(state)
        shares = [rest(dl) for dl in new]
        assert len({len(s) for s in shares}) == 1
        rest_all = [y for s in shares for y in s]
        if drop_last:  # 240 // 7 = 34 each, in 2 whole batches of 12: no repeats
            assert len(rest_all) == 7 * 24 and len(set(rest_all)) == 7 * 24
            assert not set(rest_all) & set(seen)
        else:  # ceil: 35 each, 5 repeated from the start of the rest
            assert set(rest_all) | set(seen) == set(range(N)) and len(rest_all) == 245


def test_resume_of_a_resume_and_another_batch_size(ds):
    mode = {"shuffle": "block", "seed": 1, "block_size": 4096, "shuffle_buffer": 100}
    old = [loader(ds, r, 2, **mode) for r in range(2)]
    seen = [y for dl in old for y in take(dl, 3)[0]]
    mid = [loader(ds, r, 3, batch_size=8, **mode) for r in range(3)]
    its = []
    for dl in mid:
        dl.load_state_dict(old[0].state_dict())
        got, it = take(dl, 2)
        seen += got
        its.append(it)
    state = mid[2].state_dict()
    assert len(state["global"]["cuts"]) == 2
    last = loader(ds, 0, 1, batch_size=20, **mode)
    last.load_state_dict(state)
    assert sorted(seen + rest(last)) == list(range(N))


def test_same_ranks_keep_the_exact_path_and_workers_may_change(ds, tmp_path):
    a = loader(ds, 0, 2, shuffle=True)
    got, _ = take(a, 3)
    with_transform = RecordDataset(
        ds.uris, (4, 4, 3), labels=np.arange(N), transform=invert
    )  # the same samples, read by 2 worker processes that run a transform
    b = loader(with_transform, 0, 2, shuffle=True, num_workers=2, enable_transforms=True)
    b.load_state_dict(a.state_dict())
    full = loader(ds, 0, 2, shuffle=True)
    assert got + rest(b) == rest(full)


def test_refused_states(ds, tmp_path):
    a = loader(ds, 0, 2, shuffle=True, seed=1)
    take(a, 2)
    state = a.state_dict()
    with pytest.raises(ValueError, match="seed=1.*this loader's 2"):
        loader(ds, 0, 3, shuffle=True, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="seed"):
        loader(ds, 0, 2, shuffle=True, seed=2).load_state_dict(state)
    write_records(str(tmp_path / "other"), N, (4, 4, 3), 3, seed=9)
    other = RecordDataset(str(tmp_path / "other"), (4, 4, 3), labels=np.arange(N))
    for world in (2, 3):  # same length, other files: the exact and the elastic path refuse
        with pytest.raises(ValueError, match="another dataset"):
            loader(other, 0, world, shuffle=True, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="sampler has sampler='SequentialSampler'"):
        loader(ds, 0, 3, shuffle=True, seed=1).load_state_dict(
            loader(ds, 0, 2).state_dict() | {"global": loader(ds, 0, 2).state_dict()["global"]}
        )
    repl = loader(ds, 0, 2, sampler_type="random", replacement=True)
    take(repl, 1)
    assert repl.state_dict()["global"] is None
    with pytest.raises(ValueError, match="cannot be resumed here: its sampler draws with"):
        loader(ds, 1, 3, sampler_type="random", replacement=True).load_state_dict(repl.state_dict())
    async_ = loader(ds, 0, 2, shuffle=True, seed=1, loading_mode="async_pool", prefetch=4)
    take(async_, 3)
    s = async_.state_dict()
    s["batches_done"], s["global"] = [0, 2, 3], None  # as batches done out of order leave it
    with pytest.raises(ValueError, match="handed out of order"):
        loader(ds, 0, 3, shuffle=True, seed=1, loading_mode="async_pool").load_state_dict(s)
    same = loader(ds, 0, 2, shuffle=True, seed=1, loading_mode="async_pool")
    same.load_state_dict(s)  # on the same ranks the exact path still takes it
    assert len(rest(same)) == 180 - 36


def test_epoch_boundary_state_resumes_the_ordinary_order(ds):
    a = loader(ds, 0, 2, shuffle=True)
    rest(a)  # epoch 0 done: the state points at the start of epoch 1
    b = loader(ds, 2, 3, shuffle=True)
    b.load_state_dict(a.state_dict())
    fresh = loader(ds, 2, 3, shuffle=True)
    fresh.set_epoch(1)
    assert rest(b) == rest(fresh)


@pytest.mark.parametrize("mode", MODES, ids=["sequential", "random", "distributed", "block"])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("workers", [1, 2])
def test_every_mode_world_and_worker_split_covers_an_epoch_once(ds, mode, world, workers):
    per_rank = []
    for r in range(world):
        got = []
        for w in range(workers):
            dl = loader(ds, r, world, worker_id=w, num_workers_pytorch=workers, **mode)
            dl.set_epoch(1)
            got += rest(dl)
        per_rank.append(got)
    assert len({len(g) for g in per_rank}) == 1  # equal counts: no rank waits on another
    every = [y for g in per_rank for y in g]
    assert sorted(every) == list(range(N))  # N divides by every world size: exactly once
