"""fastload.DataLoader with torch DataLoader's keyword arguments, against torch's own
DataLoader on the same dataset: the same batches for the same sampler, torch's errors,
torch's attributes, worker exceptions with their type, get_worker_info in workers."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.utils import data as tud  # noqa: E402

from fastload import DataLoader, LoaderOptions, TransformError, WorkerError  # noqa: E402
from fastload.plan.datasets import RecordDataset  # noqa: E402
from tests.support.loader_data import SHAPE, N  # noqa: E402

pytestmark = pytest.mark.torch


def as_np(batch):
    if isinstance(batch, (list, tuple)):
        return [as_np(b) for b in batch]
    return np.asarray(batch)


def same(ours, theirs):
    ours, theirs = list(ours), list(theirs)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        for x, y in zip(as_np(a), as_np(b), strict=True):
            assert np.array_equal(x, y)


@pytest.fixture
def ds(recs):
    return recs[0]


def test_default_batches_match_torch(ds):
    same(DataLoader(ds, batch_size=8), tud.DataLoader(ds, batch_size=8))
    same(DataLoader(ds, 8), tud.DataLoader(ds, 8))  # batch_size positional, as torch
    same(DataLoader(ds, batch_size=7, drop_last=True), tud.DataLoader(ds, 7, drop_last=True))


@pytest.mark.parametrize(
    "make",
    [
        lambda ds: tud.RandomSampler(ds, generator=torch.Generator().manual_seed(3)),
        lambda ds: tud.SubsetRandomSampler(
            range(10, 60), generator=torch.Generator().manual_seed(1)
        ),
        lambda ds: list(range(N - 1, -1, -3)),
        lambda ds: tud.WeightedRandomSampler(
            np.linspace(0, 1, N), 40, generator=torch.Generator().manual_seed(2)
        ),
    ],
)
def test_sampler_gives_torchs_batches(ds, make):
    same(DataLoader(ds, batch_size=6, sampler=make(ds)), tud.DataLoader(ds, 6, sampler=make(ds)))


def test_batch_sampler_and_set_epoch_of_a_distributed_sampler(ds):
    def bs():
        return tud.BatchSampler(tud.SequentialSampler(range(N)), 9, drop_last=False)

    ours = DataLoader(ds, batch_sampler=bs())
    same(ours, tud.DataLoader(ds, batch_sampler=bs()))
    assert len(ours) == 12 and ours.batch_size is None and ours.batch_sampler is not None

    sampler = tud.DistributedSampler(ds, num_replicas=3, rank=1, shuffle=True, seed=5)
    mine = tud.DistributedSampler(ds, num_replicas=3, rank=1, shuffle=True, seed=5)
    dl = DataLoader(ds, batch_size=5, sampler=mine)
    for epoch in range(2):
        dl.set_epoch(epoch)
        sampler.set_epoch(epoch)
        same(dl, tud.DataLoader(ds, batch_size=5, sampler=sampler))
    assert dl.sampler.num_replicas == 3  # the caller's sampler's attributes show through


def test_unbatched_and_collate_fn(ds):
    same(DataLoader(ds, batch_size=None), tud.DataLoader(ds, batch_size=None))
    first = next(iter(DataLoader(ds, batch_size=None)))
    assert first[0].shape == SHAPE and first[1] == 0

    def summed(samples):
        return sum(int(x.sum()) for x, _ in samples), [int(y) for _, y in samples]

    ours = list(DataLoader(ds, batch_size=16, collate_fn=summed))
    theirs = list(tud.DataLoader(ds, batch_size=16, collate_fn=summed))
    assert ours == theirs


def test_torchs_errors(ds):
    cases = [
        {"sampler": [0, 1], "shuffle": True},
        {"batch_sampler": [[0, 1]], "batch_size": 4},
        {"batch_sampler": [[0, 1]], "drop_last": True},
        {"batch_size": None, "drop_last": True},
        {"prefetch_factor": 2},
        {"timeout": -1},
        {"persistent_workers": True},
    ]
    for kw in cases:
        with pytest.raises(ValueError) as theirs:
            tud.DataLoader(ds, **kw)
        with pytest.raises(ValueError) as ours:
            DataLoader(ds, **kw)
        first = str(theirs.value).split()[0:2]
        assert str(ours.value).split()[0:2] == first, (kw, ours.value, theirs.value)


def test_attributes(ds):
    gen = torch.Generator().manual_seed(11)
    dl = DataLoader(
        ds,
        batch_size=4,
        shuffle=True,
        drop_last=True,
        timeout=7,
        generator=gen,
        in_order=False,
        pin_memory_device="",
    )
    assert (dl.batch_size, dl.drop_last, dl.num_workers, dl.timeout) == (4, True, 0, 7.0)
    assert dl.config.timeout_seconds == 7.0 and dl.config.loading_mode == "async_pool"
    assert dl.in_order is False and dl.generator is gen and dl.config.generator_seed == 11
    assert dl.prefetch_factor is None and dl.pin_memory is False and dl.dataset is ds
    assert dl.multiprocessing_context == "spawn" and dl.persistent_workers is False
    assert len(dl) == N // 4
    ys = [
        np.concatenate(
            [
                y
                for _, y in DataLoader(
                    ds, 4, shuffle=True, generator=torch.Generator().manual_seed(s)
                )
            ]
        )
        for s in (11, 11, 12)
    ]
    assert np.array_equal(ys[0], ys[1]) and not np.array_equal(ys[1], ys[2])  # seed picks order
    with pytest.raises(ValueError, match="pin_memory_device='mps' is invalid"):
        DataLoader(ds, pin_memory_device="mps")
    with pytest.raises(TypeError, match="LoaderOptions or torch's batch_size"):
        DataLoader(ds, "8")
    ctx = torch.multiprocessing.get_context("fork")
    assert DataLoader(ds, multiprocessing_context=ctx).config.multiprocessing_context == "fork"


def test_prefetch_factor_sets_read_ahead(recs):
    ds = RecordDataset(recs[0].uris, SHAPE, labels=np.arange(N), transform=_flip)
    dl = DataLoader(ds, batch_size=4, num_workers=2, prefetch_factor=3, enable_transforms=True)
    assert dl.config.prefetch == 6 and dl.prefetch_factor == 3
    assert DataLoader(ds, num_workers=2, enable_transforms=True).prefetch_factor == 2


# -- worker processes -------------------------------------------------------------------
def _flip(sample):
    return sample[::-1].copy()


def _key_error(sample):
    raise KeyError("missing-field")


def _worker_id(sample):
    info = torch.utils.data.get_worker_info()
    return np.array([info.id, info.num_workers, _INIT.get("seen", -1)], dtype=np.int64)


_INIT: dict[str, int] = {}


def _init(worker_id):
    _INIT["seen"] = 100 + worker_id


def _bad_init(worker_id):
    raise ZeroDivisionError(f"init of {worker_id}")


def test_worker_exception_keeps_its_type_and_traceback(recs):
    ds = RecordDataset(recs[0].uris, SHAPE, labels=np.arange(N), transform=_key_error)
    dl = DataLoader(
        ds, batch_size=10, num_workers=1, enable_transforms=True, multiprocessing_context="fork"
    )
    with pytest.raises(KeyError) as info:
        next(iter(dl))
    err = info.value
    assert isinstance(err, TransformError) and isinstance(err, WorkerError)
    text = str(err)
    assert "missing-field" in text and "Traceback" in text and "_key_error" in text
    dl.close()
    here = DataLoader(ds, batch_size=10, enable_transforms=True)  # in this process: same
    with pytest.raises(KeyError) as info:
        next(iter(here))
    assert isinstance(info.value, TransformError) and isinstance(info.value.__cause__, KeyError)


def test_get_worker_info_and_worker_init_fn_in_workers(recs):
    ds = RecordDataset(recs[0].uris, SHAPE, labels=np.arange(N), transform=_worker_id)
    with DataLoader(
        ds,
        batch_size=10,
        num_workers=2,
        enable_transforms=True,
        multiprocessing_context="fork",
        worker_init_fn=_init,
    ) as dl:
        facts = np.concatenate([x for x, _ in dl])
    assert set(map(tuple, facts.tolist())) == {(0, 2, 100), (1, 2, 101)}
    assert torch.utils.data.get_worker_info() is None  # not in this process
    bad = DataLoader(
        ds,
        batch_size=10,
        num_workers=1,
        enable_transforms=True,
        multiprocessing_context="fork",
        worker_init_fn=_bad_init,
    )
    with pytest.raises(ZeroDivisionError, match="worker_init_fn failed.*init of 0") as info:
        next(iter(bad))
    assert isinstance(info.value, WorkerError)


# -- the two drop_lasts and distributed order -----------------------------------------------
def test_rank_tail_and_partial_batch_are_separate_knobs(ds):
    # 100 samples over 3 ranks: torch pads each rank to 34 or drops the tail to 33
    for sampler_drop in (False, True):
        torch_sampler = tud.DistributedSampler(
            ds, num_replicas=3, rank=2, shuffle=False, drop_last=sampler_drop
        )
        theirs = tud.DataLoader(ds, batch_size=5, sampler=torch_sampler, drop_last=True)
        opts = LoaderOptions(batch_size=5, drop_last=True).distributed_sampling(
            2, 3, drop_last=sampler_drop
        )
        ours = DataLoader(ds, opts.shuffle(False))
        assert ours.config.sampler_drop_last is sampler_drop
        same(ours, theirs)
    # None follows the loader's drop_last, as before
    cfg = LoaderOptions(drop_last=True).distributed_sampling(0, 3).config
    assert cfg.rank_drop_last is True


def test_distributed_sampling_honours_shuffle_false(ds):
    opts = LoaderOptions(batch_size=4).distributed_sampling(1, 4).shuffle(False)
    theirs = tud.DataLoader(
        ds, batch_size=4, sampler=tud.DistributedSampler(ds, num_replicas=4, rank=1, shuffle=False)
    )
    same(DataLoader(ds, opts), theirs)
    shuffled = LoaderOptions(batch_size=4).distributed_sampling(1, 4)
    ys = np.concatenate([y for _, y in DataLoader(ds, shuffled)])
    assert not np.array_equal(ys, np.arange(1, N, 4))
