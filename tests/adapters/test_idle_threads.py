"""The read-ahead threads of a filesystem: started on first use, ended once idle, started
again by the next task, never ended under a running task, and made anew in a forked child."""

from __future__ import annotations

import os
import threading
import time

import pytest

from fastload.adapters.idle_threads import IdleThreadPool
from tests.support.waiting import wait_for


def _named(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix + "_")]


def test_threads_end_when_idle_and_the_next_task_starts_new_ones():
    pool = IdleThreadPool(3, "t-idle-a", idle_seconds=0.2)
    assert not pool.alive and not _named("t-idle-a")
    assert pool.submit(lambda x: x + 1, 1).result() == 2
    assert pool.alive and _named("t-idle-a")
    wait_for(lambda: not pool.alive, "the pool shut down")
    wait_for(lambda: not _named("t-idle-a"), "its threads gone")
    assert pool.submit(lambda: "again").result() == "again"
    assert pool.started == 2
    pool.shutdown()
    assert not _named("t-idle-a")


def test_a_running_task_keeps_its_threads():
    pool = IdleThreadPool(2, "t-idle-b", idle_seconds=0.05)
    go = threading.Event()
    fut = pool.submit(go.wait, 10)
    time.sleep(0.3)  # several idle periods: the task is still running
    assert pool.alive and not fut.done()
    go.set()
    assert fut.result() is True
    wait_for(lambda: not pool.alive, "shut down once the task ended")
    assert pool.started == 1


def test_bad_knobs_name_themselves():
    with pytest.raises(ValueError, match="threads=0 is invalid"):
        IdleThreadPool(0, "x")
    with pytest.raises(ValueError, match="idle_seconds=-1 is invalid"):
        IdleThreadPool(1, "x", idle_seconds=-1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_runs_tasks_on_threads_of_its_own():
    pool = IdleThreadPool(2, "t-idle-c", idle_seconds=30)
    assert pool.submit(os.getpid).result() == os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only (a hang: SIGALRM)
        import signal

        signal.alarm(10)
        ok = pool.submit(os.getpid).result() == os.getpid()
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    pool.shutdown()


def test_a_filesystem_read_ahead_ends_its_threads_once_idle(tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    import numpy as np

    import fastload
    from fastload.adapters import fsspec_fs

    monkeypatch.setattr(fsspec_fs, "READ_AHEAD_IDLE_SECONDS", 0.2)
    path = str(tmp_path / "t.parquet")
    table = pa.table({"a": np.arange(60_000.0), "b": np.arange(60_000.0)})
    pq.write_table(table, path, row_group_size=10_000, compression="none")
    fs = fastload.filesystem(skip_instance_cache=True)
    assert pq.read_table(path, columns=["b"], filesystem=fs).equals(table.select(["b"]))
    assert fs.column_read_ahead_stats()["read_ahead"] > 0
    wait_for(lambda: not fs._read_ahead_pool().alive, "the read-ahead threads ended")
    wait_for(lambda: not _named("fastload-fsspec"), "no read-ahead thread left")
    assert pq.read_table(path, columns=["a"], filesystem=fs).equals(table.select(["a"]))
    assert fs._read_ahead_pool().started == 2
