"""Collating 256 samples of 224x224x3 uint8 into a float32 NCHW normalised batch.

Baselines measured in the same run, interleaved with fastload:
- numpy: stack, transpose + astype (one C-order copy), normalise in place (the
  usual recipe);
- numpy_out: the strongest numpy: into the same preallocated batch, sample by
  sample (while it is in cache) ``out[i] = s.transpose(2, 0, 1)`` (the cast happens in
  the copy), then ``out[i] *= 1/std`` and ``out[i] += -mean/std`` in place;
- numpy_out_2_threads: numpy_out with the samples split over 2 threads (numpy releases
  the GIL in those loops; the machine has 2 cores);
- torch (CPU): default_collate, permute, float (to a contiguous NCHW tensor),
  normalise in place;
- write_once: numpy fill of a preallocated array of the output's size (the
  memory bus's floor for producing the batch at all).
fastload writes into a preallocated (pooled) batch, as the loader does;
fastload_fresh_out lets collate allocate the batch (page faults included).
Goals: numpy/fastload >= 8, fastload/write_once <= 2.5; the ratios to numpy_out and
numpy_out_2_threads are the honest ones.
"""

import statistics
import threading

import numpy as np

import fastload
from fastload.batch.collate import collate_slab

from .common import MB, interleaved_best, interleaved_times

N, H, W, C = 256, 224, 224, 3
MEAN = np.array([0.485, 0.456, 0.406]) * 255
STD = np.array([0.229, 0.224, 0.225]) * 255
OUT_BYTES = N * C * H * W * 4


def _samples():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (H, W, C), dtype=np.uint8) for _ in range(N)]


def _numpy_pipeline(samples):
    x = np.ascontiguousarray(np.stack(samples).transpose(0, 3, 1, 2), dtype=np.float32)
    x -= MEAN.astype(np.float32).reshape(1, C, 1, 1)
    x /= STD.astype(np.float32).reshape(1, C, 1, 1)
    return x


SCALE = (1.0 / STD).astype(np.float32).reshape(C, 1, 1)
SHIFT = (-MEAN / STD).astype(np.float32).reshape(C, 1, 1)


def _numpy_out(samples, out, lo=0, hi=N):
    """The strongest numpy: per sample into ``out``, cast in the copy, two in-place ops."""
    for i in range(lo, hi):
        o = out[i]
        o[...] = samples[i].transpose(2, 0, 1)
        o *= SCALE
        o += SHIFT
    return out


def _numpy_out_threads(samples, out, n=2):
    step = -(-N // n)
    threads = [
        threading.Thread(target=_numpy_out, args=(samples, out, a, min(a + step, N)))
        for a in range(0, N, step)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _torch_pipeline(tensors, torch, default_collate):
    x = default_collate(tensors).permute(0, 3, 1, 2)
    x = x.to(torch.float32, memory_format=torch.contiguous_format)
    x.sub_(torch.from_numpy(MEAN.astype(np.float32)).view(1, C, 1, 1))
    x.div_(torch.from_numpy(STD.astype(np.float32)).view(1, C, 1, 1))
    return x


def _pipelines(samples, out, fill, out_numpy):
    fns = {
        "fastload": lambda: fastload.collate(
            samples, memory_format="channels_first", dtype=np.float32, mean=MEAN, std=STD, out=out
        ),
        "fastload_fresh_out": lambda: fastload.collate(
            samples, memory_format="channels_first", dtype=np.float32, mean=MEAN, std=STD
        ),
        "numpy": lambda: _numpy_pipeline(samples),
        "numpy_out": lambda: _numpy_out(samples, out_numpy),
        "numpy_out_2_threads": lambda: _numpy_out_threads(samples, out_numpy),
        "write_once": lambda: fill.fill(0.0),
    }
    try:
        import torch
        from torch.utils.data import default_collate
    except ImportError:
        return fns
    tensors = [torch.from_numpy(s) for s in samples]
    fns["torch"] = lambda: _torch_pipeline(tensors, torch, default_collate)
    return fns


class Collate256:
    """Time, samples/s and output MB/s of each way to build the batch."""

    timeout = 600
    params = [
        [
            "fastload",
            "fastload_fresh_out",
            "numpy",
            "numpy_out",
            "numpy_out_2_threads",
            "torch",
            "write_once",
        ]
    ]
    param_names = ["pipeline"]

    def setup(self, *args):
        self.samples = _samples()
        self.out = np.empty((N, C, H, W), np.float32)
        self.out_numpy = np.empty((N, C, H, W), np.float32)
        self.fill = np.empty((N, C, H, W), np.float32)
        self.fns = _pipelines(self.samples, self.out, self.fill, self.out_numpy)
        if args and args[0] not in self.fns:
            raise NotImplementedError(f"{args[0]} is not installed")
        self.times = interleaved_times(self.fns, repeat=7)
        self.seconds = {k: min(v) for k, v in self.times.items()}
        want = _numpy_pipeline(self.samples)
        np.testing.assert_allclose(self.out, want, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(self.out_numpy, want, rtol=1e-5, atol=1e-4)

    def time_collate(self, pipeline):
        self.fns[pipeline]()

    def track_samples_per_s(self, pipeline):
        return N / self.seconds[pipeline]

    track_samples_per_s.unit = "samples/s"

    def track_output_mb_per_s(self, pipeline):
        return OUT_BYTES / self.seconds[pipeline] / MB

    track_output_mb_per_s.unit = "MB/s"


class Collate256Ratios:
    """Ratios of times measured together (best and median of the interleaved rounds):
    baseline/fastload is fastload's speed-up (goal numpy/fastload >= 8; numpy_out and
    numpy_out_2_threads are the strongest numpy); fastload/write_once is how far
    fastload is from writing the output once (goal <= 2.5)."""

    timeout = 600
    params = [
        [
            "numpy/fastload",
            "numpy_out/fastload",
            "numpy_out_2_threads/fastload",
            "torch/fastload",
            "fastload/write_once",
            "fastload_fresh_out/write_once",
            "numpy/fastload_fresh_out",
        ],
        ["min", "median"],
    ]
    param_names = ["ratio", "stat"]

    def setup(self, ratio, stat):
        Collate256.setup(self)
        if any(name not in self.seconds for name in ratio.split("/")):
            raise NotImplementedError("torch is not installed")

    def track_ratio(self, ratio, stat):
        num, den = ratio.split("/")
        pick = min if stat == "min" else statistics.median
        return pick(self.times[num]) / pick(self.times[den])

    track_ratio.unit = "ratio"


KIB = 1024


class CollateBufferSize:
    """What collate_buffer_size (the work unit, bytes of output) does, on all CPUs.

    Tiny units pay a shared-counter update per unit; units as large as the
    batch leave one thread doing everything; 0 picks 64 KiB..1 MiB. Reported
    as time relative to the automatic size, measured together."""

    timeout = 600
    params = [
        [
            256,
            4 * KIB,
            16 * KIB,
            64 * KIB,
            256 * KIB,
            1024 * KIB,
            4096 * KIB,
            16384 * KIB,
            OUT_BYTES,
            0,
        ]
    ]
    param_names = ["collate_buffer_size"]

    def setup(self, size):
        self.samples = _samples()
        self.out = np.empty((N, C, H, W), np.float32)
        self.stats = {}

        def run(unit, stats=None):
            return lambda: fastload.collate(
                self.samples,
                memory_format="channels_first",
                dtype=np.float32,
                mean=MEAN,
                std=STD,
                out=self.out,
                collate_buffer_size=unit,
                stats=stats,
            )

        self.run = run(size, self.stats)
        self.seconds = interleaved_best({"size": self.run, "auto": run(0)}, repeat=7)

    def time_collate(self, size):
        self.run()

    def track_ms(self, size):
        return self.seconds["size"] * 1e3

    track_ms.unit = "ms"

    def track_time_vs_auto(self, size):
        return self.seconds["size"] / self.seconds["auto"]

    track_time_vs_auto.unit = "ratio"

    def track_work_units(self, size):
        return self.stats["work_units"]

    track_work_units.unit = "units"

    def track_threads(self, size):
        return self.stats["threads"]

    track_threads.unit = "threads"


class CollateVariants:
    """Output MB/s of kernel variants from one slab of HWC uint8 records (the
    loader's path), and the ratio to writing the output once."""

    timeout = 600
    params = [["nchw_f32", "nhwc_f32", "nchw_f16", "nchw_bf16", "nhwc_u8_copy", "nchw_u8"]]
    param_names = ["variant"]

    VARIANTS = {
        "nchw_f32": ("channels_first", np.float32, True),
        "nhwc_f32": ("channels_last", np.float32, True),
        "nchw_f16": ("channels_first", np.float16, True),
        "nchw_bf16": ("channels_first", "bfloat16", True),
        "nhwc_u8_copy": ("channels_last", np.uint8, False),
        "nchw_u8": ("channels_first", np.uint8, False),
    }

    def setup(self, variant):
        fmt, dtype, norm = self.VARIANTS[variant]
        sample = H * W * C
        self.slab = fastload.AlignedBuffer(N * sample)
        np.frombuffer(self.slab, np.uint8)[:] = np.random.default_rng(0).integers(
            0, 256, N * sample, dtype=np.uint8
        )
        offsets = np.arange(N, dtype=np.int64) * sample
        kw = dict(mean=MEAN, std=STD) if norm else {}
        first = collate_slab(
            self.slab, offsets, (H, W, C), np.uint8, memory_format=fmt, dtype=dtype, **kw
        )
        self.fill = np.empty_like(first)
        self.out_bytes = first.nbytes
        self.run = lambda: collate_slab(
            self.slab, offsets, (H, W, C), np.uint8, memory_format=fmt, dtype=dtype, out=first, **kw
        )
        self.seconds = interleaved_best(
            {"kernel": self.run, "write_once": lambda: self.fill.fill(0)}, repeat=5
        )

    def time_collate_slab(self, variant):
        self.run()

    def track_output_mb_per_s(self, variant):
        return self.out_bytes / self.seconds["kernel"] / MB

    track_output_mb_per_s.unit = "MB/s"

    def track_ratio_to_write_once(self, variant):
        return self.seconds["kernel"] / self.seconds["write_once"]

    track_ratio_to_write_once.unit = "ratio"
