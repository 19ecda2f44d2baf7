"""Soak: shuffled multi-worker epochs over S3 (rclone) through the fault proxy at a high
fault rate. Every batch is byte-exact or the epoch ends with a named error; nothing hangs;
afterwards no process, thread, descriptor or shared-memory segment is left."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from multiprocessing import resource_tracker

import numpy as np
import pytest

from fastload.errors import FastloadError
from fastload.loop.loader import DataLoader
from fastload.plan.datasets import RecordDataset
from fastload.storage.engine import RangeEngine
from tests.support import loader_helpers as H
from tests.support.network import FAST_RETRY
from tests.support.processes import children
from tests.support.servers import proxy_to, random_faults, start_rclone, stop

pytestmark = [pytest.mark.slow, pytest.mark.s3, pytest.mark.usefixtures("clean_aws_env")]

SHAPE = (8, 8, 3)
N = 480
EPOCHS = 4
FAULT_RATE = 0.3
SETTLE_S = 20.0  # a bound for sockets and processes to go, not a measurement


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("fastload")}


def _fds() -> dict[str, str]:
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return out


def _settle(check, what) -> None:
    end = time.monotonic() + SETTLE_S
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"{what() if callable(what) else what} after {SETTLE_S} s")
        time.sleep(0.1)


@pytest.mark.filterwarnings("ignore:fastload. forking workers:RuntimeWarning")  # the proxy's
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_soak_shuffled_worker_epochs_through_faults(tmp_path, context):
    root = tmp_path / "s3"
    data = H.write_records(str(root / "soak"), N, SHAPE, 4)
    server = start_rclone(str(root))
    try:
        creds = {k: v for k, v in server.options.items() if k != "endpoint_url"}
        with RangeEngine(**server.options) as direct, proxy_to(server.port) as proxy:
            ds = RecordDataset(
                "s3://soak/", SHAPE, labels=np.arange(N), transform=H.invert, engine=direct
            )
            # multiprocessing's resource tracker (a process and a pipe for the whole session)
            # starts with the first spawned process: before the count, not among the leaks
            resource_tracker.ensure_running()
            before = (children(), _fds())
            threads_before = _threads()
            eng = RangeEngine(endpoint_url=proxy.endpoint, **creds, **FAST_RETRY)
            faults = random_faults(proxy, FAULT_RATE, seed=7)
            dl = DataLoader(
                ds,
                batch_size=16,
                shuffle=True,
                seed=3,
                num_workers=2,
                enable_transforms=True,
                multiprocessing_context=context,
                persistent_workers=True,
                prefetch=3,
                timeout_seconds=30,  # a hang is a failure: retries end far sooner
                engine=eng,
            )
            good, errors = 0, []
            for epoch in range(EPOCHS):
                dl.set_epoch(epoch)
                seen = []
                try:
                    for x, y in dl:
                        assert np.array_equal(x, 255 - data[y]), f"epoch {epoch}: wrong bytes"
                        seen.append(y)
                        good += 1
                except FastloadError as exc:  # named: the URI, the range, the attempts
                    assert "s3://soak/shard-" in str(exc) and exc.uri, exc
                    errors.append(exc)
                    continue
                order = np.concatenate(seen)
                assert sorted(order.tolist()) == list(range(N))  # a full epoch: each once
            dl.close()
            eng.close()
            drawn = dict(faults.drawn)
            _settle(lambda: not multiprocessing.active_children(), "worker processes left")
            _settle(lambda: children() <= before[0], "child processes left")
            _settle(
                lambda: len(_fds()) <= len(before[1]),
                lambda: f"descriptors left: {sorted(set(_fds().items()) - set(before[1].items()))}",
            )
        assert _threads() <= threads_before  # process-wide pools may predate the soak
        mine = {os.getpid(), *before[0]}
        assert not [
            n
            for n in os.listdir("/dev/shm")
            if n.startswith("fastload-")
            and n.split("-")[1].isdigit()
            and int(n.split("-")[1]) in mine
        ]
    finally:
        stop(server)
    faulted = sum(v for k, v in drawn.items() if k != "pass")
    assert faulted > 0.2 * sum(drawn.values()), drawn  # the faults really were injected
    assert good >= EPOCHS * (N // 16) // 2, f"{good} good batches, errors: {errors}"
    print(f"soak ({context}): {good} good batches, {len(errors)} named errors, faults {drawn}")
