"""Samples -> one model-ready batch in one native pass.

``fastload.collate(samples, ...)`` gathers equal-shaped samples into a batch and,
in the same pass over memory, changes the layout (HWC samples -> NCHW batch,
CHW -> NHWC), converts the dtype (uint8/uint16/float32 -> float32/float16/
bfloat16, uint8 -> uint16) and normalises per channel::

    out = (x - mean[c]) / std[c] * scale

with ``mean`` and ``std`` in the input's units (0..255 for uint8 images). This
module is the policy layer: it checks every argument and picks the layout
(:func:`~fastload.batch.layout.choose_layout`) once, in :func:`plan_collate`, before
any native work starts; the plan it returns holds the kernel's argument struct
(``fastload._native.collate.CollatePlan``) and is reused for every batch of that
shape. The kernel is ``csrc/fl_collate.c``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastload._native import collate as _native
from fastload.batch.layout import LayoutPlan, choose_layout
from fastload.batch.torch_view import BF16
from fastload.checks import (
    INT32_MAX,
    INT64_MAX,
    check_choice,
    check_int,
    number_kind_fault,
    shown,
)

ISAS = tuple(_native.ISA_CODES)

# (source, output) pairs the float path converts; any dtype copies to itself.
_DT_CODES = {
    np.dtype(np.uint8): _native.DT_U8,
    np.dtype(np.uint16): _native.DT_U16,
    np.dtype(np.float32): _native.DT_F32,
    np.dtype(np.float16): _native.DT_F16,
    BF16: _native.DT_BF16,
}
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT_OUT = (np.dtype(np.float32), np.dtype(np.float16), BF16)
_CONVERSIONS: dict[np.dtype, tuple[np.dtype | str, ...]] = {
    np.dtype(np.uint8): (np.dtype(np.uint16), *_FLOAT_OUT),
    np.dtype(np.uint16): _FLOAT_OUT,
    np.dtype(np.float32): _FLOAT_OUT,
}


def _output_dtype(src: np.dtype, dtype: Any, normalised: bool) -> np.dtype | str:
    if dtype is None:
        return np.dtype(np.float32) if normalised and src.kind != "f" else src
    if isinstance(dtype, str) and dtype.lower() == BF16:
        return BF16
    try:
        return np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype={dtype!r} is not a dtype: {exc}") from None


def _dtype_name(dt: np.dtype | str) -> str:
    return dt if isinstance(dt, str) else dt.name


def _kernel_dtypes(src: np.dtype, out: np.dtype | str, normalised: bool) -> tuple[int, int]:
    """Kernel codes (source, output) for a conversion; raw copy when the same dtype."""
    if src.hasobject:
        raise TypeError(f"cannot collate samples of dtype {src}: they hold Python objects")
    if out == src and not normalised:
        return _native.DT_RAW, _native.DT_RAW
    if normalised and out not in _FLOAT_OUT:
        raise TypeError(
            f"mean/std/scale need a float output dtype (float32, float16 or "
            f"bfloat16), not {_dtype_name(out)}"
        )
    if out not in _CONVERSIONS.get(src, ()):
        pairs = "; ".join(
            f"{s.name} -> {', '.join(map(_dtype_name, o))}" for s, o in _CONVERSIONS.items()
        )
        raise TypeError(
            f"cannot collate {src} samples into {_dtype_name(out)}: supported conversions are "
            f"{pairs}, and any dtype to itself"
        )
    return _DT_CODES[src], _DT_CODES[out]


def _per_channel(name: str, value: Any, channels: int, default: float) -> np.ndarray:
    if value is None:
        return np.full(channels, default)
    try:
        fault = number_kind_fault(value)
        if fault is not None:
            raise TypeError(fault)
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(
            f"{name} must be a number or a sequence of numbers, not {shown(value)}: {exc}"
        ) from None
    if arr.ndim > 1 or arr.size not in (1, channels):
        raise ValueError(
            f"{name} has {arr.size} values but the samples have {channels} "
            f"channel(s): give one value or one per channel"
        )
    if not np.all(np.isfinite(arr)) or not np.all(np.abs(arr) <= _FLOAT32_MAX):
        raise ValueError(f"{name}={shown(value)} must be finite (and fit a float32)")
    return np.broadcast_to(arr.reshape(-1), (channels,)).astype(np.float64)


def _affine(mean: Any, std: Any, scale: Any, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(x - mean) / std * scale as x * a + b, per channel."""
    m = _per_channel("mean", mean, channels, 0.0)
    s = _per_channel("std", std, channels, 1.0)
    k = _per_channel("scale", scale, channels, 1.0)
    bad = np.flatnonzero(s <= 0)
    if bad.size:
        what = "0: cannot divide by a zero" if s[bad[0]] == 0 else "negative: no"
        raise ValueError(f"std[{bad[0]}] is {what} standard deviation (std must be > 0)")
    bad = np.flatnonzero(k == 0)
    if bad.size:
        raise ValueError(f"scale[{bad[0]}] is 0: every output value would be 0")
    a = k / s
    b = -m * a
    with np.errstate(over="ignore"):
        fits = np.isfinite(a.astype(np.float32)).all() and np.isfinite(b.astype(np.float32)).all()
    if not fits:
        raise ValueError(
            f"mean={shown(mean)}, std={shown(std)}, scale={shown(scale)} overflow float32: "
            "(x - mean) / std * scale must stay finite"
        )
    return a.astype(np.float32), b.astype(np.float32)


@dataclass(frozen=True)
class CollatePlan:
    """Everything decided about batches of one sample shape, before any of them runs.

    ``native`` holds the kernel's argument struct; a batch only adds its samples and
    its output buffer. ``convert`` is False when the kernel would only copy bytes in
    the same layout (a read slab of such samples already is the batch).
    """

    sample_shape: tuple[int, ...]
    src_dtype: np.dtype
    out_sample_shape: tuple[int, ...]
    out_dtype: np.dtype  # bfloat16 is held as its uint16 bits
    bf16: bool
    layout: LayoutPlan | None  # None: not an image (no layout conversion)
    normalised: bool
    native: _native.CollatePlan
    # The kernel's view of the same decisions, for other kernels that convert the same way
    # (the image decoder): dtype codes and the per-channel x * scale + shift (None: raw copy).
    kernel_dtypes: tuple[int, int] = (0, 0)
    affine: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def sample_nbytes(self) -> int:
        return int(self.native.sample_in)

    @property
    def out_sample_nbytes(self) -> int:
        return int(self.native.sample_out)

    @property
    def convert(self) -> bool:
        transposed = self.layout is not None and self.layout.transpose
        return transposed or self.normalised or self.out_dtype != self.src_dtype

    def out_shape(self, n: int) -> tuple[int, ...]:
        return (n, *self.out_sample_shape)

    def prepare_out(self, n: int, out: Any) -> np.ndarray:
        """``out`` checked against a batch of ``n`` samples, or a new array for it."""
        shape = self.out_shape(n)
        if out is None:
            return np.empty(shape, dtype=self.out_dtype)
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a numpy array, not {type(out).__name__}")
        if out.dtype != self.out_dtype:
            raise TypeError(f"out has dtype {out.dtype}, the batch is {self.out_dtype}")
        if out.shape != shape:
            raise ValueError(f"out has shape {out.shape}, the batch is {shape}")
        if not out.flags.writeable:
            raise ValueError("out is read-only")
        if not (out.flags.c_contiguous and out.flags.aligned):
            raise ValueError("out must be C-contiguous and aligned")
        return out

    def run_slab(
        self,
        slab: Any,
        offsets: np.ndarray,
        out: np.ndarray,
        stats: dict | None = None,
        stores: str = "auto",
    ) -> np.ndarray:
        """Samples at byte ``offsets`` of ``slab`` into ``out`` (checked by the bridge);
        ``stores``: "auto", "plain", or "stream" for a batch whose consumer reads it only
        after later batches have gone through the cache (see :func:`loader_stores`)."""
        return self._run(None, slab, offsets, out, stats, stores)

    def run_samples(
        self, arrays: Sequence[Any], out: np.ndarray, stats: dict | None = None
    ) -> np.ndarray:
        """C-contiguous sample buffers into ``out`` (the bridge checks their sizes)."""
        return self._run(arrays, None, None, out, stats)

    def _run(
        self,
        samples: Any,
        slab: Any,
        offsets: np.ndarray | None,
        out: np.ndarray,
        stats: dict | None,
        stores: str = "auto",
    ) -> np.ndarray:
        kernel_layout = self.layout.kernel_layout if self.layout else None
        if out.size == 0:  # nothing to move (no samples, or an empty dimension)
            if stats is not None:
                stats.update(
                    work_units=0,
                    unit_bytes=0,
                    threads=0,
                    isa=None,
                    transposed=False,
                    streamed=False,
                    kernel_layout=kernel_layout,
                )
            return out
        info = self.native.run(samples, slab, offsets, out, stores)
        if stats is not None:
            stats.update(info)
            stats["kernel_layout"] = kernel_layout
        return out


# The last-level cache a loader's batches pass through (32 MiB on the 2-CPU EPYC VM these
# figures come from; fl_collate.c's FL_STREAM_MIN_BYTES, for one batch used right away,
# is twice that).
LOADER_CACHE_BYTES = 32 << 20


def loader_stores(batches_in_flight: int, in_bytes: int, out_bytes: int) -> str:
    """How a loader's collate writes a batch (``stores`` of :meth:`CollatePlan.run_slab`).

    Its consumer reads it only after the ``batches_in_flight`` made meanwhile went through
    the cache, and its pooled buffer comes back after them too: once those batches'
    bytes (read slab and output) exceed the cache, the lines are gone either way and
    plain stores only add a read of each line before writing it. Measured in a loader
    with 2 readers on 2 CPUs (uint8 -> float32 NCHW, interleaved): streaming cost ~5% of
    the CPU per sample at 4.8 MB of output per batch (224x224x3 x 8, 18 MB in flight
    here: plain), saved 6% at 6.3 MB (64x64x3 x 128, 28 MB: plain), 13% at 9.6 MB
    (224x224x3 x 16, 43 MB: streamed), 17% at 12.6 MB (64x64x3 x 256, 57 MB: streamed).
    """
    heavy = batches_in_flight * (in_bytes + out_bytes) > LOADER_CACHE_BYTES
    return "stream" if heavy else "auto"


def plan_collate(
    sample_shape: tuple[int, ...],
    src_dtype: np.dtype,
    *,
    layout: str = "HWC",
    memory_format: str | None = "auto",
    consumer: str = "numpy",
    dtype: Any = None,
    mean: Any = None,
    std: Any = None,
    scale: Any = None,
    num_threads: int = 0,
    collate_buffer_size: int = 0,
    isa: str = "auto",
) -> CollatePlan:
    """Check every argument and decide the batch layout for samples of one shape and dtype."""
    num_threads = check_int("num_threads", num_threads, 0, INT32_MAX, type_error=True)
    unit_bytes = check_int(
        "collate_buffer_size", collate_buffer_size, 0, INT64_MAX, type_error=True
    )
    check_choice("isa", isa, ISAS)
    # Python ints: a shape whose byte size does not fit an int64 is refused by name here,
    # before the bridge's int64 arithmetic sees it
    elements = math.prod(int(d) for d in sample_shape)
    if elements * max(src_dtype.itemsize, 4) > INT64_MAX:  # 4: the widest output element
        raise ValueError(
            f"sample_shape={tuple(sample_shape)} of {src_dtype} is {elements} elements per "
            f"sample: too large (a sample must be at most {INT64_MAX} bytes)"
        )
    image_plan = choose_layout(memory_format, layout, consumer)  # checks the knobs for any sample
    plan: LayoutPlan | None = image_plan
    if len(sample_shape) == 3:
        if layout == "HWC":
            h, w, c = sample_shape
        else:
            c, h, w = sample_shape
        src_cl = layout == "HWC"
        dst_cl = image_plan.kernel_layout == "NHWC"
        pixels, channels = h * w, c
        out_sample: tuple[int, ...] = (h, w, c) if dst_cl else (c, h, w)
    else:
        # Not an image: gathered as one channel, without layout conversion.
        plan = None
        src_cl = dst_cl = True
        pixels, channels = int(np.prod(sample_shape, dtype=np.int64)), 1
        out_sample = tuple(sample_shape)
    normalised = mean is not None or std is not None or scale is not None
    out_dt = _output_dtype(src_dtype, dtype, normalised)
    src_code, dst_code = _kernel_dtypes(src_dtype, out_dt, normalised)
    scale_arr = shift_arr = None
    if src_code != _native.DT_RAW:
        scale_arr, shift_arr = _affine(mean, std, scale, max(channels, 1))
    # bfloat16 (the one str dtype) is held as its uint16 bits.
    out_dtype = np.dtype(np.uint16) if isinstance(out_dt, str) else out_dt
    native = _native.CollatePlan(
        pixels=pixels,
        channels=channels,
        src_channels_last=src_cl,
        dst_channels_last=dst_cl,
        src_dtype=src_code,
        dst_dtype=dst_code,
        src_itemsize=src_dtype.itemsize,
        dst_itemsize=out_dtype.itemsize,
        scale=scale_arr,
        shift=shift_arr,
        unit_bytes=unit_bytes,
        nthreads=num_threads,
        isa=isa,
    )
    return CollatePlan(
        tuple(sample_shape),
        src_dtype,
        out_sample,
        out_dtype,
        isinstance(out_dt, str),
        plan,
        normalised,
        native,
        (src_code, dst_code),
        None if scale_arr is None or shift_arr is None else (scale_arr, shift_arr),
    )


def sample_arrays(samples: Sequence[Any]) -> list[np.ndarray]:
    """Samples as C-contiguous arrays of one shape and dtype (sample 0's)."""
    if isinstance(samples, (str, bytes, bytearray, memoryview)) or not hasattr(samples, "__len__"):
        raise TypeError(f"samples must be a sequence of arrays, not {type(samples).__name__}")
    if len(samples) == 0:
        raise ValueError("collate needs at least one sample (collate_slab takes an empty batch)")
    arrays = []
    first = None
    for i, s in enumerate(samples):
        arr = np.asarray(s)
        if first is None:
            first = arr
        elif arr.shape != first.shape:
            raise ValueError(f"sample {i} has shape {arr.shape}, sample 0 has {first.shape}")
        elif arr.dtype != first.dtype:
            raise TypeError(f"sample {i} has dtype {arr.dtype}, sample 0 has {first.dtype}")
        arrays.append(arr if arr.flags.c_contiguous else np.ascontiguousarray(arr))
    return arrays


def collate(
    samples: Sequence[Any],
    *,
    memory_format: str | None = "auto",
    layout: str = "HWC",
    dtype: Any = None,
    mean: Any = None,
    std: Any = None,
    scale: Any = None,
    out: np.ndarray | None = None,
    num_threads: int = 0,
    collate_buffer_size: int = 0,
    consumer: str = "numpy",
    stats: dict | None = None,
    isa: str = "auto",
) -> np.ndarray:
    """Collate equal-shaped samples into one batch in one native pass.

    samples: arrays of one shape and dtype; 3-D ones are images stored as
        ``layout`` ("HWC" or "CHW"), other ranks are stacked as they are.
    memory_format: "channels_first" (NCHW), "channels_last" (NHWC), "auto"
        (see :func:`~fastload.batch.layout.choose_layout`) or None (keep the stored layout).
    dtype: output dtype; None keeps the input's (float32 when normalising
        integers). "bfloat16" returns the bfloat16 bits as uint16 (see as_torch).
    mean, std, scale: ``(x - mean) / std * scale``, each one value or one per
        channel, mean and std in the input's units.
    out: a C-contiguous, writable array of the batch's shape and dtype to fill
        (a pooled buffer avoids the page faults of a fresh one).
    num_threads: native threads (0 = one per CPU, fewer for small batches).
    collate_buffer_size: bytes of output per work unit that threads take in
        turn (0 = automatic: 64 KiB..1 MiB). Smaller units balance threads
        better; a unit as large as the batch runs on one thread.
    consumer: "numpy", "torch", "tensorflow" or "jax" (what "auto" follows).
    stats: a dict to receive what the kernel did (work_units, unit_bytes,
        threads, isa, transposed, kernel_layout).
    isa: "auto", "avx2" or "generic" (force the portable kernel, for tests).
    """
    arrays = sample_arrays(samples)
    plan = plan_collate(
        arrays[0].shape,
        arrays[0].dtype,
        layout=layout,
        memory_format=memory_format,
        consumer=consumer,
        dtype=dtype,
        mean=mean,
        std=std,
        scale=scale,
        num_threads=num_threads,
        collate_buffer_size=collate_buffer_size,
        isa=isa,
    )
    # the bridge checks that out overlaps no sample (pointer ranges, before the kernel)
    return plan.run_samples(arrays, plan.prepare_out(len(arrays), out), stats)


def collate_slab(
    src: Any,
    offsets: Any,
    sample_shape: Sequence[int],
    src_dtype: Any,
    *,
    layout: str = "HWC",
    memory_format: str | None = "auto",
    dtype: Any = None,
    mean: Any = None,
    std: Any = None,
    scale: Any = None,
    out: np.ndarray | None = None,
    num_threads: int = 0,
    collate_buffer_size: int = 0,
    consumer: str = "numpy",
    stats: dict | None = None,
    isa: str = "auto",
) -> np.ndarray:
    """Collate samples that lie in one buffer ``src`` at byte ``offsets``.

    ``src`` is any C-contiguous buffer (an AlignedBuffer of records read from
    disk, bytes, a numpy array); sample i is ``sample_shape`` elements of
    ``src_dtype`` starting at byte ``offsets[i]`` (any alignment). Other
    arguments as :func:`collate`; no Python object per sample is made.
    """
    try:
        src_dt = np.dtype(src_dtype)
    except TypeError as exc:
        raise TypeError(f"src_dtype={src_dtype!r} is not a dtype: {exc}") from None
    try:
        shape = tuple(int(d) for d in sample_shape)
    except TypeError:
        raise TypeError(f"sample_shape must be a sequence of ints, not {sample_shape!r}") from None
    if any(d < 0 for d in shape):
        raise ValueError(f"sample_shape {shape} has a negative dimension")
    offs = np.asarray(offsets)
    if offs.ndim != 1 or (offs.size and offs.dtype.kind not in "iu"):
        raise TypeError(f"offsets must be a 1-D array of integers, not {offs.dtype} {offs.shape}")
    offs = np.ascontiguousarray(offs, dtype=np.int64)
    try:
        view = memoryview(src)
    except TypeError:
        raise TypeError(f"src must support the buffer protocol, not {type(src).__name__}") from None
    if not view.c_contiguous:
        raise ValueError("src must be a C-contiguous buffer")
    plan = plan_collate(
        shape,
        src_dt,
        layout=layout,
        memory_format=memory_format,
        consumer=consumer,
        dtype=dtype,
        mean=mean,
        std=std,
        scale=scale,
        num_threads=num_threads,
        collate_buffer_size=collate_buffer_size,
        isa=isa,
    )
    # the bridge checks that every sample lies inside src
    return plan.run_slab(src, offs, plan.prepare_out(offs.size, out), stats)


def collate_ragged(
    samples: Sequence[Any], *, num_threads: int = 0, collate_buffer_size: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Pack byte strings of different lengths into one buffer.

    Returns ``(packed, offsets)``: a uint8 array holding every sample's bytes
    back to back, and int64 offsets of length N + 1 (sample i is
    ``packed[offsets[i]:offsets[i + 1]]``). Samples are bytes-like objects;
    arrays contribute their bytes in C order.
    """
    num_threads = check_int("num_threads", num_threads, 0, INT32_MAX, type_error=True)
    unit_bytes = check_int(
        "collate_buffer_size", collate_buffer_size, 0, INT64_MAX, type_error=True
    )
    if isinstance(samples, (str, bytes, bytearray, memoryview)) or not hasattr(samples, "__len__"):
        raise TypeError(
            f"samples must be a sequence of bytes-like objects, not {type(samples).__name__}"
        )
    items = [np.ascontiguousarray(s) if isinstance(s, np.ndarray) else s for s in samples]
    for i, item in enumerate(items):
        if isinstance(item, np.ndarray) and item.dtype.hasobject:
            # numpy exports object arrays as raw PyObject pointers: never bytes of data
            raise TypeError(
                f"sample {i} has dtype {item.dtype}: it holds Python objects, not bytes"
            )
    return _native.gather_ragged(items, num_threads, unit_bytes)


__all__ = ["CollatePlan", "collate", "collate_ragged", "collate_slab", "plan_collate"]
