"""What goes wrong starting worker processes is said exactly, with the fix
(fastload.loop.worker_pitfalls); a transform is never silently skipped; a timeout names
the stage that was slow."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import fastload
from fastload.errors import WorkerError
from fastload.loop.loader import DataLoader
from fastload.plan.datasets import RecordDataset
from tests.support import loader_helpers as H
from tests.support.loader_data import SHAPE, N

ROOT = os.path.dirname(os.path.dirname(fastload.__file__))


def _nested():
    def inner(x):
        return x

    return inner


@pytest.mark.parametrize(
    "transform, why",
    [
        (lambda x: x, "lambda"),
        (_nested(), "Can't pickle local object"),
        (H.LockedTransform(), "cannot pickle '_thread.lock' object"),
    ],
)
@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_a_transform_spawned_workers_cannot_get_is_named_with_the_fix(
    recs, transform, why, context
):
    ds = RecordDataset(recs[0].uris, SHAPE, transform=transform)
    dl = DataLoader(
        ds, batch_size=10, num_workers=2, enable_transforms=True, multiprocessing_context=context
    )
    with pytest.raises(WorkerError) as info:
        iter(dl)
    msg = str(info.value)
    assert "cannot be sent to worker processes" in msg and why in msg
    assert "at the top level of a module" in msg and "use_fork()" in msg
    assert not __import__("multiprocessing").active_children()
    # the same transform with fork: inherited, nothing to pickle
    dl = DataLoader(
        ds, batch_size=10, num_workers=2, enable_transforms=True, multiprocessing_context="fork"
    )
    assert sum(len(x) for x in dl) == N


def _run(code: str, cwd: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *(["-c", code] if "\n" in code else [code])],
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=180,
    )


SETUP = """
import numpy as np
from fastload.loop.loader import DataLoader
from fastload.plan.datasets import RecordDataset
from tests.support.loader_helpers import write_records

def same(x):
    return x
"""
BODY = """
write_records("{root}", 40, (4, 4, 3), 2)
ds = RecordDataset("{root}", (4, 4, 3), transform=same)
dl = DataLoader(ds, batch_size=10, num_workers=2, enable_transforms=True,
                multiprocessing_context="spawn", timeout_seconds=60)
"""


def test_a_transform_from_an_interactive_session_is_named_with_the_fix(tmp_path):
    code = (
        SETUP
        + BODY.format(root=tmp_path / "rec")
        + textwrap.dedent("""
        try:
            iter(dl)
        except Exception as exc:
            print(type(exc).__name__, exc)
        """)
    )
    res = _run(code, str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("WorkerError") and "interactive session" in res.stdout
    assert "use_fork()" in res.stdout


def test_a_script_without_a_main_guard_is_told_to_add_one(tmp_path):
    body = BODY.format(root=tmp_path / "rec") + "print(sum(len(x) for x in dl))\n"
    script = tmp_path / "train.py"
    script.write_text(SETUP + body)
    res = _run(str(script), str(tmp_path))
    assert res.returncode != 0
    # the loader's error, raised in the script's own process ...
    assert "WorkerError" in res.stderr and "while starting: it imported" in res.stderr
    assert 'if __name__ == "__main__":' in res.stderr and "use_fork()" in res.stderr
    # ... and the workers' own word on it, not multiprocessing's bootstrapping RuntimeError
    assert "An attempt has been made to start a new process" not in res.stderr
    script.write_text(SETUP + 'if __name__ == "__main__":\n' + textwrap.indent(body, "    "))
    res = _run(str(script), str(tmp_path))
    assert res.returncode == 0 and res.stdout.split() == ["40"], res.stderr


def test_a_transform_is_never_silently_skipped(recs):
    ds = RecordDataset(recs[0].uris, SHAPE, labels=np.arange(N), transform=H.invert)
    with pytest.raises(
        ValueError, match=r"enable_transforms=False is invalid: .*transform \(invert\)"
    ):
        DataLoader(ds, batch_size=4)
    x, y = next(iter(DataLoader(ds, batch_size=4, enable_transforms=True)))
    assert np.array_equal(x, 255 - recs[1][y])
    plain = RecordDataset(recs[0].uris, SHAPE, labels=np.arange(N))
    x, y = next(iter(DataLoader(plain, batch_size=4)))  # no transform: nothing to enable
    assert np.array_equal(x, recs[1][y])


class _SlowOutput:
    def __call__(self, x, y, pool):
        if 7 in y:
            time.sleep(2)
        return x, y


@pytest.mark.parametrize(
    "stage, expected",
    [
        ("read", r"it was reading 1 ranges \(\d+ bytes\) of .*shard-000\.bin"),
        ("transform", r"it was running the transform on its 5 samples \(in this process\)"),
        ("worker", r"it was waiting for worker 0 \(pid \d+\) to run the transform"),
        ("collate", r"it was collating its 5 transformed samples"),
        ("output", r"it was in the output stage \(_SlowOutput\)"),
    ],
)
def test_a_timeout_names_the_stage_that_was_slow(recs, stage, expected, monkeypatch):
    ds, _ = recs
    kw: dict = {"batch_size": 5, "prefetch": 1, "timeout_seconds": 0.5}
    if stage == "read":
        kw["engine"] = H.slow_engine({ds.sources[0].path}, 2.0)
    if stage in ("transform", "worker", "collate"):
        transform = H.invert if stage == "collate" else H.pause_on_marker
        ds = RecordDataset(recs[0].uris, SHAPE, labels=np.arange(N), transform=transform)
        kw["enable_transforms"] = True
    if stage == "worker":
        kw.update(num_workers=1, multiprocessing_context="fork")
    if stage == "collate":
        from fastload.batch.collate import CollatePlan

        real = CollatePlan.run_samples

        def slow(self, arrays, out, stats=None):
            if int(np.asarray(arrays[0]).reshape(-1)[0]) == 255 - 5:  # batch 1
                time.sleep(2)
            return real(self, arrays, out, stats)

        monkeypatch.setattr(CollatePlan, "run_samples", slow)
    if stage == "output":
        kw["output"] = _SlowOutput()
    dl = DataLoader(ds, **kw)
    it = iter(dl)
    if stage != "read":
        next(it)  # batch 0 is fast; batch 1 holds sample 7
    with pytest.raises(TimeoutError, match=expected):
        next(it)
    dl.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("fastload-reader")]
