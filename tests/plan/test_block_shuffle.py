"""Block shuffle (fastload.plan.samplers.BlockShuffleSampler) over blocks
(fastload.plan.block_map): exactly once per epoch for every world size and worker count, a
pure function of (seed, epoch), bounded windows, and a shuffle as good as the global one
by the usual measures."""

from __future__ import annotations

import numpy as np
import pytest

from fastload.plan.block_map import BlockMap
from fastload.plan.datasets import ObjectDataset, RecordDataset
from fastload.plan.options import LoaderOptions
from fastload.plan.samplers import BlockShuffleSampler, make_sampler
from fastload.plan.tar_shards import TarShardDataset
from tests.support.tar_data import write_shards

REC = 100  # bytes per record


@pytest.fixture
def recs(tmp_path):
    """3 shards of 1000, 1010 and 1020 records of 100 bytes (blocks do not divide them)."""
    for s in range(3):
        (tmp_path / f"s{s}.bin").write_bytes(bytes((1000 + 10 * s) * REC))
    return RecordDataset(str(tmp_path), (REC,))


def sampler(ds, **knobs):
    cfg = LoaderOptions(shuffle="block", block_size=4096, shuffle_buffer=500, **knobs).config
    return make_sampler(cfg, len(ds), ds)


def test_block_map_of_records(recs):
    bm = BlockMap.of(recs, 4096)
    assert bm.bounds[-1] == len(recs) == 3030
    assert (bm.counts <= 41).all() and bm.counts[0] == 41  # records starting in one 4 KiB cell
    assert (bm.nbytes == bm.counts * REC).all()
    assert len(np.unique(bm.src)) == 3 and (np.diff(bm.src) >= 0).all()  # never across shards
    ext = bm.extents_by_uri()
    assert list(ext) == recs.uris and (np.diff(ext[recs.uris[0]][0]) > 0).all()


def test_block_map_of_tar_and_objects(tmp_path):
    write_shards(str(tmp_path / "t"), 40, 20, size=3000)
    tar = TarShardDataset(str(tmp_path / "t"), field="bin")
    bm = BlockMap.of(tar, 16384)
    # a block spans whole samples, headers and other members between them included
    s, o, n = tar.sample_ranges(np.arange(len(tar)))
    for b in range(len(bm)):
        lo, hi = bm.bounds[b], bm.bounds[b + 1]
        assert bm.start[b] == o[lo] and bm.end[b] == o[hi - 1] + n[hi - 1]
    for i in range(3):
        (tmp_path / f"o{i}").write_bytes(bytes(10 + i))
    objs = ObjectDataset([str(tmp_path / f"o{i}") for i in range(3)])
    assert BlockMap.of(objs, 4096).counts.tolist() == [1, 1, 1]  # an object is its own block


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_exactly_once_per_epoch_every_world_and_worker_count(recs, world, workers):
    for drop_last in (False, True):
        per_rank = []
        for r in range(world):
            shares = [
                sampler(
                    recs,
                    shard_rank=r,
                    shard_world_size=world,
                    worker_id=w,
                    num_workers_pytorch=workers,
                    batch_size=16,
                    drop_last=drop_last,
                ).indices(2)
                for w in range(workers)
            ]
            per_rank.append(np.concatenate(shares))
        lengths = {len(p) for p in per_rank}
        assert len(lengths) == 1  # equal counts: DDP never waits on a rank with fewer batches
        every = np.concatenate(per_rank)
        n = len(recs)
        if drop_last:
            assert len(every) == n - n % world and len(np.unique(every)) == len(every)
        else:
            assert len(np.unique(every)) == n and len(every) == -(-n // world) * world


def test_a_pure_function_of_seed_and_epoch(recs):
    a, b = sampler(recs, seed=5), sampler(recs, seed=5)
    assert np.array_equal(a.indices(3), b.indices(3))
    assert not np.array_equal(a.indices(3), a.indices(4))
    assert not np.array_equal(a.indices(3), sampler(recs, seed=6).indices(3))
    assert isinstance(a, BlockShuffleSampler) and a.split == "contiguous"
    # another process, same answer (nothing but (seed, epoch) goes in)
    assert np.array_equal(sampler(recs, seed=5).global_order(3), a.global_order(3))


def test_windows_bound_what_is_mixed(recs):
    s = sampler(recs)
    perm, window = s.windows(0)
    bm = s.blocks
    order = s.global_order(0)
    block_of = np.searchsorted(bm.bounds, order, side="right") - 1
    start = 0
    for w in np.unique(window):
        blocks = perm[window == w]
        n = int(bm.counts[blocks].sum())
        assert set(block_of[start : start + n].tolist()) == set(blocks.tolist())
        assert n <= 500 + int(bm.counts.max())  # a window ends one block past its budget
        start += n
    by_bytes = make_sampler(
        LoaderOptions(shuffle="block", block_size=4096, shuffle_buffer="20KiB").config,
        len(recs),
        recs,
    )
    sizes = [
        int(by_bytes.blocks.nbytes[by_bytes.windows(0)[0][by_bytes.windows(0)[1] == w]].sum())
        for w in np.unique(by_bytes.windows(0)[1])
    ]
    assert max(sizes) <= 20480 + 4100


def test_shuffle_buffer_and_block_size_act(recs):
    def distinct_blocks_in_last(s, k=400):  # (past the first buffer's ramp)
        order = s.global_order(0)
        return len(np.unique(np.searchsorted(s.blocks.bounds, order[-k:], side="right") - 1))

    small = sampler(recs)  # 500 samples: ~13 blocks per window
    big = make_sampler(
        LoaderOptions(shuffle="block", block_size=4096, shuffle_buffer=3030).config, len(recs), recs
    )
    assert distinct_blocks_in_last(small) <= 15 < 30 < distinct_blocks_in_last(big)
    fine = make_sampler(LoaderOptions(shuffle="block", block_size=8192).config, len(recs), recs)
    assert len(fine.blocks) > len(small.blocks) / 2.5 and len(fine.blocks) < len(small.blocks)


def test_the_first_buffer_ramps_up(recs):
    """The epoch's first buffer is cut into windows of 1/16, 1/16, 1/8, 1/4 and 1/2 of it
    (each ends one block past its share), so its first samples need only a few blocks;
    later windows hold a whole buffer. Samples (500) and bytes alike."""
    for s, unit, buf in (
        (sampler(recs), None, 500),
        (
            make_sampler(
                LoaderOptions(shuffle="block", block_size=4096, shuffle_buffer="48KiB").config,
                len(recs),
                recs,
            ),
            "bytes",
            48 << 10,
        ),
    ):
        perm, window = s.windows(0)
        size = (s.blocks.nbytes if unit else s.blocks.counts)[perm]
        ids = np.unique(window)
        held = [int(size[window == w].sum()) for w in ids]
        one = int(size.max())
        for share, got in zip([1, 1, 2, 4, 8], held[:5], strict=True):
            assert buf * share // 16 - one <= got <= buf * share // 16 + one
        assert all(buf - one <= got <= buf + one for got in held[5:-1])
        assert sum(held[:5]) <= buf + one
        # the first sixteenth of the buffer is mixed from one or two blocks only
        order = s.global_order(0)
        first = order[: buf // 16] if not unit else order[:20]
        assert len(np.unique(np.searchsorted(s.blocks.bounds, first, side="right") - 1)) <= 2


def shuffle_quality(orders: list[np.ndarray]) -> tuple[float, float]:
    """Mean absolute displacement (as a fraction of n; 1/3 for a uniform permutation) and
    the mean correlation of every sample's position between consecutive epochs."""
    n = len(orders[0])
    pos = [np.argsort(o) for o in orders]
    mad = float(np.mean([np.abs(p - np.arange(n)).mean() / n for p in pos]))
    corr = float(np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(pos, pos[1:], strict=False)]))
    return mad, corr


def test_shuffle_quality_against_the_global_shuffle(tmp_path):
    for s in range(10):  # 20,000 records in 10 shards, 200 blocks of 100
        (tmp_path / f"s{s}.bin").write_bytes(bytes(2000 * 41))
    ds = RecordDataset(str(tmp_path), (41,))
    block = make_sampler(
        LoaderOptions(shuffle="block", block_size=4100, shuffle_buffer=2000, seed=1).config,
        len(ds),
        ds,
    )
    glob = make_sampler(LoaderOptions(shuffle=True, seed=1).config, len(ds))
    b_mad, b_corr = shuffle_quality([block.indices(e) for e in range(4)])
    g_mad, g_corr = shuffle_quality([glob.indices(e) for e in range(4)])
    assert abs(g_mad - 1 / 3) < 0.01 and abs(g_corr) < 0.03
    assert abs(b_mad - 1 / 3) < 0.04 and abs(b_corr) < 0.1  # as far from storage order
    seq = make_sampler(LoaderOptions().config, len(ds))
    assert shuffle_quality([seq.indices(0), seq.indices(1)]) == pytest.approx((0.0, 1.0))
    # what it gives up: neighbours in storage often stay close (same window)
    pos = np.argsort(block.indices(0))
    near = np.mean(np.abs(np.diff(pos)) < 2000)
    gpos = np.argsort(glob.indices(0))
    assert near > 0.9 > 0.2 > np.mean(np.abs(np.diff(gpos)) < 2000)


def test_state_of_another_block_layout_is_refused(recs):
    a = sampler(recs)
    b = make_sampler(LoaderOptions(shuffle="block", block_size=8192).config, len(recs), recs)
    with pytest.raises(ValueError, match="block_size|blocks_digest|shuffle_buffer"):
        b.load_state_dict(a.state_dict())
    # a state from before the first buffer's ramp (its windows, its order) is refused too
    old = {k: v for k, v in a.state_dict().items() if k != "ramp"}
    with pytest.raises(ValueError, match="ramp is None in the state but 4 here"):
        sampler(recs).load_state_dict(old)


def test_block_mode_needs_the_dataset(recs):
    with pytest.raises(ValueError, match="needs the dataset"):
        make_sampler(LoaderOptions(shuffle="block").config, len(recs))
