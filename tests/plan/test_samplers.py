"""Samplers: orders per seed / epoch / rank / worker, padding, replacement, weights, resume.

Golden orders live in tests/plan/golden/sampler_orders.json. To regenerate them after a
deliberate change of order:  FASTLOAD_REGEN_GOLDEN=1 python -m pytest -q tests/plan/test_samplers.py -k golden
"""

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastload
from fastload.plan.options import LoaderConfig, LoaderOptions
from fastload.plan.samplers import (
    DistributedRandomSampler,
    RandomSampler,
    SequentialSampler,
    WeightedRandomSampler,
    make_sampler,
    split_for_worker,
    worker_generator,
)

GOLDEN = Path(__file__).parent / "golden" / "sampler_orders.json"


REPO_ROOT = str(Path(fastload.__file__).resolve().parent.parent)


GOLDEN_CASES = {
    "sequential": ({}, 10, 0),
    "sequential_rank1_of3": ({"shard_rank": 1, "shard_world_size": 3}, 10, 0),
    "sequential_rank2_of3_drop_last": (
        {"shard_rank": 2, "shard_world_size": 3, "drop_last": True},
        10,
        0,
    ),
    "shuffle_seed0": ({"shuffle": True}, 12, 0),
    "shuffle_seed0_epoch1": ({"shuffle": True}, 12, 1),
    "shuffle_seed42": ({"shuffle": True, "seed": 42}, 12, 0),
    "random_generator_seed7": ({"sampler_type": "random", "generator_seed": 7}, 12, 0),
    "random_replacement": ({"sampler_type": "random", "replacement": True, "seed": 3}, 12, 0),
    "random_replacement_rank1_of2": (
        {
            "sampler_type": "random",
            "replacement": True,
            "seed": 3,
            "shard_rank": 1,
            "shard_world_size": 2,
        },
        12,
        0,
    ),
    "weighted_replacement": (
        {
            "sampler_type": "weighted_random",
            "replacement": True,
            "weights": [1, 0, 2, 0.5, 4, 1, 1, 3],
        },
        8,
        0,
    ),
    "weighted_no_replacement": (
        {"sampler_type": "weighted_random", "weights": [1, 0, 2, 0.5, 4, 1, 1, 3]},
        8,
        2,
    ),
    "distributed_rank0_of4_epoch0": (
        {"sampler_type": "distributed_random", "shard_rank": 0, "shard_world_size": 4, "seed": 5},
        10,
        0,
    ),
    "distributed_rank3_of4_epoch1": (
        {"sampler_type": "distributed_random", "shard_rank": 3, "shard_world_size": 4, "seed": 5},
        10,
        1,
    ),
    "distributed_rank3_of4_drop_last": (
        {
            "sampler_type": "distributed_random",
            "shard_rank": 3,
            "shard_world_size": 4,
            "seed": 5,
            "drop_last": True,
        },
        10,
        1,
    ),
    "distributed_worker1_of2_batch3": (
        {
            "sampler_type": "distributed_random",
            "shard_rank": 1,
            "shard_world_size": 2,
            "worker_id": 1,
            "num_workers_pytorch": 2,
            "batch_size": 3,
        },
        25,
        0,
    ),
}


def golden_orders() -> dict[str, list[int]]:
    return {
        name: make_sampler(LoaderConfig(**knobs), n).indices(epoch).tolist()
        for name, (knobs, n, epoch) in GOLDEN_CASES.items()
    }


def test_golden_orders():
    orders = golden_orders()
    if os.environ.get("FASTLOAD_REGEN_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        lines = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in orders.items())
        GOLDEN.write_text("{\n" + lines + "\n}\n")
    assert json.loads(GOLDEN.read_text()) == orders


def test_orders_are_the_same_in_another_process():
    code = (
        "import json,sys; from tests.plan.test_samplers import golden_orders; "
        "json.dump(golden_orders(), sys.stdout)"
    )
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "PYTHONHASHSEED": "123"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        timeout=120,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out) == golden_orders()


# ---- sequential and the rank split --------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 60), world=st.integers(1, 7), drop_last=st.booleans())
def test_rank_split_matches_torch_distributed_sampler(n, world, drop_last):
    torch_data = pytest.importorskip("torch.utils.data")
    for rank in range(world):
        theirs = list(
            torch_data.DistributedSampler(
                range(n), num_replicas=world, rank=rank, shuffle=False, drop_last=drop_last
            )
        )
        ours = SequentialSampler(n, rank=rank, world_size=world, drop_last=drop_last)
        assert ours.indices(0).tolist() == theirs and len(ours) == len(theirs)


def test_sequential_is_the_same_every_epoch():
    s = SequentialSampler(7)
    assert s.indices(0).tolist() == s.indices(5).tolist() == list(range(7))


def test_padding_repeats_from_the_start_and_drop_last_drops_the_tail():
    pad = [DistributedRandomSampler(10, rank=r, world_size=4, seed=1) for r in range(4)]
    order = RandomSampler(10, seed=1).indices(0)
    assert {len(s) for s in pad} == {3}
    # positions 10 and 11 of the padded order are its first two entries
    assert pad[2].indices(0)[-1] == order[0] and pad[3].indices(0)[-1] == order[1]
    drop = [
        DistributedRandomSampler(10, rank=r, world_size=4, seed=1, drop_last=True) for r in range(4)
    ]
    assert {len(s) for s in drop} == {2}
    assert sorted(np.concatenate([s.indices(0) for s in drop]).tolist()) == sorted(
        order[:8].tolist()
    )


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 80),
    world=st.integers(1, 6),
    drop_last=st.booleans(),
    seed=st.integers(0, 2**32),
    epoch=st.integers(0, 50),
    weighted=st.booleans(),
)
def test_ranks_are_disjoint_and_cover_the_epoch(n, world, drop_last, seed, epoch, weighted):
    if weighted:
        weights = np.random.default_rng(seed).integers(0, 3, n).astype(float)
        weights[0] = 1.0
        shares = [
            WeightedRandomSampler(
                weights, replacement=False, seed=seed, rank=r, world_size=world, drop_last=drop_last
            ).indices(epoch)
            for r in range(world)
        ]
        population = np.flatnonzero(weights > 0)
    else:
        shares = [
            DistributedRandomSampler(
                n, seed=seed, rank=r, world_size=world, drop_last=drop_last
            ).indices(epoch)
            for r in range(world)
        ]
        population = np.arange(n)
    assert len({len(s) for s in shares}) == 1
    every = np.concatenate(shares)
    m = len(population)
    if drop_last:
        assert len(every) == m - m % world and len(np.unique(every)) == len(every)
        assert np.isin(every, population).all()
    else:
        assert np.array_equal(np.unique(every), population)
        assert len(every) == -(-m // world) * world  # the pad is the only repetition


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(0, 70),
    kind=st.sampled_from(["seq", "shuffle", "random_r", "weighted", "weighted_r", "distributed"]),
    world=st.integers(1, 4),
    workers=st.integers(1, 3),
    batch=st.integers(1, 6),
    drop_last=st.booleans(),
    seed=st.integers(0, 99),
    epoch=st.integers(0, 9),
    data=st.data(),
)
def test_every_sampler_len_matches_its_indices(
    n, kind, world, workers, batch, drop_last, seed, epoch, data
):
    if kind.startswith("weighted") and n == 0:
        n = 1
    knobs = {
        "seq": {},
        "shuffle": {"shuffle": True},
        "distributed": {"sampler_type": "distributed_random"},
        "random_r": {"sampler_type": "random", "replacement": True},
        "weighted": {"sampler_type": "weighted_random", "weights": [1.0] + [0.5] * (n - 1)},
        "weighted_r": {
            "sampler_type": "weighted_random",
            "weights": [1.0] + [2.0] * (n - 1),
            "replacement": True,
        },
    }[kind]
    cfg = LoaderConfig(
        **knobs,
        shard_rank=data.draw(st.integers(0, world - 1)),
        shard_world_size=world,
        worker_id=data.draw(st.integers(0, workers - 1)),
        num_workers_pytorch=workers,
        batch_size=batch,
        drop_last=drop_last,
        seed=seed,
    )
    s = make_sampler(cfg, n)
    got = s.indices(epoch)
    assert got.dtype == np.int64 and len(got) == len(s)
    assert np.array_equal(got, make_sampler(cfg, n).indices(epoch))  # a pure function
    assert ((got >= 0) & (got < n)).all()


# ---- workers inside a rank ----------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 100),
    workers=st.integers(1, 5),
    batch=st.integers(1, 9),
    seed=st.integers(0, 1000),
)
def test_workers_partition_the_rank_and_round_robin_restores_its_order(n, workers, batch, seed):
    rank_order = RandomSampler(n, seed=seed, rank=1, world_size=2).indices(3)
    parts = [
        RandomSampler(
            n, seed=seed, rank=1, world_size=2, worker_id=w, num_workers=workers, batch_size=batch
        )
        for w in range(workers)
    ]
    assert [len(p) for p in parts] == [len(p.indices(3)) for p in parts]
    # take one batch from each worker in turn, as a torch DataLoader over workers does
    batches = [np.array_split(p.indices(3), range(batch, len(p), batch)) for p in parts]
    merged = [
        b
        for round_ in range(max(map(len, batches)))
        for bs in batches
        if round_ < len(bs)
        for b in [bs[round_]]
        if len(b)
    ]
    restored = np.concatenate(merged) if merged else np.empty(0, dtype=np.int64)
    assert restored.tolist() == rank_order.tolist()


def test_split_for_worker_deals_whole_batches():
    idx = np.arange(23)
    assert split_for_worker(idx, 0, 3, 4).tolist() == [0, 1, 2, 3, 12, 13, 14, 15]
    assert split_for_worker(idx, 2, 3, 4).tolist() == [8, 9, 10, 11, 20, 21, 22]
    assert split_for_worker(idx, 1, 3, 4).tolist() == [4, 5, 6, 7, 16, 17, 18, 19]


@pytest.mark.torch
def test_worker_discovered_inside_a_torch_dataloader():
    torch_data = pytest.importorskip("torch.utils.data")
    cfg = LoaderConfig(shuffle=True, seed=4, batch_size=5, worker_id=None, num_workers_pytorch=None)

    class Batches(torch_data.IterableDataset):
        def __iter__(self):
            s = make_sampler(cfg, 57)
            assert s.num_workers == 2
            mine = s.indices(0)
            yield from (mine[i : i + 5] for i in range(0, len(mine), 5))

    loader = torch_data.DataLoader(
        Batches(), batch_size=None, num_workers=2, multiprocessing_context="fork", timeout=60
    )
    got = np.concatenate([b.numpy() for b in loader])
    assert (
        got.tolist()
        == make_sampler(cfg.replace(worker_id=0, num_workers_pytorch=1), 57).indices(0).tolist()
    )


# ---- random orders, seeds, replacement, weights ------------------------------------


def test_random_order_depends_on_seed_and_epoch_only():
    a = RandomSampler(100, seed=1)
    assert sorted(a.indices(0).tolist()) == list(range(100))
    assert a.indices(0).tolist() == RandomSampler(100, seed=1).indices(0).tolist()
    assert a.indices(0).tolist() != a.indices(1).tolist()
    assert a.indices(0).tolist() != RandomSampler(100, seed=2).indices(0).tolist()


def test_shuffle_knob_turns_the_sequential_sampler_random():
    plain = make_sampler(LoaderConfig(), 50).indices(0).tolist()
    shuffled = make_sampler(LoaderConfig(shuffle=True), 50).indices(0).tolist()
    assert plain == list(range(50)) and shuffled != plain and sorted(shuffled) == plain


def test_generator_seed_wins_over_seed():
    by_seed = make_sampler(LoaderConfig(shuffle=True, seed=5), 50).indices(0)
    by_gen = make_sampler(LoaderConfig(shuffle=True, seed=5, generator_seed=6), 50).indices(0)
    ref = make_sampler(LoaderConfig(shuffle=True, seed=6), 50).indices(0)
    assert by_gen.tolist() == ref.tolist() != by_seed.tolist()


def test_replacement_produces_repeats():
    with_r = RandomSampler(1000, replacement=True, seed=0).indices(0)
    without = RandomSampler(1000, replacement=False, seed=0).indices(0)
    assert len(with_r) == 1000 and len(np.unique(with_r)) < 700  # ~632 expected
    assert len(np.unique(without)) == 1000
    assert with_r.min() >= 0 and with_r.max() < 1000


def test_weights_skew_frequencies():
    weights = [1.0, 2.0, 3.0, 4.0, 0.0]
    s = WeightedRandomSampler(weights * 20_000, seed=11)  # 100k draws per epoch
    counts = np.bincount(s.indices(0) % 5, minlength=5)
    assert counts[4] == 0  # zero weight: never drawn
    expected = np.array(weights[:4]) / 10 * len(s)
    chi2 = (((counts[:4] - expected) ** 2) / expected).sum()
    assert chi2 < 16.27  # chi-square, 3 degrees of freedom, p = 0.001


def test_weighted_without_replacement_puts_heavy_samples_first():
    weights = np.r_[np.full(50, 100.0), np.full(50, 1.0), np.zeros(10)]
    order = WeightedRandomSampler(weights, replacement=False, seed=2).indices(0)
    assert sorted(order.tolist()) == list(range(100))  # each positive weight exactly once
    assert (order[:50] < 50).mean() > 0.9


@pytest.mark.parametrize(
    "weights, probs",
    [
        ([1e308] * 3, [1 / 3] * 3),  # the sum overflows float64
        ([1.7976931348623157e308] * 3, [1 / 3] * 3),  # the largest finite weight
        ([5e-324] * 3, [1 / 3] * 3),  # the smallest (subnormal): the sum rounds badly
        ([2e307, 1e307, 1e307], [0.5, 0.25, 0.25]),
        ([1e-310, 3e-310, 0.0], [0.25, 0.75, 0.0]),
    ],
)
def test_weights_near_the_float_limits_sample_correctly(weights, probs):
    probs = np.array(probs)
    # with replacement: frequencies over 60k draws (20k copies of the weights)
    counts = np.bincount(
        WeightedRandomSampler(weights * 20_000, seed=4).indices(0) % 3, minlength=3
    )
    expected = probs * counts.sum()
    live = probs > 0
    assert (counts[~live] == 0).all()
    chi2 = (((counts[live] - expected[live]) ** 2) / expected[live]).sum()
    assert chi2 < 13.82  # chi-square, <= 2 degrees of freedom, p = 0.001
    # without replacement: which index comes first, over 900 epochs, is weights / sum
    first = [
        WeightedRandomSampler(weights, replacement=False, seed=9).indices(e)[0] for e in range(900)
    ]
    counts = np.bincount(first, minlength=3)
    expected = probs * 900
    assert (counts[~live] == 0).all()
    chi2 = (((counts[live] - expected[live]) ** 2) / expected[live]).sum()
    assert chi2 < 13.82


def test_weighted_draws_are_the_plain_formula_bit_for_bit(monkeypatch):
    # The scaled weights and the sorted-run search change speed, never an order: the draws are
    # what searchsorted(cumsum(w), u * sum) and argsort(exponential / w) give.
    import fastload.plan.samplers as samplers

    monkeypatch.setattr(samplers, "_SEARCH_CHUNK", 5000)  # several sorted runs
    rng = np.random.default_rng(0)
    for scale, zeros in ((1.0, 100), (1e-3, 0), (7e5, 5)):
        w = rng.random(70_000) * scale
        w[rng.integers(0, len(w), zeros)] = 0.0
        s = WeightedRandomSampler(w, seed=3)
        u = np.random.Generator(np.random.PCG64(samplers.seed_sequence(3, 1, 0))).random(len(w))
        cdf = np.cumsum(w)
        plain = np.minimum(np.searchsorted(cdf, u * cdf[-1], side="right"), np.flatnonzero(w)[-1])
        assert np.array_equal(s.indices(1), plain)
        pos = np.flatnonzero(w > 0)
        e = np.random.Generator(np.random.PCG64(samplers.seed_sequence(3, 1))).exponential(
            size=len(pos)
        )
        plain = pos[np.argsort(e / w[pos], kind="stable")]
        assert np.array_equal(WeightedRandomSampler(w, replacement=False, seed=3).indices(1), plain)


@pytest.mark.parametrize("levels", [2, 7, 1000, None])
def test_stable_argsort_is_numpys_stable_argsort(levels, monkeypatch):
    import fastload.plan.samplers as samplers
    from fastload.plan.samplers import stable_argsort

    monkeypatch.setattr(samplers, "_SEARCH_CHUNK", 7)  # ties across chunk borders too
    rng = np.random.default_rng(levels or 0)
    for n in (0, 1, 2, 5, 10_000):
        keys = rng.random(n) if levels is None else rng.integers(0, levels, n).astype(float)
        if n > 3:
            keys[:3] = -np.inf  # a run of equal keys at the start
        assert np.array_equal(stable_argsort(keys), np.argsort(keys, kind="stable"))


def test_weighted_sampling_knob_via_options():
    cfg = LoaderOptions().weighted_sampling([0, 0, 1, 0]).config
    assert set(make_sampler(cfg, 4).indices(0).tolist()) == {2}


def test_worker_generator_streams_are_independent_and_reproducible():
    a = worker_generator(0, 0, 0, 0).random(4)
    assert np.array_equal(a, worker_generator(0, 0, 0, 0).random(4))
    for other in (
        worker_generator(0, 0, 0, 1),
        worker_generator(0, 1, 0, 0),
        worker_generator(1, 0, 0, 0),
    ):
        assert not np.array_equal(a, other.random(4))


# ---- epochs and resume ---------------------------------------------------------------


def test_set_epoch_and_iteration():
    s = DistributedRandomSampler(20, rank=0, world_size=2, seed=3)
    assert list(s) == s.indices(0).tolist()
    s.set_epoch(4)
    assert list(s) == s.indices(4).tolist() != s.indices(0).tolist()


def test_resume_from_state_dict():
    s = RandomSampler(30, seed=8, rank=1, world_size=2)
    s.set_epoch(2)
    it = iter(s)
    first = [next(it) for _ in range(6)]
    state = s.state_dict()
    assert state["epoch"] == 2 and state["position"] == 6
    t = RandomSampler(30, seed=8, rank=1, world_size=2)
    t.load_state_dict(json.loads(json.dumps(state)))
    t.set_epoch(2)  # a training loop's usual call keeps the resumed position
    assert first + list(t) == s.indices(2).tolist()
    assert t.remaining().tolist() == s.indices(2).tolist()  # a full pass restarts at 0
    t.load_state_dict(state)
    assert t.remaining().tolist() == s.indices(2)[6:].tolist()


def test_state_from_another_sampler_is_refused():
    state = RandomSampler(30, seed=8).state_dict()
    with pytest.raises(ValueError, match="seed is 8 in the state but 9 here"):
        RandomSampler(30, seed=9).load_state_dict(state)
    with pytest.raises(ValueError, match="sampler is 'RandomSampler'"):
        SequentialSampler(30, seed=8).load_state_dict(state)
    with pytest.raises(ValueError, match="position=31 is past the end"):
        RandomSampler(30, seed=8).load_state_dict({**state, "position": 31})
    w = WeightedRandomSampler([1, 2, 3]).state_dict()
    with pytest.raises(ValueError, match="weights_digest"):
        WeightedRandomSampler([1, 2, 4]).load_state_dict(w)


def test_bad_sampler_arguments_name_the_knob():
    with pytest.raises(ValueError, match="shard_rank=2 is invalid"):
        RandomSampler(10, rank=2, world_size=2)
    with pytest.raises(ValueError, match="worker_id=3 is invalid"):
        RandomSampler(10, worker_id=3, num_workers=3)
    with pytest.raises(ValueError, match="epoch=-1"):
        RandomSampler(10).indices(-1)
    with pytest.raises(ValueError, match="dataset_len"):
        SequentialSampler(-1)
    with pytest.raises(ValueError, match="replacement=True is invalid"):
        DistributedRandomSampler(10, rank=0, world_size=1, replacement=True)


def test_empty_dataset_gives_empty_epochs():
    for s in (
        SequentialSampler(0),
        RandomSampler(0),
        RandomSampler(0, replacement=True),
        DistributedRandomSampler(0, rank=1, world_size=3),
    ):
        assert len(s) == 0 and s.indices(0).dtype == np.int64 and len(s.indices(0)) == 0


# ---- scale ---------------------------------------------------------------------------


def test_hundred_million_indices_fit_in_a_few_bytes_each():
    tracemalloc.start()
    try:
        s = RandomSampler(10**8, seed=1, rank=3, world_size=4)
        share = s.indices(0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert share.dtype == np.int64 and len(share) == len(s) == 25_000_000
    assert share.min() >= 0 and share.max() < 10**8
    # an int32 permutation (400 MB) plus this rank's share, never a Python object per index
    assert peak < 650e6
