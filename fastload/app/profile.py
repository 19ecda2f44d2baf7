"""``fastload profile DATASET_URI``: run the loader for N batches (optionally with a synthetic
training step), print where the time went and the verdict, and optionally plot it.

The dataset kind follows the arguments: ``--record-shape`` makes a RecordDataset of fixed-size
records; ``.npy`` files make an NpyDataset; anything else is an ObjectDataset (one sample per
object, raw bytes).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from fastload.app.arguments import count, dtype_arg, seconds_arg
from fastload.batch.ragged import RaggedBatch
from fastload.loop.loader import DataLoader
from fastload.plan.datasets import Dataset, NpyDataset, ObjectDataset, RecordDataset
from fastload.storage.engine import RangeEngine


def add_arguments(p: argparse.ArgumentParser) -> None:
    positive = count(1)
    p.add_argument(
        "dataset", help="a file, folder or prefix (file://, direct://, s3://, http(s)://)"
    )
    p.add_argument("--batches", type=positive, default=50, help="batches to load (default 50)")
    p.add_argument("--batch-size", type=positive, default=64)
    p.add_argument(
        "--step-ms",
        type=seconds_arg,
        default=0.0,
        help="a synthetic training step: sleep this long after each batch",
    )
    p.add_argument("--shuffle", action="store_true")
    p.add_argument("--prefetch", type=positive, default=2)
    p.add_argument("--max-inflight-parts", type=positive, default=None)
    p.add_argument(
        "--record-shape",
        default=None,
        type=_shape_arg,
        help="fixed-size records of this shape, e.g. 224,224,3 (a RecordDataset)",
    )
    p.add_argument(
        "--dtype", type=dtype_arg, default="uint8", help="record dtype (with --record-shape)"
    )
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint for s3:// URIs")
    p.add_argument(
        "--plot",
        default=None,
        metavar="PNG",
        help="draw throughput and wait fraction over time and the stage breakdown "
        "(needs matplotlib: pip install 'fastload[plot]')",
    )


def _shape_arg(text: str) -> tuple[int, ...]:
    """``224,224,3``: positive integers."""
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a shape: {text!r} (positive integers joined by commas, e.g. 224,224,3)"
        ) from None
    if any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(f"not a shape: {text!r} (every side must be >= 1)")
    return shape


def _dataset(args: argparse.Namespace, engine: RangeEngine) -> Dataset:
    if args.record_shape:
        return RecordDataset(args.dataset, args.record_shape, args.dtype, engine=engine)
    uri = args.dataset.rstrip("/")
    if uri.endswith(".npy"):
        return NpyDataset(args.dataset, engine=engine)
    return ObjectDataset(args.dataset, engine=engine)


def run(args: argparse.Namespace) -> int:
    if args.plot:
        _require_matplotlib()  # before loading anything: a missing extra fails fast
    engine_opts: dict[str, Any] = {}
    if args.endpoint_url:
        engine_opts["endpoint_url"] = args.endpoint_url
    engine = RangeEngine(**engine_opts)
    try:
        ds = _dataset(args, engine)
        loader = DataLoader(
            ds,
            batch_size=args.batch_size,
            shuffle=args.shuffle,
            prefetch=args.prefetch,
            max_inflight_parts=args.max_inflight_parts,
            engine=engine,
        )
        times, waits, sizes = _drive(loader, args.batches, args.step_ms / 1e3)
        report = loader.report()
        print(report)
        if args.plot:
            _plot(args.plot, times, waits, sizes, loader.stats()["epochs"][-1])
            print(f"plot written to {args.plot}")
        loader.close()
    finally:
        engine.close()
    return 0


def _drive(
    loader: DataLoader, batches: int, step_s: float
) -> tuple[list[float], list[float], list[int]]:
    """Take ``batches`` batches (starting more epochs when one is too short); per batch: when
    it arrived (seconds from the start), how long next() blocked, and its sample count."""
    times: list[float] = []
    waits: list[float] = []
    sizes: list[int] = []
    t0 = time.perf_counter()
    it = iter(loader)
    fresh = True  # the iterator has yielded nothing yet (an empty epoch ends the run)
    while len(times) < batches:
        asked = time.perf_counter()
        batch = next(it, None)
        if batch is None:
            if fresh:
                break
            it, fresh = iter(loader), True
            continue
        fresh = False
        got = time.perf_counter()
        x = batch[0] if isinstance(batch, tuple) else batch
        times.append(got - t0)
        waits.append(got - asked)
        sizes.append(x.count if isinstance(x, RaggedBatch) else len(x))
        if step_s:
            time.sleep(step_s)
    return times, waits, sizes


def _require_matplotlib() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(
            "fastload profile --plot needs matplotlib: pip install 'fastload[plot]'"
        ) from None
    return plt


def _plot(
    path: str, times: list[float], waits: list[float], sizes: list[int], summary: dict[str, Any]
) -> None:
    plt = _require_matplotlib()
    from fastload.loop.stage_stats import STAGES

    t = np.asarray(times)
    n = np.asarray(sizes, dtype=np.float64)
    w = np.asarray(waits)
    window = max(1, len(t) // 20)
    dt = np.diff(np.concatenate(([0.0], t)))
    kernel = np.ones(window)
    rate = np.convolve(n, kernel, "same") / np.maximum(np.convolve(dt, kernel, "same"), 1e-9)
    waited = np.convolve(w, kernel, "same") / np.maximum(np.convolve(dt, kernel, "same"), 1e-9)
    fig, (ax1, ax3) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(t, rate, color="tab:blue", label="samples/s")
    ax1.set_xlabel("seconds")
    ax1.set_ylabel("samples/s", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(t, np.clip(waited, 0, 1) * 100, color="tab:red", label="waiting %")
    ax2.set_ylabel("step waiting for data (%)", color="tab:red")
    ax2.set_ylim(0, 100)
    ax1.set_title("throughput and wait over time")
    stages = [s for s in STAGES if summary["stages"][s]["total_s"] > 0]
    ax3.barh(stages, [summary["stages"][s]["total_s"] for s in stages], color="tab:green")
    ax3.invert_yaxis()
    ax3.set_xlabel("seconds (summed over batches)")
    ax3.set_title("where the time went")
    fig.suptitle(summary["verdict"], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
