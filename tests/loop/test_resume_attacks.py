"""Attacks on resume (fastload.loop.progress_state, DataLoader.state_dict / load_state_dict):
states taken at every position of an epoch and resumed on 1..4 ranks, tampered states,
JSON / torch.save round trips, load_state_dict while an epoch runs, states of another
loader, caller's samplers, and block shuffle over awkward shard layouts."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest

from fastload.loop.loader import DataLoader
from fastload.plan.datasets import RecordDataset
from tests.support.loader_helpers import invert, write_records

N = 47  # prime: every world size pads or drops, and the last batch is short
SHAPE = (4, 4, 3)
MODES = {
    "sequential": {"shuffle": False},
    "random": {"shuffle": True, "seed": 3},
    "block": {"shuffle": "block", "seed": 3, "block_size": 4096, "shuffle_buffer": 7},
    "weighted": {
        "sampler_type": "weighted_random",
        "weights": list(range(1, N + 1)),
        "replacement": False,
        "seed": 3,
    },
}


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("resume") / "r")
    write_records(folder, N, SHAPE, 3)
    return RecordDataset(folder, SHAPE, labels=np.arange(N))


def loader(ds, rank=0, world=1, **knobs):
    opts = {"batch_size": 5, "prefetch": 3, **knobs}
    return DataLoader(ds, shard_rank=rank, shard_world_size=world, **opts)


def ids(dl):
    return [y for _, ys in dl for y in ys.tolist()]


def state_at(ds, mode, k, world=2):
    """rank 0's state after every rank of ``world`` took ``k`` batches (None: the whole
    epoch, iterator exhausted; "set_epoch": a fresh loader moved to epoch 3), and what
    the ranks received."""
    old = [loader(ds, r, world, **mode) for r in range(world)]
    seen: list[int] = []
    its = [iter(dl) for dl in old] if k != "set_epoch" else []
    for it in its:
        if k is None:
            seen += [y for _, ys in it for y in ys.tolist()]
        else:
            for _ in range(k):  # prefetch=3: batches beyond k are in flight
                seen += next(it)[1].tolist()
    if k == "set_epoch":
        old[0].set_epoch(3)
    return old[0].state_dict(), seen


def check_resumed(ds, mode, state, seen, world, **extra):
    new = [loader(ds, r, world, **mode, **extra) for r in range(world)]
    for dl in new:
        dl.load_state_dict(state)
    lens = [len(dl) for dl in new]
    shares = [ids(dl) for dl in new]
    assert len(set(lens)) == 1 and len({len(s) for s in shares}) == 1  # DDP cannot hang
    rest = [y for s in shares for y in s]
    if state["epoch"] != 0:  # the state points at a later epoch: its ordinary order
        fresh = [loader(ds, r, world, **mode) for r in range(world)]
        for dl in fresh:
            dl.set_epoch(state["epoch"])
        assert shares == [ids(dl) for dl in fresh]
        return
    if world == 2 and not extra:  # the saving layout, any rank: the uninterrupted run's rest
        per_rank = len(seen) // 2
        assert shares == [ids(loader(ds, r, 2, **mode))[per_rank:] for r in range(2)]
        return
    left = set(range(N)) - set(seen)
    assert not set(rest) & set(seen)  # nothing the consumer already received
    if mode.get("drop_last"):
        assert set(rest) <= left and len(rest) == len(set(rest))
        assert len(left) - len(rest) < world * 5 + world  # only a tail is dropped
    else:
        assert set(rest) == left  # every remaining sample, padding repeats only those
        assert len(rest) - len(left) < world


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("name", list(MODES))
def test_every_position_of_an_epoch_resumes_on_one_to_four_ranks(ds, name, drop_last):
    mode = {**MODES[name], "drop_last": drop_last}
    batches = len(loader(ds, 0, 2, **mode))
    for k in [0, 1, batches - 1, batches, None, "set_epoch"]:
        state, seen = state_at(ds, mode, k)
        for world in (1, 2, 3, 4):
            check_resumed(ds, mode, state, seen, world)


def test_resume_with_worker_processes_and_more_ranks_than_samples_left(ds):
    mode = MODES["random"]
    with_transform = RecordDataset(ds.uris, SHAPE, labels=np.arange(N), transform=invert)
    state, seen = state_at(ds, mode, 4)  # 40 consumed, 7 left
    dl = loader(with_transform, 0, 1, num_workers=2, enable_transforms=True, **mode)
    dl.load_state_dict(state)
    assert sorted(ids(dl) + seen) == list(range(N))
    old = [loader(ds, r, 4, **mode) for r in range(4)]
    its = [iter(d) for d in old]
    seen = [y for it in its for _ in range(2) for y in next(it)[1].tolist()]  # 40 of 47
    for world, drop_last in ((9, False), (9, True), (8, True)):
        new = [loader(ds, r, world, drop_last=drop_last, **mode) for r in range(world)]
        for d in new:
            d.load_state_dict(old[3].state_dict())
        shares = [ids(d) for d in new]
        assert len({len(s) for s in shares}) == 1
        rest = [y for s in shares for y in s]
        if drop_last:  # 7 left < world: every rank gets none, and none waits on another
            assert rest == []
        else:  # one each, the 7 left and 2 of them again as padding
            assert set(rest) == set(range(N)) - set(seen) and len(rest) == 9


def good_state(ds):
    dl = loader(ds, **MODES["random"])
    it = iter(dl)
    next(it), next(it)
    return dl.state_dict()


TAMPERED = [
    ("epoch", -1, "epoch=-1 .*must be in"),
    ("epoch", 1.5, "epoch=1.5 .*integer, not float"),
    ("epoch", float("nan"), "epoch=nan .*integer, not float"),
    ("epoch", "0", "epoch='0' .*integer, not str"),
    ("epoch", True, "epoch=True .*integer, not bool"),
    ("epoch", 10**30, "epoch=1000000000000000000000000000000 .*must be in"),
    ("batches_done", [-1], r"batches_done\[0\]=-1"),
    ("batches_done", ["1"], r"batches_done\[0\]='1'"),
    ("batches_done", [0, 0], "lists a batch twice"),
    ("batches_done", "01", "batches_done='01' .*list of batch numbers"),
    ("samples_done", -5, "samples_done=-5"),
    ("samples_done", 11, "last cut's consumed must be samples_done=11"),
    ("batch_size", 0, "batch_size=0"),
    ("dataset_len", "47", "dataset_len='47'"),
    ("dataset", None, "dataset=None .*digest"),
    ("sampler", [], "sampler=.*dict of the sampler"),
    ("version", 2, "version=2 .*newer fastload"),
    ("version", "1", "version='1'"),
    ("global", "x", "global='x' .*None or a dict"),
    ("global", {"epoch": 1, "cuts": [[1, "interleave", False, 10]]}, "global.epoch=1"),
    ("global", {"epoch": 0, "cuts": []}, "global.cuts=.*non-empty"),
    ("global", {"epoch": 0, "cuts": [[1, "interleave"]]}, r"global.cuts\[0\]=.*world size"),
    ("global", {"epoch": 0, "cuts": [[1, "diagonal", False, 10]]}, r"global.cuts\[0\]=.*split"),
    ("global", {"epoch": 0, "cuts": [[0, "interleave", False, 10]]}, r"cuts\[0\]\[0\]=0"),
    ("global", {"epoch": 0, "cuts": [[1, "interleave", 0, 10]]}, "drop_last a bool"),
    ("global", {"epoch": 0, "cuts": [[1, "interleave", False, 1e1]]}, r"cuts\[0\]\[3\]=10.0"),
]


@pytest.mark.parametrize("world", [1, 2], ids=["exact", "elastic"])
@pytest.mark.parametrize(("key", "value", "match"), TAMPERED)
def test_a_tampered_state_is_a_value_error_naming_the_key(ds, world, key, value, match):
    state = good_state(ds) | {key: value}
    with pytest.raises(ValueError, match=match):
        loader(ds, 0, world, **MODES["random"]).load_state_dict(state)


def test_keys_missing_unknown_and_states_that_are_no_dict(ds):
    state = good_state(ds)
    for key in state:
        if key != "version":  # a state without it is of version 1 (older fastload)
            with pytest.raises(ValueError, match=f"the state lacks \\['{key}'\\]"):
                loader(ds, **MODES["random"]).load_state_dict(
                    {k: v for k, v in state.items() if k != key}
                )
    with pytest.raises(ValueError, match=r"does not know: \['position'\]"):
        loader(ds, **MODES["random"]).load_state_dict(state | {"position": 3})
    for bad in (None, [1, 2], "state"):
        with pytest.raises(ValueError, match="must be a dict"):
            loader(ds).load_state_dict(bad)
    unversioned = {k: v for k, v in state.items() if k != "version"}
    dl = loader(ds, **MODES["random"])
    dl.load_state_dict(unversioned)
    assert len(ids(dl)) == N - 10


def test_a_cut_that_consumed_more_than_its_ranks_had_is_refused(ds):
    state = good_state(ds)  # one rank of 47, 10 consumed
    state["global"]["cuts"] = [[4, "interleave", False, 13], [1, "interleave", False, 10]]
    with pytest.raises(ValueError, match="more samples per rank than the 12 each of 4 ranks"):
        loader(ds, 0, 2, **MODES["random"]).load_state_dict(state)
    block = loader(ds, **MODES["block"]).state_dict()
    block["global"]["cuts"][0][1] = "interleave"  # a block order split another way
    with pytest.raises(ValueError, match="splits the order 'interleave'.*'contiguous'"):
        loader(ds, 0, 2, **MODES["block"]).load_state_dict(block)


def test_lists_given_back_as_tuples_or_arrays_are_read_as_lists(ds):
    state, seen = state_at(ds, MODES["random"], 2)
    g = state["global"]
    state["batches_done"] = np.array(state["batches_done"], dtype=np.int64)
    state["global"] = {"epoch": g["epoch"], "cuts": tuple(tuple(c) for c in g["cuts"])}
    for world in (2, 3):
        check_resumed(ds, MODES["random"], state, seen, world)


@pytest.mark.parametrize("world", [1, 3])
def test_json_and_torch_save_round_trips(ds, world):
    torch = pytest.importorskip("torch")
    for name in ("random", "block"):
        state, seen = state_at(ds, MODES[name], 3)
        buf = io.BytesIO()
        torch.save(state, buf)
        buf.seek(0)
        for again in (json.loads(json.dumps(state)), torch.load(buf)):
            check_resumed(ds, MODES[name], again, seen, world)


def test_load_state_dict_while_an_epoch_runs(ds):
    mode = MODES["random"]
    state, seen = state_at(ds, mode, 3, world=1)
    for world in (1, 2):
        dl = loader(ds, 0, world, **mode)
        it = iter(dl)
        next(it), next(it)
        dl.load_state_dict(state)
        # the state loaded is the position now, not the epoch that ran
        assert dl.state_dict()["batches_done"] == ([0, 1, 2] if world == 1 else [])
        with pytest.raises(RuntimeError, match="ended by load_state_dict"):
            next(it)  # the old epoch hands out nothing more
        if world == 1:
            assert sorted(seen + ids(dl)) == list(range(N))
    abandoned = loader(ds, **mode)
    it = iter(abandoned)
    next(it)
    del it
    abandoned.load_state_dict(state)
    assert abandoned.state_dict()["batches_done"] == [0, 1, 2]


def test_an_elastic_resume_is_one_pass_of_its_epoch(ds):
    mode = MODES["random"]
    state, _ = state_at(ds, mode, 2)  # 2 ranks: 20 consumed
    dl = loader(ds, **mode)
    dl.load_state_dict(state)
    assert len(ids(dl)) == N - 20
    assert len(ids(dl)) == N  # epoch 1
    dl.set_epoch(0)
    assert sorted(ids(dl)) == list(range(N))  # epoch 0 run again: the whole epoch
    other = loader(ds, **mode)
    other.load_state_dict(state)
    other.set_epoch(2)
    other.set_epoch(0)  # the resume was dropped: epoch 0 in full, and says so
    assert len(other) == 10 and other.state_dict()["global"]["cuts"] == [
        [1, "interleave", False, 0]
    ]


@pytest.mark.parametrize(
    ("other", "match"),
    [
        ({"seed": 4}, "seed=3.*this loader's 4"),
        ({"shuffle": False}, "sampler='RandomSampler', this loader's 'SequentialSampler'"),
        ({"shuffle": "block"}, "sampler='RandomSampler', this loader's 'BlockShuffleSampler'"),
        ({"sampler_type": "weighted_random", "weights": [1] * N}, "WeightedRandomSampler"),
        ({"replacement": True}, "replacement=False, this loader's True"),
    ],
)
@pytest.mark.parametrize("world", [1, 2])
def test_a_state_of_another_order_is_refused_by_name(ds, other, match, world):
    with pytest.raises(ValueError, match=match):
        loader(ds, 0, world, **(MODES["random"] | other)).load_state_dict(good_state(ds))


def test_other_batch_size_and_drop_last_resume_exactly(ds):
    mode = MODES["random"]
    state, seen = state_at(ds, mode, 3, world=1)
    for extra in ({"batch_size": 4}, {"drop_last": True}, {"batch_size": 7, "drop_last": True}):
        check_resumed(ds, mode | extra, state, seen, 1)
    # batch drop_last alone (the rank split kept): the same batches, the short one dropped
    kept = {"sampler_drop_last": False}
    dl = loader(ds, **mode, **kept, drop_last=True)
    dl.load_state_dict(state)
    assert len(dl) == 9 and sorted(ids(dl) + seen) == sorted(
        set(range(N)) - {*ids(loader(ds, **mode))[45:]}
    )
    whole, _ = state_at(ds, mode, None, world=1)
    whole["epoch"], whole["batches_done"] = 0, list(range(10))  # with the short batch 9
    whole["samples_done"] = whole["global"]["cuts"][0][3] = N
    whole["global"]["epoch"] = 0
    with pytest.raises(ValueError, match="batch 9 does not exist"):
        loader(ds, **mode, **kept, drop_last=True).load_state_dict(whole)


def test_weighted_with_replacement_resumes_exactly_on_its_ranks_only(ds):
    mode = {
        "sampler_type": "weighted_random",
        "weights": list(range(1, N + 1)),
        "replacement": True,
        "seed": 5,
    }
    full = ids(loader(ds, 1, 2, **mode))
    dl = loader(ds, 1, 2, **mode)
    it = iter(dl)
    head = [y for _ in range(3) for y in next(it)[1].tolist()]
    state = json.loads(json.dumps(dl.state_dict()))
    again = loader(ds, 1, 2, **mode)
    again.load_state_dict(state)
    assert head + ids(again) == full
    with pytest.raises(ValueError, match="draws with replacement"):
        loader(ds, 0, 3, **mode).load_state_dict(state)
    with pytest.raises(ValueError, match="weights_digest"):
        loader(ds, 1, 2, **(mode | {"weights": [1.0] * N})).load_state_dict(state)


def test_a_callers_sampler_has_a_state_resumed_at_the_same_batch_size(ds):
    order = list(range(N))[::-1]
    dl = loader(ds, sampler=order)
    it = iter(dl)
    head = [y for _ in range(2) for y in next(it)[1].tolist()]
    state = dl.state_dict()  # was an AttributeError ('list' has no has_global_order)
    assert state["global"] is None
    again = loader(ds, sampler=order)
    again.load_state_dict(state)
    assert head + ids(again) == order
    with pytest.raises(ValueError, match="the caller's sampler's \\('list'\\)"):
        loader(ds, sampler=order, batch_size=4).load_state_dict(state)


# ---- block shuffle over awkward layouts ------------------------------------------------

REC = 1024  # 4 records a 4 KiB block


def shards(folder, sizes):
    os.makedirs(folder, exist_ok=True)
    for s, n in enumerate(sizes):
        with open(os.path.join(folder, f"shard-{s:03d}.bin"), "wb") as f:
            f.write(bytes(REC * n))
    return RecordDataset(folder, (REC,), labels=np.arange(sum(sizes)))


@pytest.mark.parametrize(
    "sizes", [[1, 90, 2, 30], [20, 0, 13], [1], [0, 5]], ids=["skew", "empty", "one", "empty0"]
)
@pytest.mark.parametrize("buffer", [1, 3, 10**6, "1KiB"])
def test_block_shuffle_is_exact_once_and_a_function_of_seed_and_epoch(tmp_path, sizes, buffer):
    ds = shards(str(tmp_path / "s"), sizes)
    n = sum(sizes)
    mode = {"shuffle": "block", "seed": 2, "shuffle_buffer": buffer, "block_size": 4096}
    ref = ids(DataLoader(ds, batch_size=3, prefetch=1, **mode))
    assert sorted(ref) == list(range(n))
    assert ids(DataLoader(ds, batch_size=3, prefetch=5, **mode)) == ref
    split = [
        ids(DataLoader(ds, batch_size=3, worker_id=w, num_workers_pytorch=2, **mode))
        for w in range(2)
    ]
    assert sorted(split[0] + split[1]) == list(range(n))
    for world in (2, 3):
        parts = [ids(loader(ds, r, world, batch_size=3, **mode)) for r in range(world)]
        assert len({len(p) for p in parts}) == 1
        assert {y for p in parts for y in p} == set(range(n))
    if n > 3:  # a state mid-epoch, resumed on 2 ranks: the rest once
        dl = DataLoader(ds, batch_size=3, **mode)
        it = iter(dl)
        head = next(it)[1].tolist()
        new = [loader(ds, r, 2, batch_size=2, **mode) for r in range(2)]
        for d in new:
            d.load_state_dict(dl.state_dict())
        rest = [y for d in new for y in ids(d)]
        assert set(rest) == set(range(n)) - set(head) and not set(rest) & set(head)


def test_block_shuffle_order_does_not_depend_on_worker_processes(tmp_path):
    ds = shards(str(tmp_path / "s"), [3, 40, 7])
    mode = {"shuffle": "block", "seed": 6, "shuffle_buffer": 9, "block_size": 4096}
    ref = ids(DataLoader(ds, batch_size=4, **mode))
    with_transform = RecordDataset(ds.uris, (REC,), labels=np.arange(50), transform=invert)
    dl = DataLoader(with_transform, batch_size=4, num_workers=2, enable_transforms=True, **mode)
    assert ids(dl) == ref


def test_async_pool_on_several_ranks_records_no_global_progress(ds):
    # rank 0's batches done may be a prefix while rank 1's are not (each hands out whichever
    # completes first): a cut claiming every rank consumed rank 0's count would be wrong
    mode = {"shuffle": True, "seed": 1, "loading_mode": "async_pool", "prefetch": 4}
    a = loader(ds, 0, 2, **mode)
    it = iter(a)
    head = [y for _ in range(2) for y in next(it)[1].tolist()]
    state = a.state_dict()
    assert state["global"] is None
    for rank, world in ((1, 2), (0, 3)):
        with pytest.raises(ValueError, match="cannot be resumed here.*out of order"):
            loader(ds, rank, world, **mode).load_state_dict(state)
    same = loader(ds, 0, 2, **mode)
    same.load_state_dict(state)  # the saving rank itself: its own batches_done
    assert sorted(head + ids(same)) == sorted(ids(loader(ds, 0, 2, **mode)))
    single = loader(ds, 0, 1, **mode)  # one rank: its progress is everyone's
    it = iter(single)
    next(it)
    if single.state_dict()["batches_done"] == [0]:
        assert single.state_dict()["global"] == {"epoch": 0, "cuts": [[1, "interleave", False, 5]]}
