"""Scripts the worker-lifetime tests run in a subprocess: ``python -m tests.support.worker_scripts
WHAT FOLDER CONTEXT``. Each prints progress lines on stdout for the test to act on.

- ``victim``: a loader with persistent workers running epochs until it is killed; prints
  ``start`` before the first ``iter()`` and ``epoch`` after each epoch. With ``exit`` as the
  4th argument it leaves through ``os._exit`` after its first epoch.
- ``fork_child``: after one epoch, ``os.fork()``; the child runs an epoch of the inherited
  loader (``use`` as the 4th argument) or not, then leaves through ``sys.exit``; the parent
  waits for it, then runs two more epochs. Prints one JSON line of what it saw.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from fastload.loop.loader import DataLoader
from fastload.plan.datasets import RecordDataset
from tests.support import loader_helpers as H
from tests.support.processes import alive

SHAPE = (8, 6, 3)
N = 60


def _loader(folder: str, context: str) -> tuple[DataLoader, np.ndarray]:
    data = H.write_records(folder, N, SHAPE, 3)
    ds = RecordDataset(folder, SHAPE, labels=np.arange(N), transform=H.invert)
    dl = DataLoader(
        ds,
        batch_size=10,
        num_workers=2,
        enable_transforms=True,
        multiprocessing_context=context,
        persistent_workers=True,
        shuffle=True,
        timeout_seconds=60,
    )
    return dl, data


def _epoch_ok(dl: DataLoader, data: np.ndarray) -> bool:
    seen = 0
    for x, y in dl:
        if not np.array_equal(x, 255 - data[y]):
            return False
        seen += len(y)
    return seen == N


def victim(folder: str, context: str, how: str) -> None:
    dl, data = _loader(folder, context)
    print("start", flush=True)
    while True:
        _epoch_ok(dl, data)
        print("epoch", flush=True)
        if how == "exit":
            os._exit(0)


def fork_child(folder: str, context: str, how: str) -> None:
    dl, data = _loader(folder, context)
    report: dict[str, object] = {"first": _epoch_ok(dl, data)}
    assert dl.workers is not None
    pids = dl.workers.pids
    pid = os.fork()
    if pid == 0:  # the child: a copy of the loader, never the parent's workers
        ok = True
        if how == "use":
            ok = (
                _epoch_ok(dl, data)
                and dl.workers is not None
                and not set(dl.workers.pids) & set(pids)
            )
        sys.exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    report["child_exit"] = os.waitstatus_to_exitcode(status)
    report["alive_after_child"] = [alive(p) for p in pids]
    report["next"] = [_epoch_ok(dl, data), _epoch_ok(dl, data)]
    report["same_workers"] = dl.workers is not None and dl.workers.pids == pids
    report["starts"] = dl.report()["worker_starts"]
    dl.close()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    what, folder, context = sys.argv[1:4]
    how = sys.argv[4] if len(sys.argv) > 4 else ""
    {"victim": victim, "fork_child": fork_child}[what](folder, context, how)
