"""The torch IterableDataset adapter (fastload.adapters.torch_dataset): rank and worker
splits, epochs, pickling, and pinning only where it can act."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from fastload.loop.loader import DataLoader
from fastload.plan.datasets import RecordDataset
from fastload.plan.options import LoaderOptions
from tests.support.torch_data import MEAN, SHAPE, STD, N

torch = pytest.importorskip("torch")
from fastload.adapters.torch_dataset import TorchIterableDataset  # noqa: E402

pytestmark = pytest.mark.torch


def labels_of(torch_loader) -> np.ndarray:
    return np.concatenate([y.numpy() for _, y in torch_loader])


def reference_order(ds, **knobs) -> np.ndarray:
    with DataLoader(ds, **knobs) as dl:
        return np.concatenate([y for _, y in dl])


@pytest.mark.parametrize("workers", [0, 2])
def test_adapter_yields_the_rank_order_split_over_torch_workers(recs, workers):
    ds, data = recs
    it = TorchIterableDataset(ds, batch_size=8, shuffle=True, seed=5)
    tl = torch.utils.data.DataLoader(
        it,
        batch_size=None,
        num_workers=workers,
        timeout=60 if workers else 0,
        multiprocessing_context="fork" if workers else None,
    )
    batches = list(tl)
    assert len(tl) == len(batches) == 13
    ys = np.concatenate([y.numpy() for _, y in batches])
    assert np.array_equal(ys, reference_order(ds, batch_size=8, shuffle=True, seed=5))
    for x, y in batches:
        assert torch.equal(x, torch.from_numpy(data[y.numpy()]).permute(0, 3, 1, 2))


def test_adapter_workers_read_disjoint_batches(recs):
    ds, _ = recs
    # Labels computed where the batch is read: (index, pid of the process that read it).
    tagged = RecordDataset(ds.uris, SHAPE, labels=lambda i: (i, os.getpid()))
    it = TorchIterableDataset(tagged, batch_size=10)
    tl = torch.utils.data.DataLoader(
        it, batch_size=None, num_workers=2, timeout=60, multiprocessing_context="fork"
    )
    ys = [y.numpy() for _, y in tl]
    pids = [set(y[:, 1].tolist()) for y in ys]
    assert all(len(p) == 1 for p in pids)  # each batch read by one worker
    assert pids[0] != pids[1] and pids[0] == pids[2]  # dealt round-robin
    assert os.getpid() not in set.union(*pids)
    assert np.array_equal(np.concatenate(ys)[:, 0], np.arange(N))


def test_adapter_splits_by_rank_explicit_and_from_the_environment(recs, monkeypatch):
    ds, _ = recs
    shares = []
    for rank in (0, 1):
        it = TorchIterableDataset(ds, batch_size=8, shuffle=True, rank=rank, world_size=2)
        got = labels_of(torch.utils.data.DataLoader(it, batch_size=None))
        assert len(it) == 7 and len(got) == 50
        assert np.array_equal(
            got,
            reference_order(ds, batch_size=8, shuffle=True, shard_rank=rank, shard_world_size=2),
        )
        shares.append(got)
    assert not set(shares[0]) & set(shares[1]) and len(set(shares[0]) | set(shares[1])) == N
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    found = TorchIterableDataset(ds, batch_size=8, shuffle=True)  # rank None: discovered
    assert np.array_equal(labels_of(torch.utils.data.DataLoader(found, batch_size=None)), shares[1])


def test_adapter_keeps_a_rank_the_options_set(recs, monkeypatch):
    ds, _ = recs
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")  # discovery would say 0 of 2: the options must win
    for opts in (
        LoaderOptions(batch_size=8, shard_rank=1, shard_world_size=4),
        LoaderOptions(batch_size=8).distributed_sampling(1, 4),
    ):
        it = TorchIterableDataset(ds, opts)
        got = labels_of(torch.utils.data.DataLoader(it, batch_size=None))
        assert len(it) == 4 and len(got) == 25
        assert np.array_equal(got, reference_order(ds, options=opts))
    found = LoaderOptions(batch_size=8).distributed_sampling()  # None: discovered
    got = labels_of(torch.utils.data.DataLoader(TorchIterableDataset(ds, found), batch_size=None))
    assert np.array_equal(
        got, reference_order(ds, options=found.replace(shard_rank=0, shard_world_size=2))
    )
    mine = TorchIterableDataset(
        ds, batch_size=8, shard_rank=1, shard_world_size=4, rank=3, world_size=4
    )
    assert np.array_equal(
        labels_of(torch.utils.data.DataLoader(mine, batch_size=None)),
        reference_order(ds, batch_size=8, shard_rank=3, shard_world_size=4),
    )


def test_adapter_set_epoch_changes_the_order(recs):
    ds, _ = recs
    it = TorchIterableDataset(ds, batch_size=10, shuffle=True)
    first = labels_of(torch.utils.data.DataLoader(it, batch_size=None))
    assert np.array_equal(labels_of(torch.utils.data.DataLoader(it, batch_size=None)), first)
    it.set_epoch(1)
    second = labels_of(torch.utils.data.DataLoader(it, batch_size=None))
    assert not np.array_equal(first, second) and sorted(second) == list(range(N))


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_adapter_set_epoch_reaches_persistent_workers(recs, context):
    """torch keeps persistent workers' copies of the dataset: set_epoch must still reach them."""
    ds, _ = recs
    it = TorchIterableDataset(ds, batch_size=10, shuffle=True, seed=4)
    tl = torch.utils.data.DataLoader(
        it,
        batch_size=None,
        num_workers=2,
        timeout=60,
        persistent_workers=True,
        multiprocessing_context=context,
    )
    orders = []
    for epoch in (0, 1, 0):
        it.set_epoch(epoch)
        orders.append(labels_of(tl))
    with DataLoader(ds, batch_size=10, shuffle=True, seed=4) as dl:
        want = []
        for epoch in (0, 1):
            dl.set_epoch(epoch)
            want.append(np.concatenate([y for _, y in dl]))
    assert not np.array_equal(want[0], want[1])
    assert [o.tolist() for o in orders] == [want[0].tolist(), want[1].tolist(), want[0].tolist()]


def test_adapter_pickles_without_its_loader_and_runs_in_spawned_workers(recs):
    ds, data = recs
    it = TorchIterableDataset(ds, batch_size=25, mean=MEAN, std=STD)
    next(iter(it))  # makes this process's loader
    assert it._loader is not None
    it.set_epoch(3)
    clone = pickle.loads(pickle.dumps(it))
    assert clone._loader is None and clone.output_args == it.output_args
    clone.set_epoch(5)  # a pickled copy keeps the epoch as a value, it does not share it
    assert (clone.epoch, it.epoch) == (5, 3)
    it.set_epoch(0)
    tl = torch.utils.data.DataLoader(
        it, batch_size=None, num_workers=1, timeout=120, multiprocessing_context="spawn"
    )
    xs = [x for x, _ in tl]
    assert [x.dtype for x in xs] == [torch.float32] * 4
    ref = ((data.astype(np.float64) - MEAN) / STD).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(torch.cat(xs).numpy(), ref, rtol=1e-6, atol=1e-5)


def test_adapter_rejects_bad_input(recs):
    with pytest.raises(TypeError, match="fastload Dataset"):
        TorchIterableDataset([1, 2, 3])
    with pytest.raises(ValueError, match="shard_rank=2 is invalid"):
        TorchIterableDataset(recs[0], rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size=0 is invalid"):
        TorchIterableDataset(recs[0], batch_size=0)


class PinnedInWorker(torch.utils.data.Dataset):
    """Reports, from where it runs, whether the adapter's loader there would pin."""

    def __init__(self, adapter) -> None:
        self.adapter = adapter

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> bool:
        return self.adapter._config_here().config.pin_memory


def test_adapter_pins_in_the_main_process_but_not_in_torch_workers(recs):
    it = TorchIterableDataset(recs[0], batch_size=10, pin_memory=True)
    assert it._config_here().config.pin_memory  # iterated here, pinning acts
    tl = torch.utils.data.DataLoader(
        PinnedInWorker(it),
        batch_size=None,
        num_workers=1,
        timeout=60,
        multiprocessing_context="fork",
    )
    assert list(tl) == [False]  # a worker never pins (nor touches CUDA)
