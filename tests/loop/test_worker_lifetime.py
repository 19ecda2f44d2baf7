"""Worker processes live as long as the loader's process, leave nothing behind, and belong
to it alone (fastload.loop.worker_lifetime, fastload.loop.shared_memory).

The loader runs in a subprocess (tests/support/worker_scripts.py) that the test kills;
every process it started carries a token in its environment, so the test finds them all,
whoever their parent is by then."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

import fastload

ROOT = os.path.dirname(os.path.dirname(fastload.__file__))
GONE_WITHIN_S = 20.0  # a bound, not a measurement: workers go within about 0.3 s


def _with_token(token: str) -> list[int]:
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/environ", "rb") as f:
                if token.encode() in f.read():
                    with open(f"/proc/{p}/stat") as f:
                        if f.read().split(")")[-1].split()[0] != "Z":
                            found.append(int(p))
        except OSError:
            pass
    return found


def _segments_of(pids: set[int]) -> set[str]:
    return {
        n
        for n in os.listdir("/dev/shm")
        if n.startswith("fastload-") and n.split("-")[1].isdigit() and int(n.split("-")[1]) in pids
    }


def _script(token: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.worker_scripts", *args],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT, FASTLOAD_TEST_TOKEN=token),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_gone(token: str) -> list[int]:
    end = time.monotonic() + GONE_WITHIN_S
    left = _with_token(token)
    while left and time.monotonic() < end:
        time.sleep(0.05)
        left = _with_token(token)
    for p in left:  # never leave them behind, whatever the test says
        os.kill(p, signal.SIGKILL)
    return left


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
@pytest.mark.parametrize("context", ["fork", "spawn", "forkserver"])
def test_killing_the_loader_while_workers_start_leaves_nothing(tmp_path, context, how):
    # The kill lands at spread-out moments of the workers' start and first epochs: every
    # worker dies with the loader, and no shared-memory segment stays in /dev/shm.
    delays = [0.0, 0.05, 0.15, 0.3] if context == "fork" else [0.0, 0.2, 0.5, 0.9]
    for trial, delay in enumerate(delays):
        token = uuid.uuid4().hex
        proc = _script(token, "victim", str(tmp_path / f"d{trial}"), context)
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "start\n"
            time.sleep(delay)
            tree = {proc.pid, *_with_token(token)}
            proc.send_signal(getattr(signal, how))
            proc.wait(30)
        finally:
            proc.kill()
            proc.communicate()
        left = _wait_gone(token)
        assert not left, f"trial {trial} ({delay} s): workers {left} outlived the loader"
        assert not _segments_of(tree), f"trial {trial}: segments left in /dev/shm"


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_os_exit_of_the_loader_ends_its_workers(tmp_path, context):
    token = uuid.uuid4().hex
    proc = _script(token, "victim", str(tmp_path / "d"), context, "exit")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out.split() == ["start", "epoch"], err
    assert not _wait_gone(token)
    assert "Traceback" not in err  # the workers leave quietly when their loader is gone


@pytest.mark.parametrize("use", ["use", "keep"])
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_a_forked_child_never_touches_the_parents_workers(tmp_path, context, use):
    # The child leaves through sys.exit (atexit handlers, finalisers); with "use" it first runs
    # an epoch of its copy of the loader, on workers of its own.
    token = uuid.uuid4().hex
    proc = _script(token, "fork_child", str(tmp_path / "d"), context, use)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report == {
        "first": True,
        "child_exit": 0,
        "alive_after_child": [True, True],
        "next": [True, True],
        "same_workers": True,
        "starts": 1,
    }, err
    assert not _wait_gone(token)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_workers_started_from_a_thread_outlive_that_thread(recs, context):
    # PR_SET_PDEATHSIG fires when the *thread* that started a worker ends: it is asked for
    # only from the main thread, so a loader first iterated on another thread keeps its workers.
    import threading
    import warnings

    import numpy as np

    from fastload.loop.loader import DataLoader
    from fastload.plan.datasets import RecordDataset
    from tests.support import loader_helpers as H
    from tests.support.loader_data import SHAPE, N

    ds = RecordDataset(recs[0].uris, SHAPE, labels=np.arange(N), transform=H.invert)
    dl = DataLoader(
        ds,
        batch_size=10,
        num_workers=2,
        enable_transforms=True,
        persistent_workers=True,
        multiprocessing_context=context,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # forking beside the test's threads
        t = threading.Thread(target=lambda: list(dl))
        t.start()
        t.join()
    pids = dl.workers.pids
    assert sum(len(x) for x, _ in dl) == N and dl.workers.pids == pids
    dl.close()
