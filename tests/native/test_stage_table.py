"""The native stage table: rows, running totals and numpy-equal percentiles."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from fastload._native.stage_table import (
    BATCH_STAGES,
    CONSUMER_STAGES,
    StageClock,
    StageTable,
    clock_uses_tsc,
    now,
)


def _clock_with(row: list[float]) -> StageClock:
    c = StageClock()
    c.row = row
    return c


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100, 1001])
def test_percentiles_and_totals_equal_numpy(n):
    rng = np.random.default_rng(n)
    table = StageTable(4)  # smaller than n: the table grows
    rows = rng.exponential(1e-3, (n, len(BATCH_STAGES)))
    rows[: n // 3, 1] = 5e-4  # ties
    rows[:, 3] = 0.0  # a stage this path never has
    rows[1:, 4] = 0.0  # one batch has it
    rows[: n // 2, 5] = 0.0  # half the batches have it
    waits = rng.exponential(1e-3, n)
    order = rng.permutation(n)  # batches arrive out of order
    asked = 1000.0
    for k in order:
        table.made(int(k), _clock_with(rows[k].tolist()), 10, 2)
        table.taken(int(k), asked, asked + waits[k])
        asked += waits[k] + 0.25
    assert table.batches == n and table.samples == 2 * n and table.nbytes == 10 * n
    cuts, totals = table.percentiles(), table.totals()
    f32 = rows.astype(np.float32).astype(np.float64)  # cells are stored as float32
    for i, s in enumerate(BATCH_STAGES):
        assert cuts[s][0] == pytest.approx(np.percentile(f32[:, i], 50), rel=1e-6, abs=1e-12)
        assert cuts[s][1] == pytest.approx(np.percentile(f32[:, i], 99), rel=1e-6, abs=1e-12)
        assert totals[s] == pytest.approx(rows[:, i].sum(), rel=1e-9)
    w32 = waits.astype(np.float32).astype(np.float64)
    assert cuts["wait"][0] == pytest.approx(np.percentile(w32, 50), rel=1e-5)
    assert cuts["wait"][1] == pytest.approx(np.percentile(w32, 99), rel=1e-5)
    assert totals["wait"] == pytest.approx(waits.sum(), rel=1e-6)
    assert totals["step"] == pytest.approx(0.25 * (n - 1), rel=1e-6)  # none before the first


def test_a_batch_recorded_again_replaces_its_row():
    table = StageTable(2)
    table.made(0, _clock_with([1.0, 0, 0, 0, 0, 0]), 100, 4)
    table.made(0, _clock_with([2.0, 0, 0, 0, 0, 0]), 100, 4)
    assert table.batches == 1 and table.nbytes == 100 and table.samples == 4
    assert table.totals()["plan"] == pytest.approx(2.0, rel=1e-6)
    assert table.percentiles()["plan"] == pytest.approx((2.0, 2.0), rel=1e-6)


def test_an_empty_table_and_unrecorded_batches_count_nothing():
    table = StageTable(10)
    assert table.percentiles() == {s: (0.0, 0.0) for s in BATCH_STAGES + CONSUMER_STAGES}
    assert table.batches == 0 and all(v == 0 for v in table.totals().values())
    table.made(7, _clock_with([0, 3.0, 0, 0, 0, 0]), 1, 1)  # batches 0..6 never made
    assert table.percentiles()["read"] == pytest.approx((3.0, 3.0), rel=1e-6)
    assert table.percentiles()["wait"] == (0.0, 0.0)  # made, never taken


def test_a_negative_batch_number_is_refused_by_name():
    with pytest.raises(Exception, match="batch -1"):
        StageTable(1).made(-1, StageClock(), 1, 1)


def test_a_lap_outside_the_stages_or_a_short_row_is_refused():
    with pytest.raises(ValueError, match="stage=6 is invalid"):
        StageClock().lap(len(BATCH_STAGES))
    with pytest.raises(ValueError, match="row=.* is invalid: needs one value per stage"):
        StageClock().row = [1.0]


def test_the_clock_reads_perf_counters_time_line():
    before = time.perf_counter()
    t = now()
    after = time.perf_counter()
    assert before <= t <= after
    c = StageClock(traced=True)
    c.lap(0)
    ((_, t0, t1),) = c.spans
    assert before <= t0 <= t1 <= time.perf_counter()


def test_the_consumer_step_runs_from_one_return_to_the_next_ask():
    table = StageTable(3)
    table.taken(0, 10.0, 10.5)  # first batch: no step before it
    table.taken(1, 11.5, 11.75)  # stepped 1.0 s after the first return
    table.taken(2, 12.0, 12.0)
    totals = table.totals()
    assert totals["wait"] == pytest.approx(0.75)
    assert totals["step"] == pytest.approx(1.25)
    assert table.last_return == 12.0


def test_a_clock_started_earlier_laps_its_first_stage_from_that_start():
    start = now() - 0.5  # the batch began half a second ago (next()'s call)
    c = StageClock(start, 2)
    assert c.start == start and c.last >= start + 0.5
    assert c.row[2] == pytest.approx(c.last - start) and sum(c.row) == c.row[2]
    assert StageClock(start).row == [0.0] * len(BATCH_STAGES)  # no lap asked: none taken
    assert StageClock(start).last == start


def test_made_and_taken_records_the_output_lap_the_row_and_the_wait_from_the_start():
    table = StageTable(2)
    c = StageClock(now() - 0.25, 0)  # planned since a call 0.25 s ago
    table.made_and_taken(0, c, 64, 4)
    totals = table.totals()
    assert totals["output"] == pytest.approx(c.row[-1]) and c.row[-1] >= 0
    # the wait runs from the call (the clock's start) to the record: every stage's time
    assert totals["wait"] == pytest.approx(c.last - c.start)
    assert totals["wait"] == pytest.approx(sum(c.row)) and totals["wait"] >= 0.25
    assert table.last_return == c.last and (table.samples, table.nbytes) == (4, 64)


def test_restart_resets_a_clock_as_a_new_one_would_be_made():
    c = StageClock(traced=True)
    c.lap(1)
    c.lap(3)
    start = now() - 0.125
    assert c.restart(start) is c
    assert c.start == start and c.row[0] == pytest.approx(c.last - start) and c.row[0] >= 0.125
    assert c.row[1:] == [0.0] * (len(BATCH_STAGES) - 1)  # the last batch's laps are gone
    assert [s[0] for s in c.spans] == [BATCH_STAGES[0]]  # and its spans


@pytest.mark.parametrize("n", [2, 5, 64, 999, 2000])
def test_percentiles_equal_numpy_on_sorted_reversed_tied_and_constant_columns(n):
    x = np.linspace(1e-4, 1e-2, n)
    columns = [
        x,  # sorted
        x[::-1],  # reversed
        np.full(n, 3e-3),  # one value
        np.where(np.arange(n) % 2 == 0, 1e-3, 2e-3),  # two values alternating
        np.where(np.arange(n) < n - 1, 5e-4, 9.0),  # one outlier on top
        np.random.default_rng(n).choice([1e-3, 2e-3, 4e-3], n),  # few values, shuffled
    ]
    table = StageTable(1)
    for k in range(n):
        table.made(k, _clock_with([float(c[k]) for c in columns]), 1, 1)
    cuts = table.percentiles()
    for i, s in enumerate(BATCH_STAGES):
        f32 = columns[i].astype(np.float32).astype(np.float64)
        for j, q in enumerate((50, 99)):
            assert cuts[s][j] == pytest.approx(np.percentile(f32, q), rel=1e-6), (s, q)


def _kernel_clocksource() -> str:
    try:
        with open("/sys/devices/system/clocksource/clocksource0/current_clocksource") as f:
            return f.read().strip()
    except OSError:
        return ""


def test_the_clock_stays_on_perf_counters_time_line_across_anchors():
    """Read from the TSC (where the kernel keeps time with it), re-anchored as time passes:
    every reading over a quarter second falls within a few us of a perf_counter bracket,
    and laps never run backwards."""
    deadline = time.perf_counter() + 0.25
    worst = 0.0
    c = StageClock()
    while time.perf_counter() < deadline:
        before = time.perf_counter()
        t = now()
        after = time.perf_counter()
        worst = max(worst, before - t, t - after)
        assert c.lap(1) >= 0.0
    assert worst < 20e-6
    if _kernel_clocksource() == "tsc":
        assert clock_uses_tsc()  # past the first 10 ms: from the counter


def test_a_forked_child_reads_the_clock_while_another_thread_reads_it():
    """A fork may copy a re-anchoring in progress (its lock half taken): the child must
    still read the clock, at once and on perf_counter's time line."""
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            now()

    t = threading.Thread(target=hammer)
    t.start()
    try:
        pids = []
        for _ in range(20):
            time.sleep(0.011)  # past an anchor's interval: forks land among re-anchors
            pid = os.fork()
            if pid == 0:  # child: a few readings, each within the bracket
                ok = True
                for _ in range(1000):
                    before = time.perf_counter()
                    x = now()
                    ok &= before - 20e-6 <= x <= time.perf_counter() + 20e-6
                os._exit(0 if ok else 1)
            pids.append(pid)
        for pid in pids:
            for _ in range(500):  # 5 s: a child stuck on the clock's lock fails here
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                time.sleep(0.01)
            else:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                raise AssertionError("a forked child hung reading the clock")
            assert os.waitstatus_to_exitcode(status) == 0
    finally:
        stop.set()
        t.join()


def test_non_finite_times_are_refused_by_name_and_never_stall_the_summary():
    table = StageTable(2)
    with pytest.raises(ValueError, match="times must be finite"):
        table.taken(0, float("nan"), 1.0)
    with pytest.raises(ValueError, match="seconds must be finite and >= 0"):
        StageClock().row = [float("nan")] + [0.0] * (len(BATCH_STAGES) - 1)
    with pytest.raises(ValueError, match="seconds must be finite and >= 0"):
        StageClock().row = [-1.0] + [0.0] * (len(BATCH_STAGES) - 1)
    c = StageClock(float("nan"))  # an unusable start: the clock starts now
    assert c.start > 0 and c.restart(float("inf")).start < float("inf")
    table.made(0, c, 1, 1)
    table.taken(0, 1.0, 2.0)
    assert table.percentiles()["wait"] == (1.0, 1.0)
