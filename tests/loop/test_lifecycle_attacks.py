"""A DataLoader's processes, threads and resources over its whole life, attacked: loaders made
and dropped by the hundred, workers killed, the loader's process killed, Ctrl-C, exceptions in
the consumer's loop, interpreter exit with live iterators, two threads on one loader, a
transform that never returns, spawned workers that cannot get the transform, os.fork() with a
live engine. Nothing may hang (every wait has a bound), leak or end without a named error."""

from __future__ import annotations

import faulthandler
import gc
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
import warnings

import numpy as np
import pytest

import fastload
from fastload.errors import WorkerError
from fastload.loop import epoch as epoch_module
from fastload.loop.loader import DataLoader
from fastload.plan.datasets import RecordDataset
from fastload.storage.engine import RangeEngine
from tests.support import loader_helpers as H
from tests.support.loader_data import SHAPE, N
from tests.support.processes import alive, children

ROOT = os.path.dirname(os.path.dirname(fastload.__file__))
BOUND_S = 60.0  # a hang guard, never a measurement
GONE_WITHIN_S = 20.0

_release = threading.Event()  # lets the blocking transforms of this process end


def slowly(sample: np.ndarray) -> np.ndarray:
    time.sleep(0.01)
    return 255 - sample


def never_returns_on_7(sample: np.ndarray) -> np.ndarray:
    if int(sample.reshape(-1)[0]) == 7:
        while not _release.wait(0.05):  # in a fork worker: never set, it blocks for good
            pass
    return sample


def ignores_sigterm_and_blocks_on_7(sample: np.ndarray) -> np.ndarray:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return never_returns_on_7(sample)


# -- measuring -----------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _snapshot() -> dict:
    return {
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": threading.active_count(),
        "tasks": len(os.listdir("/proc/self/task")),
        "children": children(),
        "shm": {n for n in os.listdir("/dev/shm") if n.startswith(f"fastload-{os.getpid()}-")},
        "temp": set(os.listdir(tempfile.gettempdir())),
    }


def _settled(before: dict) -> dict:
    """What grew since ``before`` (waiting a bound for processes and threads to go)."""
    end = time.monotonic() + GONE_WITHIN_S
    while True:
        gc.collect()
        now = _snapshot()
        grown = {
            "fds": now["fds"] - before["fds"],
            "threads": now["threads"] - before["threads"],
            "tasks": now["tasks"] - before["tasks"],
            "children": now["children"] - before["children"],
            "shm": now["shm"] - before["shm"],
            "temp": now["temp"] - before["temp"],
        }
        if not any(v for v in grown.values() if not isinstance(v, int) or v > 0):
            return {}
        if time.monotonic() > end:
            return grown
        time.sleep(0.05)


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Temporary files of this test (fastload's, multiprocessing's) in a folder of its own."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture(scope="module")
def s3_records(tmp_path_factory):
    from tests.support.servers import start_rclone, stop

    root = tmp_path_factory.mktemp("s3life")
    data = H.write_records(str(root / "bucket" / "recs"), N, SHAPE, 4)
    server = start_rclone(str(root))
    yield server, data
    stop(server)


def _cycle(uri: str, workers: int, close: bool, options: dict | None) -> None:
    engine = RangeEngine(**options) if options else None
    ds = RecordDataset(
        uri,
        SHAPE,
        labels=np.arange(N),
        transform=H.invert if workers else None,
        engine=engine,
    )
    dl = DataLoader(
        ds,
        batch_size=10,
        num_workers=workers,
        enable_transforms=bool(workers),
        multiprocessing_context="fork",
        engine=engine,
        timeout_seconds=30,
    )
    it = iter(dl)
    for _ in range(3):
        x, y = next(it)
        assert x.shape == (10, *SHAPE)
    if close:  # else: the references are dropped (break out of the loop, forget the loader)
        dl.close()
        if engine is not None:
            engine.close()


@pytest.mark.filterwarnings("ignore:fastload. forking workers:RuntimeWarning")
@pytest.mark.parametrize("close", [True, False], ids=["close", "drop"])
@pytest.mark.parametrize(
    "where, workers, cycles", [("local", 0, 200), ("local", 2, 40), ("s3", 0, 50)]
)
def test_loaders_made_and_dropped_by_the_hundred_leak_nothing(
    recs, request, private_tmp, where, workers, cycles, close
):
    options = None
    uri = recs[0].uris
    if where == "s3":
        server, _ = request.getfixturevalue("s3_records")
        options, uri = server.options, "s3://bucket/recs/"
    for _ in range(3):  # first uses: imports, the resource tracker, lazy pools
        _cycle(uri, workers, close, options)
    gc.collect()
    before, rss = _snapshot(), _rss()
    for _ in range(cycles):
        _cycle(uri, workers, close, options)
    assert _settled(before) == {}
    assert _rss() - rss < 64 << 20


# -- workers killed, the loader's process killed ---------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV])
def test_a_worker_killed_mid_epoch_is_named_with_its_signal(recs, sig):
    ds = RecordDataset(recs[0].uris, SHAPE, labels=np.arange(N), transform=slowly)
    dl = DataLoader(
        ds,
        batch_size=5,
        num_workers=2,
        enable_transforms=True,
        multiprocessing_context="fork",
        timeout_seconds=BOUND_S,
    )
    was_on = faulthandler.is_enabled()
    faulthandler.disable()  # the workers inherit it: no "Fatal Python error" from the one killed
    try:
        it = iter(dl)
    finally:
        if was_on:
            faulthandler.enable()
    next(it)
    pid = dl.workers.pids[1]
    os.kill(pid, sig)
    name = signal.Signals(sig).name
    with pytest.raises(
        WorkerError,
        match=rf"fastload worker 1 \(pid {pid}\) was killed by signal {int(sig)} \({name}\) while",
    ):
        for _ in it:
            pass
    assert dl.workers is None and not multiprocessing.active_children()  # the other reaped
    assert sum(len(y) for _, y in dl) == N  # the next epoch, on fresh workers
    dl.close()


_STUCK_SCRIPT = """
import os, sys, threading, time
import numpy as np
from fastload.loop.loader import DataLoader
from fastload.plan.datasets import RecordDataset
from tests.support import loader_helpers as H

def stuck_on_7(sample):
    if int(sample.reshape(-1)[0]) == 7:
        open(sys.argv[2], "w").close()
        while True:
            time.sleep(1)
    return sample

if __name__ == "__main__":
    H.write_records(sys.argv[1], 60, (8, 6, 3), 3)
    ds = RecordDataset(sys.argv[1], (8, 6, 3), transform=stuck_on_7)
    dl = DataLoader(ds, batch_size=5, num_workers=2, enable_transforms=True,
                    multiprocessing_context=sys.argv[3], persistent_workers=True)
    threading.Thread(target=lambda: list(dl), daemon=True).start()  # not the main thread
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.01)
    print(*dl.workers.pids, flush=True)
    time.sleep(600)
"""


def _run_script(tmp_path, text: str, *args: str, token: str = "") -> subprocess.Popen:
    script = tmp_path / f"script_{uuid.uuid4().hex[:8]}.py"
    script.write_text(textwrap.dedent(text))
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT, FASTLOAD_TEST_TOKEN=token),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _communicate(proc: subprocess.Popen) -> tuple[str, str]:
    """The script's output; killed past the bound (a hang fails the test, never hangs it)."""
    try:
        return proc.communicate(timeout=BOUND_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            out, err = proc.communicate(timeout=BOUND_S)
        except subprocess.TimeoutExpired:  # its orphans hold the pipes open
            out = err = ""
            proc.wait(BOUND_S)
        raise AssertionError(f"the script hung: {out}\n{err}") from None


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_a_worker_stuck_in_its_transform_dies_with_a_killed_loader(tmp_path, context):
    # Workers started from a thread other than the main one get no PR_SET_PDEATHSIG (it would
    # fire when that thread ends): a worker busy in a transform must still see its loader go.
    proc = _run_script(
        tmp_path, _STUCK_SCRIPT, str(tmp_path / "d"), str(tmp_path / "stuck"), context
    )
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2, _communicate(proc)
        proc.kill()
        proc.wait(BOUND_S)
    finally:
        proc.kill()
        proc.wait(BOUND_S)
        for pipe in (proc.stdout, proc.stderr):  # an orphaned worker holds them open
            if pipe is not None:
                pipe.close()
    end = time.monotonic() + GONE_WITHIN_S
    while any(map(alive, pids)) and time.monotonic() < end:
        time.sleep(0.05)
    left = [p for p in pids if alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"workers {left} outlived their loader"


def test_a_worker_that_ignores_sigterm_is_still_ended(recs):
    ds = RecordDataset(recs[0].uris, SHAPE, transform=ignores_sigterm_and_blocks_on_7)
    dl = DataLoader(
        ds,
        batch_size=5,
        num_workers=1,
        enable_transforms=True,
        multiprocessing_context="fork",
        timeout_seconds=1.0,
        prefetch=1,
    )
    try:
        with pytest.raises(TimeoutError, match=r"waiting for worker 0 \(pid \d+\) to run the"):
            list(dl)  # not "ValueError: Cannot close a process while it is still running"
        assert dl.workers is None and not multiprocessing.active_children()
    finally:
        for p in multiprocessing.active_children():  # never left to the next test
            p.kill()
    dl.close()


# -- Ctrl-C, exceptions, interpreter exit ---------------------------------------------------

_CTRL_C_SCRIPT = """
import json, os, signal, sys, threading, time, multiprocessing
import numpy as np
from fastload.loop.loader import DataLoader
from fastload.plan.datasets import RecordDataset
from tests.support import loader_helpers as H

def slow(sample):
    time.sleep(0.02)
    return 255 - sample

if __name__ == "__main__":
    H.write_records(sys.argv[1], 60, (8, 6, 3), 3)
    ds = RecordDataset(sys.argv[1], (8, 6, 3), labels=np.arange(60), transform=slow)
    workers = int(sys.argv[2])
    dl = DataLoader(ds, batch_size=5, num_workers=workers, enable_transforms=True,
                    multiprocessing_context="fork", timeout_seconds=60)
    got = 0
    try:
        for x, y in dl:
            got += 1
            if got == 2:  # lands while next() waits for the next batch
                threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGINT)).start()
            if got > 10:
                break
    except KeyboardInterrupt:
        interrupted = True
    else:
        interrupted = False
    again = sorted(int(v) for _, y in dl for v in y)
    dl.close()
    left = [t.name for t in threading.enumerate() if t.name.startswith("fastload")]
    print(json.dumps({"interrupted": interrupted, "again": again == list(range(60)),
                      "threads": left, "children": len(multiprocessing.active_children())}))
"""


@pytest.mark.parametrize("workers", [0, 2])
def test_ctrl_c_during_iteration_stops_it_and_the_next_epoch_runs(tmp_path, workers):
    proc = _run_script(tmp_path, _CTRL_C_SCRIPT, str(tmp_path / "d"), str(workers))
    out, err = _communicate(proc)
    assert proc.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report == {"interrupted": True, "again": True, "threads": [], "children": 0}, err


def test_an_exception_in_the_consumer_loop_ends_the_epoch(recs):
    ds = RecordDataset(recs[0].uris, SHAPE, labels=np.arange(N), transform=H.invert)
    dl = DataLoader(
        ds,
        batch_size=10,
        num_workers=2,
        enable_transforms=True,
        multiprocessing_context="fork",
        timeout_seconds=BOUND_S,
    )
    for _ in range(3):
        with pytest.raises(ZeroDivisionError):
            for i, _ in enumerate(dl):
                if i == 2:
                    _ = 1 / 0
        gc.collect()
        assert not [t for t in threading.enumerate() if t.name.startswith("fastload-reader")]
        assert dl.workers is None and not multiprocessing.active_children()
    xs, ys = zip(*dl, strict=True)
    assert np.array_equal(np.concatenate(xs), 255 - recs[1][np.concatenate(ys)])
    dl.close()


_EXIT_SCRIPT = """
import os, sys, threading
import numpy as np
import fastload.loop.epoch
from fastload.loop.loader import DataLoader
from fastload.plan.datasets import RecordDataset
from tests.support import loader_helpers as H

fastload.loop.epoch.JOIN_S = 3600.0  # waiting for a stuck reader would be a hang

def never_on_7(sample):
    if int(sample.reshape(-1)[0]) == 7:
        threading.Event().wait()
    return 255 - sample

if __name__ == "__main__":
    H.write_records(sys.argv[1], 60, (8, 6, 3), 3)
    live = []
    for context in ("fork", "spawn"):
        ds = RecordDataset(sys.argv[1], (8, 6, 3), transform=H.invert)
        dl = DataLoader(ds, batch_size=5, num_workers=2, enable_transforms=True,
                        multiprocessing_context=context, prefetch=4)
        it = iter(dl)
        next(it)
        live.append((dl, it))  # workers and readers busy as the interpreter exits
    stuck = DataLoader(RecordDataset(sys.argv[1], (8, 6, 3), transform=never_on_7),
                       batch_size=5, enable_transforms=True, timeout_seconds=0.5)
    try:
        list(stuck)
    except TimeoutError as exc:
        print("timeout:", exc, flush=True)
    print("pids", *[p for dl, _ in live for p in dl.workers.pids], flush=True)
"""


def test_interpreter_exit_with_live_iterators_workers_and_a_stuck_reader(tmp_path):
    token = uuid.uuid4().hex
    proc = _run_script(tmp_path, _EXIT_SCRIPT, str(tmp_path / "d"), token=token)
    out, err = _communicate(proc)
    assert proc.returncode == 0 and err == "", err
    lines = out.splitlines()
    assert "on sample 7 (" in lines[0] and "position 2" in lines[0], out  # the one it is on
    pids = [int(p) for p in lines[-1].split()[1:]]
    assert len(pids) == 4
    end = time.monotonic() + GONE_WITHIN_S
    while any(map(alive, pids)) and time.monotonic() < end:
        time.sleep(0.05)
    assert not [p for p in pids if alive(p)]


# -- threads ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:fastload. forking workers:RuntimeWarning")
def test_two_threads_iterating_one_loader_at_once(recs):
    # Each iter() ends the epoch before it (its iterator says so); never two epochs on one
    # loader's workers at once (they waited for each other's turns for good).
    ds = RecordDataset(recs[0].uris, SHAPE, labels=np.arange(N), transform=H.invert)
    for _ in range(4):
        dl = DataLoader(
            ds,
            batch_size=5,
            num_workers=2,
            enable_transforms=True,
            multiprocessing_context="fork",
            timeout_seconds=10,  # a deadlock would end in TimeoutError
        )
        start = threading.Barrier(2)
        outcomes: list[str] = []

        def run(dl=dl, start=start, outcomes=outcomes) -> None:
            start.wait()
            try:
                outcomes.append(f"ok {sum(len(y) for _, y in dl)}")
            except Exception as exc:  # noqa: BLE001 -- what the test checks
                outcomes.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(BOUND_S)
        assert len(outcomes) == 2 and f"ok {N}" in outcomes, outcomes
        for o in outcomes:
            assert o == f"ok {N}" or (o.startswith("RuntimeError") and "newer iter(loader)" in o)
        dl.close()
        assert not multiprocessing.active_children()


def test_one_iterator_shared_by_two_threads_hands_out_each_batch_once(recs):
    ds, data = recs
    dl = DataLoader(ds, batch_size=5, prefetch=3, timeout_seconds=BOUND_S)
    it = iter(dl)
    seen: list[int] = []

    def pull() -> None:
        for x, y in it:
            assert np.array_equal(x, data[y])
            seen.extend(y.tolist())

    threads = [threading.Thread(target=pull) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND_S)
    assert sorted(seen) == list(range(N))
    dl.close()


@pytest.mark.filterwarnings("ignore:fastload. forking workers:RuntimeWarning")
@pytest.mark.parametrize("workers", [0, 1])
def test_a_transform_that_never_returns_times_out_by_name(recs, monkeypatch, workers):
    # Waiting for the stuck reader would never end: the TimeoutError is due at the timeout.
    monkeypatch.setattr(epoch_module, "JOIN_S", 3600.0)
    _release.clear()
    ds = RecordDataset(recs[0].uris, SHAPE, transform=never_returns_on_7)
    dl = DataLoader(
        ds,
        batch_size=5,
        prefetch=2,
        num_workers=workers,
        enable_transforms=True,
        multiprocessing_context="fork",
        timeout_seconds=0.5,
    )
    got: list[BaseException] = []

    def consume() -> None:
        try:
            list(dl)
        except BaseException as exc:  # noqa: BLE001 -- what the test checks
            got.append(exc)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    t.join(BOUND_S)
    try:
        assert not t.is_alive(), "next() waited for a reader that never returns"
        assert len(got) == 1 and isinstance(got[0], TimeoutError), got
        if workers:
            assert re.search(r"waiting for worker 0 \(pid \d+\) to run the transform", str(got[0]))
            assert not multiprocessing.active_children()
        else:
            assert "on sample 7 (" in str(got[0]) and "position 2" in str(got[0])
    finally:
        _release.set()  # the reader in this process may end now
        dl.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("fastload-reader")]


# -- spawned workers and the main script; os.fork() ---------------------------------------

_GUARDED_SCRIPT = """
import sys
import numpy as np
from fastload.errors import WorkerError
from fastload.loop.loader import DataLoader
from fastload.plan.datasets import RecordDataset
from tests.support import loader_helpers as H

class TopLevel:
    def __call__(self, sample):
        return 255 - sample

if __name__ == "__main__":
    class Guarded:
        def __call__(self, sample):
            return sample

    H.write_records(sys.argv[1], 20, (8, 6, 3), 2)
    for transform in (TopLevel(), Guarded()):
        ds = RecordDataset(sys.argv[1], (8, 6, 3), transform=transform)
        dl = DataLoader(ds, batch_size=5, num_workers=1, enable_transforms=True,
                        multiprocessing_context=sys.argv[2], timeout_seconds=60)
        try:
            print("ok", sum(len(x) for x in dl), flush=True)
        except WorkerError as exc:
            print("refused", exc, flush=True)
"""


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_spawned_workers_and_a_transform_of_the_main_script(tmp_path, context):
    proc = _run_script(tmp_path, _GUARDED_SCRIPT, str(tmp_path / "d"), context)
    out, err = _communicate(proc)
    assert proc.returncode == 0, err
    ok, refused = out.splitlines()
    assert ok == "ok 20"  # one defined at the top level of the script reaches the workers
    assert refused.startswith("refused fastload: the dataset's transform 'Guarded'"), out
    assert 'only under `if __name__ == "__main__":`' in refused and context in refused
    assert "Traceback" not in err  # refused before any worker started


@pytest.mark.s3
def test_os_fork_with_a_live_engine_then_fastload_in_the_child(s3_records):
    # The parent keeps reading on other threads (native threads, connections in use) as it
    # forks; the child reads with the same engine and a loader of its own.
    server, data = s3_records
    engine = RangeEngine(**server.options)
    ds = RecordDataset("s3://bucket/recs/", SHAPE, labels=np.arange(N), engine=engine)
    dl = DataLoader(ds, batch_size=5, engine=engine, prefetch=4, timeout_seconds=BOUND_S)
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            for _ in dl:
                if stop.is_set():
                    break

    t = threading.Thread(target=hammer)
    t.start()
    try:
        for _ in range(3):
            time.sleep(0.05)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
                pid = os.fork()
            if pid == 0:  # pragma: no cover -- the child
                signal.alarm(int(BOUND_S))  # a hang fails the test instead of hanging it
                code = 3
                try:
                    mine = DataLoader(ds, batch_size=10, engine=engine, timeout_seconds=30)
                    seen = [y for x, y in mine if np.array_equal(x, data[y])]
                    code = 0 if sum(len(y) for y in seen) == N else 4
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
    finally:
        stop.set()
        t.join(BOUND_S)
    assert sum(len(y) for _, y in dl) == N  # the parent's engine is untouched
    dl.close()
    engine.close()
