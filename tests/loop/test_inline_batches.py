"""Small fast batches are made on the consumer's thread (fastload.loop.inline_batches), and
every knob still acts on them: order, async_pool, resume, close(); timeout_seconds keeps
batches on the reader threads."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fastload.loop import inline_batches as IB
from fastload.loop.loader import DataLoader
from fastload.plan.datasets import RecordDataset
from fastload.plan.options import LoaderOptions
from fastload.storage.file_backend import FileBackend
from tests.support import loader_helpers as H

SHAPE = (4,)
N = 4000  # 500 batches of 8: plenty of fast batches in a row
BATCH = 8


@pytest.fixture
def small(tmp_path):
    data = H.write_records(str(tmp_path / "small"), N, SHAPE, 2)
    return RecordDataset(str(tmp_path / "small"), SHAPE, labels=np.arange(N)), data


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fastload-reader")]


def _record_threads(monkeypatch, slow_path: str | None = None, stall: bool = False):
    """Patch the file backend to note which thread reads which file; reads of
    ``slow_path`` take 3 ms more, or (``stall``) wait for the deadline the loader gave."""
    seen: list[tuple[str, str]] = []
    real = FileBackend.read_into

    def read_into(self, sources, table, out, *, settings, cancel=None, timeout=None):
        path = sources[0].path
        seen.append((threading.current_thread().name, path))
        if path == slow_path and stall:
            assert timeout is not None  # timeout_seconds reaches the read as its deadline
            threading.Event().wait(timeout)
            timeout = 1e-9  # the deadline has passed: the native reader must give up
        elif path == slow_path:
            time.sleep(0.003)
        return real(self, sources, table, out, settings=settings, cancel=cancel, timeout=timeout)

    monkeypatch.setattr(FileBackend, "read_into", read_into)
    return seen


@pytest.mark.parametrize("mode", ["sequential", "async_pool"])
def test_fast_small_batches_are_made_inline_and_come_out_right(small, mode, monkeypatch):
    ds, data = small
    seen = _record_threads(monkeypatch)
    dl = DataLoader(ds, batch_size=BATCH, loading_mode=mode)
    xs, ys = [], []
    for x, y in dl:
        xs.append(np.array(x))
        ys.append(np.array(y))
    order = np.concatenate(ys)
    if mode == "sequential":
        assert np.array_equal(order, np.arange(N))
    assert sorted(order.tolist()) == list(range(N))  # each sample once
    assert np.array_equal(np.concatenate(xs), data[order])
    inline = dl.report()["inline_batches"]
    assert 0 < inline <= len(dl)
    assert sum(name == threading.current_thread().name for name, _ in seen) == inline
    # the observer saw every batch, made inline or not
    assert dl.stats()["epochs"][-1]["batches"] == len(dl)
    dl.close()
    assert not _readers()


def test_batches_that_turn_slow_go_back_to_the_readers(small, monkeypatch):
    ds, _ = small
    slow = ds.sources[1].path  # the second half of the epoch, in order
    seen = _record_threads(monkeypatch, slow_path=slow)
    dl = DataLoader(ds, batch_size=BATCH)
    assert sum(len(y) for _, y in dl) == N
    me = threading.current_thread().name
    fast_inline = sum(name == me for name, path in seen if path != slow)
    slow_inline = sum(name == me for name, path in seen if path == slow)
    slow_readers = sum(name.startswith("fastload-reader") for name, path in seen if path == slow)
    assert fast_inline > 0
    assert slow_inline <= IB.SLOW_IN_ROW  # the first slow ones hand the epoch back
    assert slow_readers >= N // 2 // BATCH - IB.SLOW_IN_ROW
    dl.close()


def test_loaders_that_run_user_code_never_make_batches_inline(small):
    ds, _ = small
    transformed = RecordDataset(ds.uris, SHAPE, labels=np.arange(N), transform=np.negative)
    cases = [
        DataLoader(transformed, batch_size=BATCH, enable_transforms=True),  # a transform
        DataLoader(ds, batch_size=BATCH, output=lambda x, y, pool: (x, y)),  # an output stage
        DataLoader(ds, batch_size=BATCH, engine=H.slow_engine(set(), 0.0)),  # an engine subclass
    ]
    for dl in cases:
        assert sum(1 for _ in dl) == len(dl)
        assert dl.report()["inline_batches"] == 0
        dl.close()


@pytest.mark.parametrize("mode", ["sequential", "async_pool"])
def test_resume_from_a_state_taken_while_inline(small, mode):
    ds, _ = small
    opts = LoaderOptions(batch_size=BATCH, shuffle=True, seed=5, loading_mode=mode)
    dl = DataLoader(ds, opts)
    seen = []
    for i, (_, y) in enumerate(dl):
        seen.append(y.copy())
        if i == 99:
            state = dl.state_dict()
            break
    assert dl.report()["inline_batches"] > 0
    assert state["samples_done"] == 100 * BATCH
    dl.close()
    fresh = DataLoader(ds, opts)
    fresh.load_state_dict(state)
    rest = [y for _, y in fresh]
    assert len(rest) == len(fresh) - 100
    assert sorted(np.concatenate(seen + rest).tolist()) == list(range(N))
    fresh.close()


def test_timeout_seconds_keeps_batches_on_the_reader_threads(small, monkeypatch):
    """With timeout_seconds set no batch is made inside next(): only the reader threads let
    next() raise TimeoutError while a read is stuck (a batch made inline could be bounded
    only between the parts of its read)."""
    ds, _ = small
    seen = _record_threads(monkeypatch, slow_path=ds.sources[1].path, stall=True)
    dl = DataLoader(ds, batch_size=BATCH, timeout_seconds=0.5)
    it = iter(dl)
    for _ in range(N // 2 // BATCH):  # shard 0: fast (inline without the knob)
        next(it)
    assert dl.report()["inline_batches"] == 0
    assert all(name.startswith("fastload-reader") for name, _ in seen)
    t = time.monotonic()
    with pytest.raises(TimeoutError, match="timeout_seconds"):
        next(it)  # shard 1 stalls
    assert time.monotonic() - t < 20
    it.close()
    dl.close()
    assert not _readers()


def test_close_while_inline_ends_the_iterator(small):
    ds, _ = small
    dl = DataLoader(ds, batch_size=BATCH)
    it = iter(dl)
    for _ in range(50):
        next(it)
    assert dl.report()["inline_batches"] > 0
    dl.close()
    with pytest.raises(RuntimeError, match="ended by closing the loader"):
        next(it)
    assert not _readers()


def test_the_policy_tries_inline_after_fast_batches_and_backs_off():
    p = IB.InlinePolicy(allowed=True)
    for _ in range(IB.TRY_AFTER - 1):
        p.reader_made(1e-5)
    assert not p.active
    p.reader_made(1e-5)
    assert p.active
    assert not p.inline_made(1e-5)
    assert p.inline_made(IB.SLOW_S * 2)  # one very slow batch: back to the readers
    assert not p.active and p.try_after == 2 * IB.TRY_AFTER
    for _ in range(2 * IB.TRY_AFTER - 1):
        p.reader_made(1e-5)
    p.reader_made(IB.READER_FAST_S * 2)  # a slow one resets the run
    assert not p.active
    for _ in range(2 * IB.TRY_AFTER):
        p.reader_made(1e-5)
    assert p.active
    results = [p.inline_made(IB.INLINE_BELOW_S * 2) for _ in range(IB.SLOW_IN_ROW)]
    assert results == [False] * (IB.SLOW_IN_ROW - 1) + [True]  # slow in a row
    for _ in range(10):  # tries keep coming, however often they failed
        for _ in range(IB.MAX_TRY_AFTER):
            p.reader_made(1e-5)
        assert p.active
        assert p.inline_made(IB.SLOW_S * 2)
    assert p.try_after == IB.MAX_TRY_AFTER
    off = IB.InlinePolicy(allowed=False)
    for _ in range(10 * IB.TRY_AFTER):
        off.reader_made(1e-6)
    assert not off.active


def test_inline_batches_leave_no_status_behind(small):
    """Each batch's status line lives while the batch is being made, inline or not (an
    epoch of millions of tiny batches must not keep one string per batch)."""
    ds, _ = small
    dl = DataLoader(ds, batch_size=BATCH)
    it = iter(dl)
    for _ in range(N // BATCH - 1):
        next(it)
    assert dl.report()["inline_batches"] > 0
    assert len(it._epoch.status) <= dl.config.prefetch
    it.close()
    dl.close()


def _next_until_interrupted(it, got: list) -> None:
    """next() until a KeyboardInterrupt comes out of it (batches into ``got``)."""
    while True:
        try:
            got.append(next(it))
        except KeyboardInterrupt:
            return
        except StopIteration:
            pytest.skip("load kept every batch on the reader threads")


def test_ctrl_c_while_next_makes_a_batch_leaves_the_epoch_usable(small, monkeypatch):
    ds, data = small
    dl = DataLoader(ds, batch_size=BATCH)
    it = iter(dl)
    got = [next(it) for _ in range(10)]
    real = DataLoader.produce
    calls = []
    me = threading.current_thread()

    def interrupted_once(self, k, job, ep, asked=-1.0):
        if threading.current_thread() is me:  # made inside next()
            calls.append(k)
            if len(calls) == 1:
                raise KeyboardInterrupt
        return real(self, k, job, ep, asked)

    monkeypatch.setattr(DataLoader, "produce", interrupted_once)
    _next_until_interrupted(it, got)
    got += list(it)  # the epoch goes on from the interrupted batch
    assert calls[0] == calls[1]  # the same batch, made again
    ys = np.concatenate([y for _, y in got])
    assert sorted(ys.tolist()) == list(range(N))
    dl.close()


def test_an_inline_batch_waits_exactly_as_long_as_its_stages_took(small, monkeypatch):
    """Made inside next(): its clock starts at the call and its record ends it, so the
    consumer's wait is the sum of the batch's stages (one time line, no gap, no overlap)."""
    import fastload.loop.epoch as epoch_module

    class InlineFromTheStart(IB.InlinePolicy):
        def __init__(self, allowed: bool) -> None:
            super().__init__(allowed)
            self.active = allowed

    monkeypatch.setattr(epoch_module, "InlinePolicy", InlineFromTheStart)
    monkeypatch.setattr(IB, "SLOW_S", 1e9)  # a preempted batch must not hand over (load)
    monkeypatch.setattr(IB, "SLOW_IN_ROW", 10**9)
    ds, _ = small
    dl = DataLoader(ds, batch_size=BATCH)
    for _ in dl:
        pass
    epoch = dl.stats()["epochs"][-1]
    assert dl.report()["inline_batches"] == epoch["batches"] == len(dl)
    stages = epoch["stages"]
    made = sum(stages[s]["total_s"] for s in ("plan", "read", "collate", "output"))
    assert stages["wait"]["total_s"] == pytest.approx(made, rel=1e-6)
    assert stages["read"]["total_s"] > 0 and stages["plan"]["total_s"] > 0


def test_ctrl_c_after_next_made_its_batch_gives_the_batch_back(small, monkeypatch):
    """Ctrl-C between the batch being made and it being handed out (here: inside the
    policy's bookkeeping): the batch is given back, so the next next() makes it again
    instead of waiting for ever on a batch no one will make."""
    ds, _ = small
    dl = DataLoader(ds, batch_size=BATCH)
    it = iter(dl)
    got = [next(it) for _ in range(10)]
    real = IB.InlinePolicy.inline_made
    calls = []

    def interrupted_once(self, seconds):
        calls.append(seconds)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(self, seconds)

    monkeypatch.setattr(IB.InlinePolicy, "inline_made", interrupted_once)
    _next_until_interrupted(it, got)
    rest: list = []
    t = threading.Thread(target=lambda: rest.extend(it), daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "next() waited for ever on the interrupted batch"
    ys = np.concatenate([y for _, y in got + rest])
    assert sorted(ys.tolist()) == list(range(N))  # each sample once: none lost, none twice
    dl.close()
