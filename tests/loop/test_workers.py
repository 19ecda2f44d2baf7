"""Worker processes (fastload.loop.workers): start methods, shared memory, seeds,
persistence, and deaths, hangs and errors named."""

from __future__ import annotations

import os

import numpy as np
import pytest

from fastload.loop.loader import DataLoader
from fastload.plan.datasets import ObjectDataset, RecordDataset
from tests.support import loader_helpers as H
from tests.support.loader_data import SHAPE, N


@pytest.mark.parametrize("ctx", ["spawn", "fork", "forkserver"])
def test_workers_start_method_shared_memory_and_seeds(recs, ctx, monkeypatch):
    ds = RecordDataset(recs[0].uris, SHAPE, labels=np.arange(N), transform=H.worker_facts)
    monkeypatch.setattr(H, "MARK", 42)  # only a forked child inherits this
    dl = DataLoader(
        ds,
        batch_size=10,
        num_workers=2,
        enable_transforms=True,
        multiprocessing_context=ctx,
        seed=7,
    )
    facts = np.concatenate([x for x, _ in dl])
    pids = set(facts[:, 0].tolist())
    assert pids <= set(dl.report()["epoch_pids"][0]) and os.getpid() not in pids
    assert set(facts[:, 1].tolist()) == ({42} if ctx == "fork" else {0})
    by_worker = {p: facts[facts[:, 0] == p, 2] for p in pids}
    if len(by_worker) == 2:
        a, b = by_worker.values()
        assert not set(a) & set(b)  # independent streams
    assert dl.report()["workers"] is None  # not persistent: gone after the epoch


def test_workers_grow_their_segments_for_larger_batches(tmp_path):
    sizes = [10, 20, 30, 40, 1 << 20, 3 << 20]  # later batches outgrow the first segments
    for i, n in enumerate(sizes):
        (tmp_path / f"{i}").write_bytes(bytes([i]) * n)
    ds = ObjectDataset([str(tmp_path / f"{i}") for i in range(6)], transform=H.first_bytes)
    dl = DataLoader(
        ds,
        batch_size=2,
        num_workers=1,
        enable_transforms=True,
        multiprocessing_context="fork",
        persistent_workers=True,
    )
    for _ in range(2):
        got = [x.sample(i) for x in dl for i in range(x.count)]
        assert [len(g) for g in got] == [n // 2 for n in sizes]
        assert all((g == i).all() for i, g in enumerate(got))
    dl.close()


def test_workers_hand_batches_back_through_shared_memory_not_the_pipe(tmp_path, monkeypatch):
    import multiprocessing.connection as mpc
    import pickle

    shape = (64, 64, 3)
    data = H.write_records(str(tmp_path), 40, shape, 2)
    ds = RecordDataset(str(tmp_path), shape, labels=np.arange(40), transform=H.invert)
    piped = []
    real_send, real_recv = mpc.Connection.send, mpc.Connection.recv

    def send(self, obj):
        piped.append(len(pickle.dumps(obj)))
        return real_send(self, obj)

    def recv(self):
        obj = real_recv(self)
        piped.append(len(pickle.dumps(obj)))
        return obj

    monkeypatch.setattr(mpc.Connection, "send", send)
    monkeypatch.setattr(mpc.Connection, "recv", recv)
    dl = DataLoader(
        ds, batch_size=10, num_workers=2, enable_transforms=True, multiprocessing_context="fork"
    )
    for x, y in dl:
        assert np.array_equal(x, 255 - data[y])
    assert dl.report()["worker_starts"] == 1 and piped
    assert sum(piped) < data.nbytes // 20  # offsets and shapes cross the pipe, never the pixels


@pytest.mark.parametrize("mode", ["sequential", "async_pool"])
def test_worker_seeds_are_reproducible(recs, mode):
    ds = RecordDataset(recs[0].uris, SHAPE, labels=np.arange(N), transform=H.worker_facts)
    runs = []
    for _ in range(2):
        dl = DataLoader(
            ds,
            batch_size=10,
            num_workers=2,
            prefetch=4,
            enable_transforms=True,
            seed=11,
            multiprocessing_context="fork",
            loading_mode=mode,
        )
        by_batch = {int(y[0]) // 10: x for x, y in dl}
        pids = dl.report()["epoch_pids"][0]
        for k, x in by_batch.items():  # batch k ran on worker k % 2, whatever the thread timing
            assert set(x[:, 0].tolist()) == {pids[k % 2]}
        runs.append(np.concatenate([by_batch[k][:, 2] for k in sorted(by_batch)]))
    assert np.array_equal(runs[0], runs[1])


def test_persistent_workers_survive_epochs(recs):
    ds = RecordDataset(recs[0].uris, SHAPE, labels=np.arange(N), transform=H.invert)
    for persistent, starts in ((True, 1), (False, 3)):
        dl = DataLoader(
            ds,
            batch_size=25,
            num_workers=2,
            enable_transforms=True,
            persistent_workers=persistent,
            multiprocessing_context="fork",
        )
        for _ in range(3):
            for x, y in dl:
                assert np.array_equal(x, 255 - recs[1][y])
        assert dl.report()["worker_starts"] == starts
        dl.close()


@pytest.mark.parametrize(
    "transform, how",
    [
        (H.die_on_marker, "exited with code 3"),
        (H.kill_on_marker, r"was killed by signal 9 \(SIGKILL\)"),
    ],
)
def test_dead_worker_names_itself_and_exit_code(recs, transform, how):
    ds = RecordDataset(recs[0].uris, SHAPE, transform=transform)
    dl = DataLoader(
        ds, batch_size=10, num_workers=2, enable_transforms=True, multiprocessing_context="fork"
    )
    with pytest.raises(
        RuntimeError, match=rf"fastload worker \d \(pid \d+\) {how} while transforming batch 0"
    ):
        list(dl)
    assert not __import__("multiprocessing").active_children()


def test_a_persistent_worker_that_died_while_idle_is_named(recs):
    import signal

    ds = RecordDataset(recs[0].uris, SHAPE, labels=np.arange(N), transform=H.invert)
    dl = DataLoader(
        ds,
        batch_size=10,
        num_workers=2,
        enable_transforms=True,
        persistent_workers=True,
        multiprocessing_context="fork",
        timeout_seconds=30,
    )
    list(dl)
    pid = dl.workers.pids[1]
    os.kill(pid, signal.SIGKILL)  # e.g. the OOM killer, between epochs
    with pytest.raises(
        RuntimeError,
        match=rf"fastload worker 1 \(pid {pid}\) was killed by signal 9 \(SIGKILL\) while",
    ):
        list(dl)  # not a bare BrokenPipeError
    assert [len(x) for x, _ in dl] == [10] * 10 and dl.report()[
        "worker_starts"
    ] == 2  # fresh workers
    dl.close()


def test_timeout_while_a_worker_transforms(recs):
    ds = RecordDataset(recs[0].uris, SHAPE, transform=H.sleep_on_marker)
    dl = DataLoader(
        ds,
        batch_size=5,
        num_workers=1,
        enable_transforms=True,
        multiprocessing_context="fork",
        timeout_seconds=1.0,
        prefetch=1,
    )
    with pytest.raises(
        TimeoutError, match=r"batch 1 of epoch 0 .* waiting for worker 0 \(pid \d+\) to run"
    ):
        list(dl)
    assert dl.workers is None and not __import__("multiprocessing").active_children()


def test_timeout_while_workers_start(recs, tmp_path, monkeypatch):
    # A worker whose start hangs (here: importing the transform's module) must not hang iter().
    (tmp_path / "slow_import.py").write_text(
        "import os, time\n"
        "if os.environ.get('FASTLOAD_TEST_SLOW_IMPORT'):\n"
        "    time.sleep(30)\n"
        "def same(x):\n"
        "    return x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import slow_import

    monkeypatch.setenv("FASTLOAD_TEST_SLOW_IMPORT", "1")  # only the worker imports it from now on
    ds = RecordDataset(recs[0].uris, SHAPE, transform=slow_import.same)
    dl = DataLoader(
        ds,
        batch_size=5,
        num_workers=1,
        enable_transforms=True,
        multiprocessing_context="spawn",
        timeout_seconds=2.0,
    )
    with pytest.raises(
        TimeoutError,
        match=r"fastload worker 0 \(pid \d+\) not ready after 2 s "
        r"\(timeout_seconds\) while starting",
    ):
        iter(dl)
    assert dl.workers is None and not __import__("multiprocessing").active_children()


def test_transform_error_names_the_sample(recs):
    ds = RecordDataset(recs[0].uris, SHAPE, transform=H.fail_on_marker)
    dl = DataLoader(
        ds, batch_size=5, num_workers=1, enable_transforms=True, multiprocessing_context="fork"
    )
    with pytest.raises(
        RuntimeError,
        match=r"worker 0 \(pid \d+\): the transform failed on sample 7 "
        r"\(.*shard-000\.bin bytes 1008-1151\), position 2 of batch 1: "
        r"ValueError: bad sample 7",
    ):
        list(dl)


@pytest.mark.parametrize(
    "transform",
    [
        H.to_python_int,
        H.to_numpy_scalar,
        H.to_0d_array,
        H.to_1d,
        H.to_transposed,
        H.to_nested_list,
        H.to_mixed_ranks,
    ],
)
def test_a_batch_has_one_shape_whatever_the_worker_count(recs, transform):
    # 0-d values make batches of shape (n,), n-d ones (n, *shape), mixed ranks a RaggedBatch:
    # the same with and without worker processes (workers used to give (n, 1) for 0-d).
    ds = RecordDataset(recs[0].uris, SHAPE, labels=np.arange(N), transform=transform)
    runs = []
    for workers in (0, 2):
        dl = DataLoader(
            ds,
            batch_size=10,
            num_workers=workers,
            enable_transforms=True,
            multiprocessing_context="fork",
        )
        runs.append([x for x, _ in dl])
        dl.close()
    here, there = runs
    assert len(here) == len(there) == N // 10
    for a, b in zip(here, there, strict=True):
        if isinstance(a, np.ndarray):
            one = np.asarray(transform(recs[1][0]))
            assert a.shape == b.shape == (10, *one.shape) and a.dtype == b.dtype == one.dtype
            assert np.array_equal(a, b)
        else:  # ragged: the same bytes at the same offsets
            assert type(a) is type(b) and np.array_equal(a.offsets, b.offsets)
            assert np.array_equal(a.data, b.data)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_transform_returning_python_objects_names_the_sample(recs, workers):
    ds = RecordDataset(recs[0].uris, SHAPE, transform=H.to_objects)
    dl = DataLoader(
        ds,
        batch_size=5,
        num_workers=workers,
        enable_transforms=True,
        multiprocessing_context="fork",
    )
    with pytest.raises(
        RuntimeError, match=r"transform failed on sample 0 .*: TypeError: .*objects"
    ):
        list(dl)
