"""The DataLoader: every knob changes what it does, and nothing leaks."""

from __future__ import annotations

import gc
import os
import threading
import time
import warnings

import numpy as np
import pytest

import fastload.loop.loader as loader_mod
from fastload._native import file_reader
from fastload._native.status import CacheMode
from fastload.batch.ragged import RaggedBatch
from fastload.loop.loader import DataLoader
from fastload.plan.datasets import ObjectDataset, RecordDataset
from fastload.plan.options import LoaderOptions
from fastload.plan.samplers import make_sampler
from tests.support import loader_helpers as H
from tests.support.loader_data import SHAPE, N, collect

# -- order, sizes, len ----------------------------------------------------------


def test_sequential_order_batch_sizes_and_len(recs):
    ds, data = recs
    dl = DataLoader(ds, batch_size=16)
    xs, ys = collect(dl)
    assert len(dl) == 7 == len(xs)
    assert [len(x) for x in xs] == [16] * 6 + [4]
    assert np.array_equal(np.concatenate(ys), np.arange(N))
    assert np.array_equal(np.concatenate(xs), data)


def test_drop_last(recs):
    dl = DataLoader(recs[0], batch_size=16, drop_last=True)
    xs, _ = collect(dl)
    assert len(dl) == 6 and [len(x) for x in xs] == [16] * 6


def test_each_epoch_follows_the_sampler(recs):
    ds, data = recs
    opts = LoaderOptions(batch_size=10, shuffle=True, seed=5)
    dl = DataLoader(ds, opts)
    sampler = make_sampler(opts.config, N)
    orders = []
    for epoch in range(2):
        xs, ys = collect(dl)
        order = np.concatenate(ys)
        assert np.array_equal(order, sampler.indices(epoch))
        assert np.array_equal(np.concatenate(xs), data[order])
        orders.append(order)
    assert not np.array_equal(orders[0], orders[1])
    dl.set_epoch(0)
    assert np.array_equal(np.concatenate(collect(dl)[1]), orders[0])


def test_weighted_and_distributed_samplers_reach_the_loader(recs):
    ds, _ = recs
    w = np.zeros(N)
    w[[3, 9]] = 1
    dl = DataLoader(ds, batch_size=8, sampler_type="weighted_random", weights=w, replacement=True)
    assert set(np.concatenate(collect(dl)[1]).tolist()) == {3, 9}
    ranks = [
        np.concatenate(
            collect(
                DataLoader(
                    ds,
                    batch_size=8,
                    sampler_type="distributed_random",
                    shard_rank=r,
                    shard_world_size=2,
                )
            )[1]
        )
        for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) == 50 and not set(ranks[0]) & set(ranks[1])


# -- output shape: layout, dtype, normalisation ------------------------------------


def test_auto_layout_is_zero_copy_of_the_read_slab(recs):
    ds, data = recs
    dl = DataLoader(ds, batch_size=8, memory_format="auto")
    x, y = next(iter(dl))
    assert x.shape == (8, *SHAPE) and x.dtype == np.uint8 and np.array_equal(x, data[:8])
    assert x.ctypes.data % 4096 == 0  # a view of a pooled aligned buffer, not a copy


@pytest.mark.parametrize(
    "fmt, shape, perm",
    [
        ("channels_first", (8, 3, 8, 6), (0, 3, 1, 2)),
        ("channels_last", (8, 8, 6, 3), (0, 1, 2, 3)),
    ],
)
def test_memory_format(recs, fmt, shape, perm):
    ds, data = recs
    x, y = next(iter(DataLoader(ds, batch_size=8, memory_format=fmt)))
    assert x.shape == shape and x.flags.c_contiguous
    assert np.array_equal(x, data[y].transpose(perm))


def test_dtype_mean_std_scale(recs):
    ds, data = recs
    mean, std = [120, 110, 100], [50, 60, 70]
    dl = DataLoader(
        ds,
        batch_size=8,
        memory_format="channels_first",
        dtype=np.float32,
        scale=0.5,
        mean=mean,
        std=std,
    )
    x, y = next(iter(dl))
    ref = (
        (data[y].transpose(0, 3, 1, 2) - np.reshape(mean, (1, 3, 1, 1)))
        / np.reshape(std, (1, 3, 1, 1))
        * 0.5
    )
    assert x.dtype == np.float32 and np.allclose(x, ref, atol=1e-5)
    assert dl.report()["collate"]["transposed"]
    x16, _ = next(iter(DataLoader(ds, batch_size=8, dtype=np.float16)))
    assert x16.dtype == np.float16 and np.array_equal(x16, data[:8].astype(np.float16))


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"mean": [1, 2], "std": [1, 1]}, "mean has 2 values but the samples have 3 channel"),
        ({"mean": [1], "std": [0]}, "std.* is 0"),
        ({"dtype": np.int8}, "int8"),
        ({"batch_size": 0}, "batch_size"),
        ({"consumer": "jax"}, "consumer"),
        ({"part_size": 100}, "part_size"),
    ],
)
def test_bad_arguments_name_the_knob(recs, kw, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        DataLoader(recs[0], **kw)


def test_ragged_objects_and_labels_callable(tmp_path):
    blobs = [os.urandom(n) for n in (5, 300, 0, 17, 4000)]
    for i, b in enumerate(blobs):
        (tmp_path / f"{i}.bin").write_bytes(b)
    ds = ObjectDataset(str(tmp_path), labels=lambda i: i * 10)
    batches = list(DataLoader(ds, batch_size=3))
    assert len(batches) == 2
    x, y = batches[0]
    assert isinstance(x, RaggedBatch) and x.count == 3 and y.tolist() == [0, 10, 20]
    assert [x.sample(i).tobytes() for i in range(3)] == blobs[:3]
    x, _ = batches[1]
    assert [x.sample(i).tobytes() for i in range(2)] == blobs[3:]


# -- pinning ---------------------------------------------------------------------


@pytest.mark.parametrize("knob", ["pin_memory", "non_blocking"])
def test_pinning_knobs_pin_the_batch_buffers(recs, knob):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dl = DataLoader(recs[0], batch_size=8, **{knob: True})
        x, _ = next(iter(dl))
    rep = dl.report()
    assert rep["pin_memory"] is (knob == "pin_memory") and dl.pool.pin
    if rep["pin_mode"] == "none":  # the OS refused: the loader says so and why
        assert rep["pin_error"] and any("not pinned" in str(w.message) for w in caught)
    else:
        assert rep["pin_mode"] in ("cuda", "mlock") and rep["pin_error"] is None
        assert all(b.pinned for b in dl.pool._buffers) and x.base is not None
    plain = DataLoader(recs[0], batch_size=8)
    next(iter(plain))
    assert plain.report()["pin_mode"] == "none" and not any(b.pinned for b in plain.pool._buffers)


# -- prefetch, loading_mode, timeout --------------------------------------------------


def test_prefetch_reads_ahead_up_to_its_depth(recs):
    for depth in (1, 3):
        dl = DataLoader(recs[0], batch_size=4, prefetch=depth)
        it = iter(dl)
        next(it)
        ep = dl._current()
        deadline = time.monotonic() + 10
        while ep.ahead < depth and time.monotonic() < deadline:  # readers fill while we "train"
            time.sleep(0.01)
        assert ep.ahead == depth
        for _ in it:
            pass
        assert dl.report()["max_read_ahead"] == depth


def test_async_pool_yields_batches_as_they_complete(recs):
    ds, _ = recs
    slow = {ds.sources[0].path}  # shard 0 holds batches 0-2 (25 records, batch 10)
    got = {}
    for mode in ("sequential", "async_pool"):
        eng = H.slow_engine(slow, 1.0)
        dl = DataLoader(ds, batch_size=10, prefetch=4, loading_mode=mode, engine=eng)
        got[mode] = [int(y[0]) // 10 for _, y in dl]
    assert got["sequential"] == list(range(10))
    assert sorted(got["async_pool"]) == list(range(10))
    assert got["async_pool"][0] != 0  # a fast batch overtook the slow one


def test_timeout_names_the_batch_and_what_it_waited_for(recs):
    ds, _ = recs
    eng = H.slow_engine({ds.sources[1].path}, 30.0)
    dl = DataLoader(ds, batch_size=25, prefetch=1, timeout_seconds=1.0, engine=eng)
    it = iter(dl)
    next(it)
    with pytest.raises(
        TimeoutError, match=r"batch 1 of epoch 0 not ready after 1 s.*shard-001\.bin"
    ):
        next(it)
    assert not [t for t in threading.enumerate() if t.name.startswith("fastload-reader")]


# -- resume --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sequential", "async_pool"])
def test_state_dict_resumes_at_the_exact_next_sample(recs, mode):
    ds, _ = recs
    opts = LoaderOptions(batch_size=8, shuffle=True, seed=3, loading_mode=mode)
    full = np.concatenate(collect(DataLoader(ds, opts))[1])
    dl = DataLoader(ds, opts)
    seen = []
    for i, (_, y) in enumerate(dl):
        seen.append(y)
        if i == 4:
            state = dl.state_dict()
            break
    assert state["samples_done"] == 40 and state["epoch"] == 0
    fresh = DataLoader(ds, opts)
    fresh.load_state_dict(state)
    rest = [y for _, y in fresh]
    assert len(rest) == len(fresh) - 5
    assert sorted(np.concatenate(seen + rest).tolist()) == sorted(full.tolist())
    if mode == "sequential":
        assert np.array_equal(np.concatenate(seen + rest), full)
    assert fresh.state_dict()["epoch"] == 1  # the epoch finished


def test_load_state_dict_rejects_another_loader(recs):
    state = DataLoader(recs[0], batch_size=8).state_dict()
    state["global"] = None  # an older state: no progress against the global order
    with pytest.raises(ValueError, match="batch size or worker split and cannot be resumed here"):
        DataLoader(recs[0], batch_size=16).load_state_dict(state)
    # with it, another batch size resumes at the next sample (tests/loop/test_progress_state.py)
    DataLoader(recs[0], batch_size=16).load_state_dict(
        DataLoader(recs[0], batch_size=8).state_dict()
    )


@pytest.mark.parametrize(
    "other",
    [
        {"seed": 4},
        {"shuffle": False},
        {"generator_seed": 9},
    ],  # another rank or world size resumes through the global order (test_progress_state)
)
def test_load_state_dict_rejects_a_loader_with_another_order(recs, other):
    opts = LoaderOptions(batch_size=10, shuffle=True, seed=3)
    dl = DataLoader(recs[0], opts)
    it = iter(dl)
    next(it)
    state = dl.state_dict()
    del it
    # resuming "at the next sample" of another order would silently repeat and skip samples
    with pytest.raises(ValueError, match="load_state_dict: .*(seed|sampler|rank|world_size|len)"):
        DataLoader(recs[0], opts.replace(**other)).load_state_dict(state)
    DataLoader(recs[0], opts).load_state_dict(state)


# -- engine knobs ---------------------------------------------------------------------


def test_engine_knobs_reach_the_file_backend(recs, monkeypatch):
    calls = []
    real = file_reader.read_file_ranges

    def spy(paths, uris, table, out, part_size, inflight, direct, cache_mode, *rest):
        parts = real(paths, uris, table, out, part_size, inflight, direct, cache_mode, *rest)
        calls.append((table.copy(), part_size, inflight, cache_mode, parts))
        return parts

    monkeypatch.setattr(file_reader, "read_file_ranges", spy)
    dl = DataLoader(
        recs[0],
        batch_size=25,
        reader_mode="range",
        part_size=4096,
        max_inflight_parts=3,
        page_cache_mode="dont_need",
    )
    collect(dl)
    table, part, inflight, mode, parts = calls[0]
    assert part == 4096 and inflight == 3 and mode == CacheMode.DONT_NEED
    assert parts == -(-25 * 144 // 4096)  # the native reader cut the batch's run into 4 KiB parts

    calls.clear()
    collect(DataLoader(recs[0], batch_size=25, reader_mode="sequential", part_size=4096))
    assert all(len(t) == 1 and parts == 1 for t, *_, parts in calls)  # one request per shard run
    assert calls[0][1] >= 25 * 144


def _evict(paths):
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    return max(H.resident_fraction(p) for p in paths)


def test_page_cache_mode_dont_need_leaves_nothing_cached(tmp_path):
    H.write_records(str(tmp_path), 400, (64, 64, 3), 2)
    ds = RecordDataset(str(tmp_path), (64, 64, 3))
    paths = [s.path for s in ds.sources]
    resident = {}
    for mode in ("normal", "dont_need"):
        if _evict(paths) > 0.1:
            pytest.skip("this filesystem keeps pages cached despite POSIX_FADV_DONTNEED")
        for _ in DataLoader(ds, batch_size=50, page_cache_mode=mode):
            pass
        resident[mode] = min(H.resident_fraction(p) for p in paths)
    assert resident["normal"] > 0.9 and resident["dont_need"] < 0.1


def test_collate_buffer_size_reaches_the_kernel(recs, monkeypatch):
    seen = []
    real = loader_mod.plan_collate

    def spy(*a, **kw):
        seen.append(kw["collate_buffer_size"])
        return real(*a, **kw)

    monkeypatch.setattr(loader_mod, "plan_collate", spy)
    units = {}
    for size in (4096, 65536):
        dl = DataLoader(recs[0], batch_size=50, dtype=np.float32, collate_buffer_size=size)
        collect(dl)
        units[size] = dl.report()["collate"]["work_units"]
    assert seen == [4096, 65536]  # planned once per loader, not once per batch
    assert units[4096] > units[65536]  # smaller work units: more of them


# -- kept batches -----------------------------------------------------------------------


def test_a_kept_batch_is_never_overwritten(recs):
    ds, data = recs
    kept = [x for x, _ in DataLoader(ds, batch_size=8)]  # more batches than the pool keeps
    assert np.array_equal(np.concatenate(kept), data)


# -- transforms (in process; workers: test_workers.py) -------------------------------------


def test_transform_changing_shape_and_ragged_output(recs, tmp_path):
    ds = RecordDataset(recs[0].uris, SHAPE, labels=np.arange(N), transform=H.crop_half)
    x, y = next(
        iter(DataLoader(ds, batch_size=4, enable_transforms=True, memory_format="channels_first"))
    )
    assert x.shape == (4, 3, 4, 6) and np.array_equal(x, recs[1][y][:, :4].transpose(0, 3, 1, 2))
    for i, n in enumerate((10, 31, 7)):
        (tmp_path / f"{i}").write_bytes(bytes(range(n)))
    objs = ObjectDataset([str(tmp_path / f"{i}") for i in range(3)], transform=H.first_bytes)
    x = next(iter(DataLoader(objs, batch_size=3, enable_transforms=True)))
    assert isinstance(x, RaggedBatch) and [len(x.sample(i)) for i in range(3)] == [5, 15, 3]


# -- errors and leaks -------------------------------------------------------------------------


def test_a_missing_shard_raises_naming_it(recs):
    ds, _ = recs
    os.unlink(ds.sources[2].path)
    with pytest.raises(FileNotFoundError, match="shard-002.bin"):
        list(DataLoader(ds, batch_size=10))


def _resources():
    gc.collect()
    threads = {t.name for t in threading.enumerate() if t.name.startswith("fastload")}
    fds = len(os.listdir("/proc/self/fd"))
    # Segments are named fastload-<creator pid>-...: count this process's, its workers' and
    # any whose creator is gone (a leak); other live processes may run fastload meanwhile.
    shm = {n for n in os.listdir("/dev/shm") if n.startswith("fastload-") and _ours_or_orphan(n)}
    children = len(__import__("multiprocessing").active_children())
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return threads, fds, shm, children, rss


@pytest.mark.parametrize("workers", [0, 2])
def test_no_leaks_over_20_epochs(recs, workers):
    ds = RecordDataset(
        recs[0].uris, SHAPE, labels=np.arange(N), transform=H.invert if workers else None
    )
    kw = {
        "num_workers": workers,
        "enable_transforms": workers > 0,
        "multiprocessing_context": "fork",
    }
    # Warm up once (imports, first allocations), then measure.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        list(DataLoader(ds, batch_size=10, **kw))
    before = _resources()
    for epoch in range(20):
        # persistent_workers without workers raises, as in torch (issue 15)
        dl = DataLoader(ds, batch_size=10, persistent_workers=workers > 0 and epoch % 2 == 0, **kw)
        if epoch % 4 == 0:
            for i, _ in enumerate(dl):  # break out of the loop
                if i == 2:
                    break
        elif epoch % 4 == 1:
            with pytest.raises(ZeroDivisionError):
                for _ in dl:  # the training step fails
                    raise ZeroDivisionError("training step failed")
        else:
            for _ in dl:
                pass
        del dl  # deleting the loader ends everything
    after = _resources()
    # process-wide pools (the Pillow decode pool) live on by design: a leak is what grew
    assert after[0] - before[0] == set(), "threads left"
    assert after[2] - before[2] == set(), "shared-memory segments left"
    assert after[3] == 0, "worker processes left"
    assert after[1] <= before[1], f"fds: {before[1]} before, {after[1]} after: {_fd_targets()}"
    assert after[4] - before[4] < 64 << 20, "RSS grew"


def _ours_or_orphan(segment):
    pid = segment.split("-")[1]
    if not pid.isdigit():
        return True
    pid = int(pid)
    mine = {os.getpid(), *(p.pid for p in __import__("multiprocessing").active_children())}
    return pid in mine or not os.path.exists(f"/proc/{pid}")


def _fd_targets():
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return sorted(out)


# -- edge cases a user hits ------------------------------------------------------------------


def test_in_process_transform_error_names_the_sample_index_and_uri(recs):
    ds = RecordDataset(recs[0].uris, SHAPE, transform=H.fail_on_marker)
    dl = DataLoader(ds, batch_size=5, enable_transforms=True)
    with pytest.raises(
        RuntimeError,
        match=r"transform failed on sample 7 \(.*shard-000\.bin bytes 1008-1151\), "
        r"position 2 of batch 1: ValueError: bad sample 7",
    ) as err:
        list(dl)
    assert isinstance(err.value.__cause__, ValueError)


def test_a_second_iterator_ends_the_first_with_a_clear_error(recs):
    dl = DataLoader(recs[0], batch_size=10)
    first = iter(dl)
    next(first)
    second = iter(dl)
    with pytest.raises(
        RuntimeError, match=r"iterator of epoch 0 was ended by a newer iter\(loader\)"
    ):
        next(first)  # not a silent StopIteration: its batches would be lost unnoticed
    assert len(list(second)) == len(dl)
    with pytest.raises(RuntimeError, match="ended by closing the loader"):
        it = iter(dl)
        next(it)
        dl.close()
        next(it)


def test_set_epoch_then_state_dict_describes_the_epoch_to_run(recs):
    opts = LoaderOptions(batch_size=10, shuffle=True, seed=2)
    dl = DataLoader(recs[0], opts)
    it = iter(dl)
    next(it), next(it)
    dl.set_epoch(5)  # mid-epoch: the next iter() runs epoch 5 from its start
    assert dl.state_dict()["epoch"] == 5 and dl.state_dict()["batches_done"] == []
    del it
    with pytest.raises(ValueError, match="epoch"):
        dl.set_epoch(-1)


def test_set_epoch_of_the_resumed_epoch_keeps_the_resume_point(recs):
    opts = LoaderOptions(batch_size=10, shuffle=True, seed=2)
    full = np.concatenate(collect(DataLoader(recs[0], opts))[1])
    dl = DataLoader(recs[0], opts)
    it = iter(dl)
    seen = [next(it)[1] for _ in range(3)]
    state = dl.state_dict()
    del it
    fresh = DataLoader(recs[0], opts)
    fresh.load_state_dict(state)
    fresh.set_epoch(0)  # a training loop calls set_epoch(epoch) as usual after resuming
    rest = [y for _, y in fresh]
    assert np.array_equal(np.concatenate(seen + rest), full)


def test_empty_dataset_smaller_than_a_batch_and_drop_last(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "s.bin").write_bytes(b"")
    empty = DataLoader(RecordDataset(str(tmp_path / "empty"), SHAPE), batch_size=4)
    assert len(empty) == 0 and list(empty) == [] and empty.state_dict()["epoch"] == 1
    data = H.write_records(str(tmp_path / "few"), 5, SHAPE, 1)
    few = RecordDataset(str(tmp_path / "few"), SHAPE)
    xs = list(DataLoader(few, batch_size=32))
    assert len(xs) == 1 and np.array_equal(xs[0], data)
    dropped = DataLoader(few, batch_size=32, drop_last=True)
    assert len(dropped) == 0 and list(dropped) == []


def test_worker_id_takes_every_other_batch_of_the_rank(recs):
    whole = [y for _, y in DataLoader(recs[0], batch_size=10, shuffle=True, seed=4)]
    mine = [
        y
        for _, y in DataLoader(
            recs[0], batch_size=10, shuffle=True, seed=4, worker_id=1, num_workers_pytorch=2
        )
    ]
    assert [y.tolist() for y in mine] == [y.tolist() for y in whole[1::2]]
