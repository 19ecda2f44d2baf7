"""Samples -> one model-ready batch in one native pass.

``fastload.collate(samples, ...)`` gathers equal-shaped samples into a batch and,
in the same pass over memory, changes the layout (HWC samples -> NCHW batch,
CHW -> NHWC), converts the dtype (uint8/uint16/float32 -> float32/float16/
bfloat16, uint8 -> uint16) and normalises per channel::

    out = (x - mean[c]) / std[c] * scale

with ``mean`` and ``std`` in the input's units (0..255 for uint8 images). This
module is the policy layer: it checks every argument and picks the layout
(:func:`choose_layout`) before any native work starts; the kernel is
``csrc/fl_collate.c``, reached through ``fastload._collate``.

The module itself is callable: ``fastload.collate(...)`` is :func:`collate`,
and ``fastload.collate.collate_slab`` / ``choose_layout`` / ``as_torch`` are
its helpers.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastload import _collate

MEMORY_FORMATS = ("auto", "channels_first", "channels_last", None)
CONSUMERS = ("numpy", "torch", "tensorflow", "jax")
LAYOUTS = ("HWC", "CHW")
ISAS = tuple(_collate.ISA_CODES)

_BF16 = "bfloat16"
# (source, output) pairs the float path converts; any dtype copies to itself.
_DT_CODES = {
    np.dtype(np.uint8): _collate.DT_U8,
    np.dtype(np.uint16): _collate.DT_U16,
    np.dtype(np.float32): _collate.DT_F32,
    np.dtype(np.float16): _collate.DT_F16,
    _BF16: _collate.DT_BF16,
}
_FLOAT_OUT = (np.dtype(np.float32), np.dtype(np.float16), _BF16)
_CONVERSIONS: dict[np.dtype, tuple[np.dtype | str, ...]] = {
    np.dtype(np.uint8): (np.dtype(np.uint16), *_FLOAT_OUT),
    np.dtype(np.uint16): _FLOAT_OUT,
    np.dtype(np.float32): _FLOAT_OUT,
}


@dataclass(frozen=True)
class LayoutPlan:
    """What the kernel writes and how the consumer should look at it.

    ``kernel_layout`` is the memory order of the batch ("NCHW" or "NHWC").
    ``torch_channels_last`` means the consumer wants torch's channels_last: an
    NCHW-shaped tensor with NHWC strides, i.e. NHWC memory viewed through
    ``permute(0, 3, 1, 2)`` -- no transposition in memory at all.
    """

    memory_format: str | None
    stored_layout: str
    kernel_layout: str
    consumer: str
    torch_channels_last: bool = False

    @property
    def transpose(self) -> bool:
        """True when the kernel must transpose (stored layout != kernel layout)."""
        return ("N" + self.stored_layout) != self.kernel_layout

    @property
    def view_layout(self) -> str:
        """The dimension order the consumer sees."""
        return "NCHW" if self.torch_channels_last else self.kernel_layout

    @property
    def view_permutation(self) -> tuple[int, ...] | None:
        """Axes permutation from the kernel's array to the consumer's view."""
        return (0, 3, 1, 2) if self.torch_channels_last else None


def _check_choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, allowed))}")


def choose_layout(
    memory_format: str | None = "auto", stored_layout: str = "HWC", consumer: str = "numpy"
) -> LayoutPlan:
    """Pick the layout the kernel writes for samples stored as ``stored_layout``.

    ``"auto"`` keeps the stored layout for numpy, gives NCHW to torch and NHWC
    to TensorFlow and JAX; ``None`` never converts. ``"channels_last"`` for
    torch writes NHWC and asks for a channels_last view of it.
    """
    _check_choice("memory_format", memory_format, MEMORY_FORMATS)
    _check_choice("layout", stored_layout, LAYOUTS)
    _check_choice("consumer", consumer, CONSUMERS)
    resolved = memory_format
    if memory_format == "auto":
        resolved = {"numpy": None, "torch": "channels_first"}.get(consumer, "channels_last")
    if resolved is None:
        kernel = "N" + stored_layout
    else:
        kernel = "NCHW" if resolved == "channels_first" else "NHWC"
    return LayoutPlan(
        memory_format=resolved,
        stored_layout=stored_layout,
        kernel_layout=kernel,
        consumer=consumer,
        torch_channels_last=consumer == "torch" and resolved == "channels_last",
    )


def as_torch(array: np.ndarray, plan: LayoutPlan | None = None, *, dtype: str | None = None) -> Any:
    """A torch tensor sharing ``array``'s memory, viewed as ``plan`` says.

    For a channels_last plan the NHWC batch becomes an NCHW-shaped tensor with
    channels_last strides (``permute(0, 3, 1, 2)``, zero-copy). ``dtype=
    "bfloat16"`` reinterprets the uint16 bits that ``collate(dtype="bfloat16")``
    returns as ``torch.bfloat16``.
    """
    import torch  # lazily: torch is an optional extra

    if dtype is not None and dtype != _BF16:
        raise ValueError(f"as_torch: dtype={dtype!r}: only 'bfloat16' reinterprets the array")
    if dtype == _BF16 and array.dtype != np.uint16:
        raise TypeError(f"as_torch: bfloat16 bits come as uint16, not {array.dtype}")
    tensor = torch.from_numpy(array)
    if dtype == _BF16:
        tensor = tensor.view(torch.bfloat16)
    if plan is not None and plan.view_permutation is not None and tensor.dim() == 4:
        tensor = tensor.permute(*plan.view_permutation)
    return tensor


# ---- argument checks ---------------------------------------------------------


_MAX_COUNT = {"num_threads": 2**31 - 1, "collate_buffer_size": 2**63 - 1}  # C int, int64_t


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name}={value} must be >= 0 (0 = automatic)")
    if value > _MAX_COUNT[name]:
        raise ValueError(f"{name}={value} is too large (at most {_MAX_COUNT[name]})")
    return int(value)


def _output_dtype(src: np.dtype, dtype: Any, normalised: bool) -> np.dtype | str:
    if dtype is None:
        return np.dtype(np.float32) if normalised and src.kind != "f" else src
    if isinstance(dtype, str) and dtype.lower() == _BF16:
        return _BF16
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
        return _collate.DT_RAW, _collate.DT_RAW
    if normalised and out not in _FLOAT_OUT:
        raise TypeError(f"mean/std/scale need a float output dtype (float32, float16 or "
                        f"bfloat16), not {_dtype_name(out)}")
    if out not in _CONVERSIONS.get(src, ()):
        pairs = "; ".join(f"{s.name} -> {', '.join(map(_dtype_name, o))}" for s, o in _CONVERSIONS.items())
        raise TypeError(
            f"cannot collate {src} samples into {_dtype_name(out)}: supported conversions are "
            f"{pairs}, and any dtype to itself"
        )
    return _DT_CODES[src], _DT_CODES[out]


def _per_channel(name: str, value: Any, channels: int, default: float) -> np.ndarray:
    if value is None:
        return np.full(channels, default)
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a number or a sequence of numbers: {exc}") from None
    if arr.ndim > 1 or arr.size not in (1, channels):
        raise ValueError(f"{name} has {arr.size} values but the samples have {channels} "
                         f"channel(s): give one value or one per channel")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}={value!r} must be finite")
    return np.broadcast_to(arr.reshape(-1), (channels,)).astype(np.float64)


def _affine(mean: Any, std: Any, scale: Any, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(x - mean) / std * scale as x * a + b, per channel."""
    m = _per_channel("mean", mean, channels, 0.0)
    s = _per_channel("std", std, channels, 1.0)
    k = _per_channel("scale", scale, channels, 1.0)
    zero = np.flatnonzero(s == 0)
    if zero.size:
        raise ValueError(f"std[{zero[0]}] is 0: cannot divide by a zero standard deviation")
    a = k / s
    return a.astype(np.float32), (-m * a).astype(np.float32)


@dataclass(frozen=True)
class _Batch:
    """Everything the kernel needs, decided before it runs."""

    n: int
    pixels: int
    channels: int
    src_channels_last: bool
    dst_channels_last: bool
    src_code: int
    dst_code: int
    src_dtype: np.dtype
    out_dtype: np.dtype
    out_shape: tuple[int, ...]
    scale: np.ndarray | None
    shift: np.ndarray | None
    plan: LayoutPlan | None
    num_threads: int
    unit_bytes: int
    isa: str

    @property
    def sample_nbytes(self) -> int:
        return self.pixels * self.channels * self.src_dtype.itemsize

    def prepare_out(self, out: Any) -> np.ndarray:
        if out is None:
            return np.empty(self.out_shape, dtype=self.out_dtype)
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a numpy array, not {type(out).__name__}")
        if out.dtype != self.out_dtype:
            raise TypeError(f"out has dtype {out.dtype}, the batch is {self.out_dtype}")
        if out.shape != self.out_shape:
            raise ValueError(f"out has shape {out.shape}, the batch is {self.out_shape}")
        if not out.flags.writeable:
            raise ValueError("out is read-only")
        if not (out.flags.c_contiguous and out.flags.aligned):
            raise ValueError("out must be C-contiguous and aligned")
        return out

    def run(self, samples: Any, slab: Any, offsets: np.ndarray | None, out: np.ndarray,
            stats: dict | None) -> np.ndarray:
        if out.size == 0:  # nothing to move (no samples, or an empty dimension)
            if stats is not None:
                stats.update(work_units=0, unit_bytes=0, threads=0, isa=None,
                             transposed=False, kernel_layout=self.plan and self.plan.kernel_layout)
            return out
        info = _collate.collate_native(
            samples, slab, offsets, out, self.n, self.pixels, self.channels,
            self.src_channels_last, self.dst_channels_last, self.src_code, self.dst_code,
            self.src_dtype.itemsize, self.src_dtype.itemsize, self.out_dtype.itemsize,
            self.scale, self.shift, self.unit_bytes, self.num_threads, self.isa,
        )
        if stats is not None:
            stats.update(info)
            stats["kernel_layout"] = self.plan.kernel_layout if self.plan else None
        return out


def _plan_batch(n: int, sample_shape: tuple[int, ...], src_dtype: np.dtype, *, layout: str,
                memory_format: str | None, consumer: str, dtype: Any, mean: Any, std: Any,
                scale: Any, num_threads: Any, collate_buffer_size: Any, isa: str) -> _Batch:
    num_threads = _check_count("num_threads", num_threads)
    unit_bytes = _check_count("collate_buffer_size", collate_buffer_size)
    _check_choice("isa", isa, ISAS)
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
        out_shape: tuple[int, ...] = (n, h, w, c) if dst_cl else (n, c, h, w)
    else:
        # Not an image: gathered as one channel, without layout conversion.
        plan = None
        src_cl = dst_cl = True
        pixels, channels = int(np.prod(sample_shape, dtype=np.int64)), 1
        out_shape = (n, *sample_shape)
    normalised = mean is not None or std is not None or scale is not None
    out_dt = _output_dtype(src_dtype, dtype, normalised)
    src_code, dst_code = _kernel_dtypes(src_dtype, out_dt, normalised)
    scale_arr = shift_arr = None
    if src_code != _collate.DT_RAW:
        scale_arr, shift_arr = _affine(mean, std, scale, max(channels, 1))
    return _Batch(
        n=n, pixels=pixels, channels=channels, src_channels_last=src_cl,
        dst_channels_last=dst_cl, src_code=src_code, dst_code=dst_code, src_dtype=src_dtype,
        # bfloat16 (the one str dtype) is held as its uint16 bits.
        out_dtype=np.dtype(np.uint16) if isinstance(out_dt, str) else out_dt, out_shape=out_shape,
        scale=scale_arr, shift=shift_arr, plan=plan, num_threads=num_threads,
        unit_bytes=unit_bytes, isa=isa,
    )


def _sample_arrays(samples: Sequence[Any]) -> list[np.ndarray]:
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
        (see :func:`choose_layout`) or None (keep the stored layout).
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
    arrays = _sample_arrays(samples)
    batch = _plan_batch(
        len(arrays), arrays[0].shape, arrays[0].dtype, layout=layout,
        memory_format=memory_format, consumer=consumer, dtype=dtype, mean=mean, std=std,
        scale=scale, num_threads=num_threads, collate_buffer_size=collate_buffer_size, isa=isa,
    )
    # the bridge checks that out overlaps no sample (pointer ranges, before the kernel)
    return batch.run(arrays, None, None, batch.prepare_out(out), stats)


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
    batch = _plan_batch(
        offs.size, shape, src_dt, layout=layout, memory_format=memory_format,
        consumer=consumer, dtype=dtype, mean=mean, std=std, scale=scale,
        num_threads=num_threads, collate_buffer_size=collate_buffer_size, isa=isa,
    )
    outside = np.flatnonzero((offs < 0) | (offs > view.nbytes - batch.sample_nbytes))
    if outside.size:
        i = int(outside[0])
        raise ValueError(f"sample {i} at byte offset {offs[i]} (+{batch.sample_nbytes} bytes) "
                         f"lies outside src ({view.nbytes} bytes)")
    return batch.run(None, src, offs, batch.prepare_out(out), stats)


def collate_ragged(
    samples: Sequence[Any], *, num_threads: int = 0, collate_buffer_size: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Pack byte strings of different lengths into one buffer.

    Returns ``(packed, offsets)``: a uint8 array holding every sample's bytes
    back to back, and int64 offsets of length N + 1 (sample i is
    ``packed[offsets[i]:offsets[i + 1]]``). Samples are bytes-like objects;
    arrays contribute their bytes in C order.
    """
    num_threads = _check_count("num_threads", num_threads)
    unit_bytes = _check_count("collate_buffer_size", collate_buffer_size)
    if isinstance(samples, (str, bytes, bytearray, memoryview)) or not hasattr(samples, "__len__"):
        raise TypeError(f"samples must be a sequence of bytes-like objects, not "
                        f"{type(samples).__name__}")
    items = [np.ascontiguousarray(s) if isinstance(s, np.ndarray) else s for s in samples]
    for i, item in enumerate(items):
        if isinstance(item, np.ndarray) and item.dtype.hasobject:
            # numpy exports object arrays as raw PyObject pointers: never bytes of data
            raise TypeError(f"sample {i} has dtype {item.dtype}: it holds Python objects, not bytes")
    return _collate.gather_ragged(items, num_threads, unit_bytes)


class _CallableModule(types.ModuleType):
    """Lets ``fastload.collate(...)`` call :func:`collate` while
    ``fastload.collate.collate_slab`` and friends stay reachable."""

    def __call__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return collate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
