"""Auto-tuning (fastload.loop.autotune): the tuner climbs to the best setting, and the
DataLoader applies and reports what it chose."""

from __future__ import annotations

import numpy as np

from fastload.loop.autotune import AutoTuner
from fastload.loop.loader import DataLoader
from tests.support.loader_data import collect


def test_auto_tune_reports_and_applies_its_choice(recs):
    dl = DataLoader(recs[0], batch_size=2, auto_tune=True, reader_mode="range", part_size=4096)
    dl.tuner.window_bytes = 0
    dl.tuner.window_batches = 2
    for _ in range(3):
        collect(dl)
    rep = dl.report()["auto_tune"]
    assert len(rep["trials"]) >= 3  # it measured and tried other settings
    assert {(t["part_size"], t["max_inflight_parts"]) for t in rep["trials"]} != {(4096, 4)}
    # The loader reads with what the tuner applied last (a trial in progress, or its choice),
    # passed per call: the engine itself is never re-configured ...
    rs = dl.read_settings
    assert (rs.part_size, rs.max_inflight_parts) == (
        dl.tuner.part_size,
        dl.tuner.max_inflight_parts,
    )
    assert (dl.engine.part_size, dl.engine.max_inflight_parts) == (None, None)  # per scheme
    # ... and the reported choice is a setting it measured.
    assert (rep["part_size"], rep["max_inflight_parts"]) in {
        (t["part_size"], t["max_inflight_parts"]) for t in rep["trials"]
    }


def test_auto_tuner_climbs_to_the_best_setting():
    applied = []
    tuner = AutoTuner(1 << 20, 4, apply=lambda p, i: applied.append((p, i)))

    def rate(part, inflight):  # best at 16 in flight and 4 MiB parts
        return 1000 - abs(np.log2(inflight / 16)) * 100 - abs(np.log2(part / (4 << 20))) * 80

    for _ in range(40):
        tuner.observe(rate(tuner.part_size, tuner.max_inflight_parts))
    rep = tuner.report()
    assert (rep["part_size"], rep["max_inflight_parts"]) == (4 << 20, 16) and rep["settled"]
    assert applied[-1] == (4 << 20, 16)
