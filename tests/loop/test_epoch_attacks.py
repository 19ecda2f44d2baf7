"""An epoch's iterator used where its threads are not: in a process made by os.fork()
while the epoch ran. It must refuse at once, by name, never wait forever."""

from __future__ import annotations

import json
import os
import signal

import pytest

from fastload.loop.loader import DataLoader
from tests.support import loader_helpers as H

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _in_fork(child) -> dict:
    """``child()``'s dict, run in a process forked off this one (killed after 60 s: a hang
    fails the test instead of hanging it)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover -- the child
        os.close(r)
        signal.alarm(60)
        try:
            out = child()
        except BaseException as exc:  # noqa: BLE001 -- reported to the parent
            out = {"unexpected": f"{type(exc).__name__}: {exc}"}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0, f"the child ended with status {status} (SIGALRM: it hung)"
    return json.loads(text)


def _next_error(it) -> str:
    try:
        next(it)
    except RuntimeError as exc:
        return str(exc)
    return "a batch"


@pytest.mark.parametrize("workers", [0, 2])
def test_a_forked_child_is_refused_the_parents_iterator_and_runs_its_own_epoch(recs, workers):
    ds, _ = recs
    if workers:
        ds.transform = H.invert
    dl = DataLoader(
        ds,
        batch_size=10,
        prefetch=4,
        num_workers=workers,
        enable_transforms=bool(workers),
        multiprocessing_context="fork",
    )
    it = iter(dl)
    next(it)
    next(it)  # reader threads (and workers) busy with the rest of the epoch

    def child() -> dict:
        first = _next_error(it)
        return {"first": first, "again": _next_error(it), "epoch": sum(1 for _ in dl)}

    got = _in_fork(child)
    assert "os.fork()" in got["first"] and f"process {os.getpid()}" in got["first"], got
    assert "iter(loader)" in got["first"] and got["again"] == got["first"]
    assert got["epoch"] == 10  # a new epoch of the copy, on threads (and workers) of its own
    assert sum(1 for _ in it) == 8  # the parent's epoch goes on untouched
    dl.close()
