"""``fastload.DataLoader`` as a drop-in for ``torch.utils.data.DataLoader``: the same
datasets (torch Dataset subclasses returning numpy arrays, tensors, tuples, dicts,
namedtuples, numbers and strings; iterable datasets) side by side with torch's loader:
argument checks and their exception types, len(), collation, workers, get_worker_info,
generators, errors naming the index, several iterators. Also torch's exception types for
the torch keywords of a fastload Dataset."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.utils import data as tud  # noqa: E402

import fastload  # noqa: E402
from fastload import DataLoader, LoaderOptions  # noqa: E402
from fastload.loop.loader import PythonDatasetLoader  # noqa: E402

pytestmark = pytest.mark.torch

Pair = collections.namedtuple("Pair", "a b")
N = 10


class MapDS(tud.Dataset):
    """Samples of one ``kind``; ``fail`` (an index) raises there, ``kill`` kills the worker."""

    def __init__(self, kind="np", n=N, fail=None, kill=None):
        self.kind, self.n, self.fail, self.kill = kind, n, fail, kill

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.fail:
            raise KeyError(f"no sample {i}")
        if i == self.kill:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.kind == "np":
            return np.full((2, 3), i, dtype=np.float32)
        if self.kind == "tensor":
            return torch.arange(3, dtype=torch.int16) + i
        if self.kind == "tuple":
            return np.int64(i), torch.ones(2) * i, f"s{i}"
        if self.kind == "dict":
            return {"x": np.arange(2) + i, "meta": {"name": f"n{i}", "w": float(i)}}
        if self.kind == "namedtuple":
            return Pair(i, np.float64(i) / 2)
        if self.kind == "scalars":
            return [i, float(i), f"v{i}", True]
        raise AssertionError(self.kind)


class NoLenIterable(tud.IterableDataset):
    """0..n-1, each worker taking its share (as torch's docs shard)."""

    def __init__(self, n=N, shard=True):
        self.n, self.shard = n, shard

    def __iter__(self):
        info = tud.get_worker_info()
        if info is None or not self.shard:
            return iter(range(self.n))
        return iter(range(info.id, self.n, info.num_workers))


class SizedIterable(NoLenIterable):
    def __len__(self):
        return self.n


def both(make_ds, **kw):
    """The batches torch's DataLoader and fastload's give for the same arguments."""
    return list(tud.DataLoader(make_ds(), **kw)), list(DataLoader(make_ds(), **kw))


def structure(batch):
    """Types, dtypes, shapes and values of a (nested) batch, comparable with ==."""
    if isinstance(batch, torch.Tensor):
        return ("tensor", batch.dtype, tuple(batch.shape), batch.tolist())
    if isinstance(batch, np.ndarray):
        return ("ndarray", batch.dtype, batch.shape, batch.tolist())
    if isinstance(batch, dict):
        return (type(batch), {k: structure(v) for k, v in batch.items()})
    if isinstance(batch, (list, tuple)):
        return (type(batch), [structure(b) for b in batch])
    return (type(batch), batch)


@pytest.mark.parametrize("kind", ["np", "tensor", "tuple", "dict", "namedtuple", "scalars"])
@pytest.mark.parametrize(
    "kw",
    [{}, {"batch_size": 4}, {"batch_size": 3, "drop_last": True}, {"batch_size": None}],
    ids=["default", "batch4", "drop_last", "unbatched"],
)
def test_python_datasets_collate_as_torch(kind, kw):
    theirs, ours = both(lambda: MapDS(kind), **kw)
    assert [structure(b) for b in ours] == [structure(b) for b in theirs]
    dl = DataLoader(MapDS(kind), **kw)
    assert isinstance(dl, PythonDatasetLoader) and isinstance(dl, DataLoader)
    assert len(dl) == len(tud.DataLoader(MapDS(kind), **kw)) == len(ours)


def test_collate_fn_positional_arguments_and_attributes():
    def count(samples):
        return len(samples)

    theirs, ours = both(MapDS, batch_size=4, collate_fn=count)
    assert ours == theirs == [4, 4, 2]
    # torch's positional order: batch_size, shuffle, sampler, batch_sampler, num_workers ...
    assert [structure(b) for b in DataLoader(MapDS(), 5, False)] == [
        structure(b) for b in tud.DataLoader(MapDS(), 5, False)
    ]
    ds = MapDS()
    dl, ref = DataLoader(ds, batch_size=4), tud.DataLoader(ds, batch_size=4)
    assert dl.dataset is ds and dl.collate_fn is ref.collate_fn is tud.default_collate
    assert (dl.batch_size, dl.drop_last, dl.num_workers, dl.timeout) == (4, False, 0, 0)
    assert type(dl.sampler) is tud.SequentialSampler and dl.prefetch_factor is None
    assert type(dl.batch_sampler) is tud.BatchSampler and dl.worker_init_fn is None
    for name in ("batch_size", "sampler", "drop_last", "dataset"):
        with pytest.raises(ValueError, match=f"{name} attribute should not be set"):
            setattr(dl, name, None)


def test_same_refusals_and_exception_types_as_torch():
    cases = [
        {"sampler": [0, 1], "shuffle": True},
        {"batch_sampler": [[0, 1]], "batch_size": 2},
        {"batch_sampler": [[0, 1]], "shuffle": True},
        {"batch_sampler": [[0, 1]], "sampler": [0]},
        {"batch_sampler": [[0, 1]], "drop_last": True},
        {"num_workers": -1},
        {"num_workers": "2"},
        {"prefetch_factor": 2},
        {"prefetch_factor": -1, "num_workers": 1},
        {"persistent_workers": True},
        {"timeout": -1},
        {"timeout": "a"},
        {"multiprocessing_context": "bogus", "num_workers": 1},
        {"multiprocessing_context": 3, "num_workers": 1},
        {"multiprocessing_context": "spawn"},  # without workers
        {"batch_size": 0},
        {"batch_size": -1},
        {"batch_size": None, "drop_last": True},
        {"drop_last": "yes"},
    ]
    iterable = [{"sampler": [0]}, {"batch_sampler": [[0]]}, {"shuffle": True}]
    for make, kws in ((MapDS, cases), (NoLenIterable, iterable)):
        for kw in kws:
            with pytest.raises((ValueError, TypeError)) as theirs:
                tud.DataLoader(make(), **kw)
            with pytest.raises((ValueError, TypeError)) as ours:
                DataLoader(make(), **kw)
            assert type(ours.value) is type(theirs.value), kw
            assert str(ours.value) == str(theirs.value), kw


def test_fastload_knobs_are_refused_for_a_python_dataset():
    with pytest.raises(TypeError, match=r"DataLoader\(MapDS, dtype=, part_size=\).*Python dataset"):
        DataLoader(MapDS(), batch_size=4, dtype=np.float32, part_size=1 << 20)
    with pytest.raises(TypeError, match="LoaderOptions configure a fastload Dataset"):
        DataLoader(MapDS(), LoaderOptions(batch_size=4))
    with pytest.raises(TypeError, match=r"DataLoader\(MapDS, options=\)"):
        DataLoader(MapDS(), options=LoaderOptions())
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        DataLoader(MapDS(), bogus=1)  # neither torch's nor fastload's: torch's own error
    dl = DataLoader(MapDS())
    with pytest.raises(TypeError, match=r"state_dict\(\) needs a fastload Dataset.*MapDS"):
        dl.state_dict()
    with pytest.raises(TypeError, match="fastload Dataset"):  # a path is no dataset
        DataLoader("/data/train/")


def test_len_of_iterable_datasets_is_torchs():
    for kw in ({}, {"batch_size": 4}, {"batch_size": 4, "drop_last": True}, {"batch_size": None}):
        assert len(DataLoader(SizedIterable(), **kw)) == len(tud.DataLoader(SizedIterable(), **kw))
    with pytest.raises(TypeError, match="has no len"):
        len(tud.DataLoader(NoLenIterable()))
    with pytest.raises(TypeError, match="has no len"):
        len(DataLoader(NoLenIterable()))


@pytest.mark.parametrize("shard", [True, False])
def test_iterable_dataset_in_two_workers_gives_torchs_samples(shard):
    kw = {"batch_size": None, "num_workers": 2, "multiprocessing_context": "fork"}
    theirs, ours = both(lambda: NoLenIterable(shard=shard), **kw)
    assert sorted(int(x) for x in ours) == sorted(int(x) for x in theirs)
    assert len(ours) == (N if shard else 2 * N)  # unsharded: each worker yields it all, as torch


def test_getitem_errors_keep_their_type_and_name_the_index():
    with pytest.raises(KeyError) as info:
        list(DataLoader(MapDS(fail=3), batch_size=2))
    # the key the caller may inspect stays as raised; the index is a note on the exception
    assert info.value.args == ("no sample 3",)
    assert "fastload: raised by MapDS[3]" in info.value.__notes__
    with pytest.raises(KeyError) as info:
        list(DataLoader(MapDS(fail=5), batch_size=2, num_workers=2, multiprocessing_context="fork"))
    text = str(info.value)
    assert "worker process" in text and "no sample 5" in text and "MapDS[5]" in text
    with pytest.raises(KeyError) as info:  # unbatched: the index itself
        list(DataLoader(MapDS(fail=7), batch_size=None))
    assert "fastload: raised by MapDS[7]" in info.value.__notes__


KILLED = """
import os
import sys
from torch.utils import data as tud
import fastload
from tests.loop.test_torch_dropin_parity import MapDS
make = tud.DataLoader if sys.argv[1] == "torch" else fastload.DataLoader
try:
    list(make(MapDS(kill=4), batch_size=2, num_workers=1, multiprocessing_context="fork"))
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}", flush=True)
os._exit(0)  # torch's SIGCHLD handler would raise again in the interpreter's teardown
"""


@pytest.mark.parametrize("which", ["torch", "fastload"])
def test_a_worker_killed_by_a_signal_raises_as_torch(which):
    # in a child: torch's SIGCHLD handler raises wherever the main thread happens to be
    out = subprocess.run(
        [sys.executable, "-c", KILLED, which],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    # torch's main loop sees the dead worker either way, by the signal or by its pipe
    assert out.stdout.startswith(
        ("RuntimeError: DataLoader worker (pid", "ConnectionResetError")
    ), out.stdout + out.stderr[-2000:]


_SEEN: dict[str, object] = {}


def _record_init(worker_id):
    info = tud.get_worker_info()
    _SEEN["init"] = (worker_id, type(info.dataset).__name__)


class InfoDS(MapDS):
    def __getitem__(self, i):
        torch_info, ours = tud.get_worker_info(), fastload.get_worker_info()
        return np.array(
            [
                torch_info.id,
                torch_info.num_workers,
                isinstance(torch_info.dataset, InfoDS),
                ours.id if ours else -1,
                _SEEN.get("init", (-1,))[0],
                _SEEN.get("init", (0, ""))[1] == "InfoDS",
            ]
        )


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_get_worker_info_and_worker_init_fn_in_workers(context):
    dl = DataLoader(
        InfoDS(n=8),
        batch_size=2,
        num_workers=2,
        multiprocessing_context=context,
        worker_init_fn=_record_init,
    )
    assert dl.worker_init_fn is _record_init
    rows = {tuple(r) for batch in dl for r in batch.tolist()}
    # torch's info names the caller's dataset (the worker's copy), fastload's answers too
    assert rows == {(0, 2, 1, 0, 0, 1), (1, 2, 1, 1, 1, 1)}
    assert tud.get_worker_info() is None and fastload.get_worker_info() is None


def test_generator_reproducibility_break_two_iterators_and_set_epoch():
    def order(seed):
        gen = torch.Generator().manual_seed(seed)
        return [b.tolist() for b in DataLoader(MapDS("tensor"), 3, True, generator=gen)]

    assert order(5) == order(5) != order(6)

    def torch_order(seed):
        gen = torch.Generator().manual_seed(seed)
        return [b.tolist() for b in tud.DataLoader(MapDS("tensor"), 3, True, generator=gen)]

    assert order(5) == torch_order(5)  # the same draws as torch's from the same generator

    dl = DataLoader(MapDS("tensor"), batch_size=2)
    for i, _ in enumerate(dl):
        if i == 1:
            break
    assert len(list(dl)) == 5  # a new epoch after a break starts from the beginning
    a, b = iter(dl), iter(dl)  # two live iterators, as torch allows
    assert next(a).tolist() == next(b).tolist() == [[0, 1, 2], [1, 2, 3]]
    assert len(list(a)) == len(list(b)) == 4

    ds = MapDS()
    ours = tud.DistributedSampler(ds, num_replicas=2, rank=0, shuffle=True, seed=1)
    theirs = tud.DistributedSampler(ds, num_replicas=2, rank=0, shuffle=True, seed=1)
    dl = DataLoader(ds, batch_size=5, sampler=ours)
    dl.set_epoch(3)  # reaches the sampler, as sampler.set_epoch does for torch's loader
    theirs.set_epoch(3)
    assert ours.epoch == 3 and dl.epoch == 3
    ref = tud.DataLoader(ds, batch_size=5, sampler=theirs)
    assert [structure(b) for b in dl] == [structure(b) for b in ref]


def test_pin_memory_without_an_accelerator_warns_as_torch_and_continues():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available: pinning works")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(DataLoader(MapDS(), batch_size=4, pin_memory=True))
    assert len(batches) == 3
    assert any(issubclass(w.category, UserWarning) and "pin" in str(w.message) for w in caught)


# -- torch's keywords on a fastload Dataset: torch's exception types ------------------------
def test_fastload_dataset_refuses_wrong_types_with_typeerror(recs):
    ds = recs[0]
    for kw in (
        {"timeout": "a"},
        {"num_workers": "2"},
        {"num_workers": 1.5},
        {"multiprocessing_context": 3},
        {"prefetch_factor": "2", "num_workers": 1},
        {"collate_fn": 3},
        {"worker_init_fn": 3},
        {"generator": 3},
    ):
        with pytest.raises(TypeError, match=f"{next(iter(kw))}="):
            DataLoader(ds, **kw)
    with pytest.raises(ValueError, match="timeout option should be non-negative"):
        DataLoader(ds, timeout=float("nan"))


def test_fastload_dataset_takes_torchs_positional_arguments(recs):
    ds = recs[0]
    args = (7, False, None, None, 0, None, False, True)  # ... pin_memory, drop_last
    ours, theirs = DataLoader(ds, *args), tud.DataLoader(ds, *args)
    assert ours.drop_last is True and len(ours) == len(theirs) == len(ds) // 7
    for (x, y), (tx, ty) in zip(ours, theirs, strict=True):
        assert np.array_equal(x, tx.numpy()) and np.array_equal(y, ty.numpy())
    order = list(range(len(ds) - 1, -1, -1))
    first = next(iter(DataLoader(ds, 4, False, order)))  # sampler, positional
    assert first[1].tolist() == order[:4]
    with pytest.raises(TypeError, match="multiple values for argument 'shuffle'"):
        DataLoader(ds, 4, True, shuffle=True)
    with pytest.raises(TypeError, match="LoaderOptions alone"):
        DataLoader(ds, LoaderOptions(), True)
