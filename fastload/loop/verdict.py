"""Is the training step waiting for data, and if so on what: a one-line verdict and a table.

The verdict reads an epoch summary (:meth:`fastload.loop.stage_stats.EpochStats.summary`):
the consumer is input-bound when it waited more than ``INPUT_BOUND_FRACTION`` of its time in
``next()``; the stage that then took most of the batches' time is named with the knob that
acts on it.
"""

from __future__ import annotations

from typing import Any

from fastload.loop.stage_stats import BATCH_STAGES, STAGES

# Waiting 10% of the time is where a faster loader starts to pay back measurably.
INPUT_BOUND_FRACTION = 0.10
# Below this many bytes per batch, reads cost their fixed per-call time, not bandwidth.
SMALL_BATCH_BYTES = 256 << 10

ADVICE = {
    "read": "raise max_inflight_parts or prefetch (or read larger blocks)",
    "decode": "decode fewer pixels (a smaller crop) or more in parallel",
    "transform": "run the transform in worker processes (num_workers) or make it cheaper",
    "collate": "keep the stored layout (memory_format) or a cheaper output dtype",
    "output": "pin_memory(True) with non_blocking for the copy to the device",
    "plan": "larger batches (the per-batch planning cost is fixed)",
}
_WHAT = {
    "read": "reads",
    "decode": "image decoding",
    "transform": "the transform",
    "collate": "collating",
    "output": "the output stage (device copy)",
    "plan": "planning",
}


def busiest_stage(summary: dict[str, Any]) -> str:
    """The batch stage with the most total seconds."""
    stages = summary["stages"]
    return max(BATCH_STAGES, key=lambda s: stages[s]["total_s"])


def verdict(summary: dict[str, Any], source: str = "") -> str:
    """One line: input-bound (on what, and the knob to turn) or not."""
    waited = summary["wait_fraction"]
    if summary["batches"] == 0:
        return "no batches yet"
    if waited <= INPUT_BOUND_FRACTION:
        return (
            f"not input-bound: the step waited {waited:.0%} of its time for data "
            "(the loader keeps up; the step itself sets the pace)"
        )
    stage = busiest_stage(summary)
    where = f" from {source}" if stage == "read" and source else ""
    advice = ADVICE[stage]
    per_batch = summary["bytes"] / max(summary["batches"], 1)
    if stage in ("read", "plan") and per_batch < SMALL_BATCH_BYTES:
        # Tiny batches: no read depth helps when each batch costs a fixed ~100 us anyway.
        advice = "batches are small, so the fixed cost per batch dominates: raise batch_size"
    return (
        f"input-bound: the step waited {waited:.0%} of the epoch, mostly on "
        f"{_WHAT[stage]}{where} — {advice}"
    )


def render(summary: dict[str, Any], source: str = "") -> str:
    """The stage breakdown as a short table, then the verdict."""
    lines = [
        f"epoch {summary['epoch']}: {summary['batches']} batches, {summary['samples']} samples "
        f"in {summary['wall_s']:.2f} s ({summary['samples_per_s']:,.0f} samples/s, "
        f"{summary['mb_per_s']:,.1f} MB/s)",
        f"{'stage':<10} {'total s':>9} {'p50 ms':>9} {'p99 ms':>9}",
    ]
    for s in STAGES:
        st = summary["stages"][s]
        if st["total_s"] == 0 and s not in ("read", "wait"):
            continue
        lines.append(
            f"{s:<10} {st['total_s']:>9.3f} {st['p50_s'] * 1e3:>9.2f} {st['p99_s'] * 1e3:>9.2f}"
        )
    lines.append(verdict(summary, source))
    return "\n".join(lines)
