"""Observability: per-stage stats per epoch, the verdict, logs, the progress bar, the trace."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from fastload.loop.epoch_bar import EpochBar
from fastload.loop.loader import DataLoader
from fastload.loop.stage_stats import BATCH_STAGES, PLAN, READ, STAGES, EpochStats, StageClock
from fastload.plan.datasets import ObjectDataset, RecordDataset
from fastload.storage.engine import RangeEngine
from tests.support.loader_data import SHAPE, N
from tests.support.servers import Fault, payload


def slow_transform(sample: np.ndarray) -> np.ndarray:
    time.sleep(0.02)
    return sample


def _epoch(dl, step_s: float = 0.0) -> dict:
    for _ in dl:
        if step_s:
            time.sleep(step_s)
    return dl.stats()["epochs"][-1]


def test_stats_per_epoch_count_every_batch_sample_and_byte(recs):
    ds, _ = recs
    dl = DataLoader(ds, batch_size=16)
    first, second = _epoch(dl), _epoch(dl)
    epochs = dl.stats()["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1] and first is not second
    for e in epochs:
        assert e["batches"] == len(dl) and e["samples"] == N
        assert e["bytes"] == N * int(np.prod(SHAPE))
        assert e["requests"] >= len(dl)  # the file backend's preads this epoch, not cumulative
        for s in STAGES:
            st = e["stages"][s]
            assert 0 <= st["p50_s"] <= st["p99_s"] <= st["total_s"] + 1e-12
        assert e["stages"]["read"]["total_s"] > 0 and e["stages"]["plan"]["total_s"] > 0
    assert epochs[1]["requests"] == epochs[0]["requests"]  # per-epoch deltas


def test_a_slow_consumer_is_not_input_bound(recs):
    e = _epoch(DataLoader(recs[0], batch_size=20), step_s=0.03)
    assert e["wait_fraction"] < 0.1
    assert e["verdict"].startswith("not input-bound")


def test_a_slow_transform_is_named(recs):
    ds = RecordDataset(recs[0].uris, SHAPE, transform=slow_transform)
    e = _epoch(DataLoader(ds, batch_size=4, prefetch=1, enable_transforms=True))
    assert e["stages"]["transform"]["total_s"] > 0.5 * e["wall_s"]
    assert e["verdict"].startswith("input-bound") and "mostly on the transform" in e["verdict"]
    assert "num_workers" in e["verdict"]


def test_slow_reads_are_named_with_the_source(http_server, fault_proxy_http):
    """A trickling server (the fault proxy sends 4 kB per 0.1 s): the step waits on reads."""
    names = []
    for i in range(3):
        http_server.put(f"o{i}.bin", payload(300_000, i))
        names.append(f"{fault_proxy_http.endpoint}/o{i}.bin")
    ds = ObjectDataset(names, sizes=[300_000] * 3)
    fault_proxy_http.queue(*[Fault("trickle", after=60_000) for _ in range(6)])
    dl = DataLoader(ds, batch_size=1, prefetch=1, engine=RangeEngine(part_size=1 << 20))
    e = _epoch(dl)
    assert e["verdict"].startswith("input-bound") and "mostly on reads" in e["verdict"]
    assert fault_proxy_http.endpoint in e["verdict"]  # names where the slow reads came from
    assert e["stages"]["read"]["total_s"] > 0.5 * e["wall_s"]


def test_report_prints_the_table_and_verdict_and_keeps_its_fields(recs):
    dl = DataLoader(recs[0], batch_size=25)
    assert str(dl.report()) == "no epoch has run yet"
    _epoch(dl)
    rep = dl.report()
    assert rep["part_size"] == dl.read_settings.part_size and rep["verdict"].startswith(
        "input-bound"
    )
    text = str(rep)
    assert "stage" in text and "read" in text and rep["verdict"] in text
    assert text.splitlines()[0].startswith("epoch 0: 4 batches, 100 samples")


def test_running_epoch_is_reported_while_it_runs(recs):
    dl = DataLoader(recs[0], batch_size=10)
    it = iter(dl)
    next(it)
    live = dl.stats()["epochs"][-1]
    assert live.get("running") is True and live["batches"] >= 1
    it.close()


def test_trace_is_valid_trace_event_json_with_every_stage(recs, tmp_path):
    ds = RecordDataset(recs[0].uris, SHAPE, transform=lambda s: s[::-1].copy())
    dl = DataLoader(ds, batch_size=10, enable_transforms=True, dtype=np.float32)
    path = tmp_path / "trace.json"
    with dl.trace(path) as tr:
        _epoch(dl)
    assert tr.path == str(path)
    doc = json.loads(path.read_text())
    events = doc["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    names = {e["name"] for e in spans}
    assert {"plan", "read", "transform", "collate", "output", "wait", "step"} <= names
    for e in spans:
        assert {"name", "ts", "dur", "pid", "tid"} <= set(e) and e["ts"] >= 0 and e["dur"] >= 0
    threads = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert any(t.startswith("fastload-reader-") for t in threads)
    assert {e["args"]["batch"] for e in spans if e["name"] == "read"} == set(range(len(dl)))
    # a batch's stages on one reader thread do not overlap and come in pipeline order
    by_batch = [e for e in spans if e["args"].get("batch") == 3 and e["name"] in BATCH_STAGES]
    by_batch.sort(key=lambda e: e["ts"])
    assert [e["name"] for e in by_batch] == ["plan", "read", "transform", "collate", "output"]
    assert all(
        a["ts"] + a["dur"] <= b["ts"] + 1e-3
        for a, b in zip(by_batch[:-1], by_batch[1:], strict=True)
    )
    n = len(events)
    _epoch(dl)  # stopped: nothing more is recorded
    assert len(json.loads(path.read_text())["traceEvents"]) == n


def test_one_info_line_per_epoch_and_silence_by_default(recs, caplog):
    dl = DataLoader(recs[0], batch_size=25)
    with caplog.at_level(logging.INFO, logger="fastload"):
        _epoch(dl)
        _epoch(dl)
    lines = [r for r in caplog.records if r.name == "fastload" and r.levelno == logging.INFO]
    assert len(lines) == 2 and "samples/s" in lines[0].getMessage()
    # A program that configures no logging sees nothing from fastload on stderr.
    code = (
        "import fastload, numpy as np, sys\n"
        f"ds = fastload.RecordDataset({recs[0].uris!r}, {SHAPE!r})\n"
        "for _ in fastload.DataLoader(ds, batch_size=25): pass\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=os.getcwd()
    )
    assert res.returncode == 0 and res.stderr == ""


def test_debug_lines_name_sources_without_secrets(http_server, caplog):
    http_server.put("s.bin", b"x" * 1000)
    url = http_server.url("s.bin").replace("http://", "http://user:hunter2@")
    dl = DataLoader(ObjectDataset([url], sizes=[1000]), batch_size=1)
    with caplog.at_level(logging.DEBUG, logger="fastload"):
        _epoch(dl)
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert debug and all("hunter2" not in m for m in debug) and "***" in debug[0]


def test_debug_read_lines_follow_the_level_each_epoch_starts_with(recs, caplog):
    dl = DataLoader(recs[0], batch_size=8)
    caplog.set_level(logging.INFO, logger="fastload")
    _epoch(dl)
    assert not [r for r in caplog.records if r.levelno == logging.DEBUG]
    caplog.set_level(logging.DEBUG, logger="fastload")  # between epochs: the next one logs
    _epoch(dl)
    reads = [r.getMessage() for r in caplog.records if r.getMessage().startswith("read ")]
    assert len(reads) == len(dl)  # one line per batch read
    caplog.clear()
    caplog.set_level(logging.INFO, logger="fastload")
    _epoch(dl)
    assert not [r for r in caplog.records if r.levelno == logging.DEBUG]


def test_retries_past_the_threshold_warn(http_server, fault_proxy_http, caplog):
    http_server.put("r.bin", payload(50_000, 1))
    ds = ObjectDataset([f"{fault_proxy_http.endpoint}/r.bin"] * 4, sizes=[50_000] * 4)
    fault_proxy_http.queue(Fault("slowdown", retry_after=0), Fault("slowdown", retry_after=0))
    dl = DataLoader(ds, batch_size=4, engine=RangeEngine(backoff_base=0.01, backoff_cap=0.02))
    with caplog.at_level(logging.WARNING, logger="fastload"):
        e = _epoch(dl)
    assert e["retries"] == 2
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("were retries" in m and fault_proxy_http.endpoint in m for m in warned)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_shows_rate_and_wait_on_a_terminal_only(recs, monkeypatch):
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    monkeypatch.setitem(sys.modules, "tqdm", None)  # the built-in bar
    _epoch(DataLoader(recs[0], batch_size=10, progress=True))
    out = tty.getvalue()
    assert "epoch 0 [" in out and "samples/s" in out and "waited" in out and "10/10" in out
    plain = io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain)
    _epoch(DataLoader(recs[0], batch_size=10, progress=True))
    assert plain.getvalue() == ""  # not a terminal: nothing drawn
    _epoch(DataLoader(recs[0], batch_size=10))
    assert tty.getvalue() == out  # progress is off by default


def test_progress_bar_uses_tqdm_when_installed(monkeypatch):
    tqdm = pytest.importorskip("tqdm")
    tty = _Tty()
    bar = EpochBar(3, 5, stream=tty)
    assert isinstance(bar._tqdm, tqdm.tqdm)
    assert tqdm.tqdm.monitor is None or not tqdm.tqdm.monitor.is_alive()
    stats = EpochStats(3, 5)
    for k in range(5):
        stats.record_batch(k, StageClock(), 10, 2)
        bar.update(stats)
    bar.close()
    assert "epoch 3" in tty.getvalue() and "5/5" in tty.getvalue()
    # no monitor thread left behind (fork-context workers started later would inherit it)
    assert not [t for t in threading.enumerate() if t.name == "tqdm_monitor"]


def test_stage_clock_charges_laps_and_skips():
    c = StageClock(traced=True)
    time.sleep(0.01)
    c.lap(PLAN)
    time.sleep(0.01)
    c.skip()
    c.lap(READ)
    assert c.row[BATCH_STAGES.index("plan")] >= 0.009
    assert c.row[BATCH_STAGES.index("read")] < 0.005  # the skipped wait is nobody's
    assert [s for s, *_ in c.spans] == ["plan", "read"]
    assert StageClock().spans is None  # no trace: no spans kept
