"""Numpy reference of every collate kernel variant, written from the spec, not the kernel.

The C kernel (fastload.batch.collate) is tested against these functions: exactly for
copies and integer outputs, within rounding for float outputs (see
``float_tolerance``). ``make_samples`` draws the samples the tests feed both.
"""

from __future__ import annotations

import numpy as np

# memory_format x consumer -> layout the batch is stored in, for HWC and CHW samples
# (issue 4: auto keeps the stored layout for numpy, NCHW for torch, NHWC for TF/JAX;
# None never converts; torch channels_last = NHWC memory viewed as NCHW).
SPEC_KERNEL_LAYOUT = {
    # (memory_format, consumer): {stored: kernel layout}
    ("auto", "numpy"): {"HWC": "NHWC", "CHW": "NCHW"},
    ("auto", "torch"): {"HWC": "NCHW", "CHW": "NCHW"},
    ("auto", "tensorflow"): {"HWC": "NHWC", "CHW": "NHWC"},
    ("auto", "jax"): {"HWC": "NHWC", "CHW": "NHWC"},
}
for _consumer in ("numpy", "torch", "tensorflow", "jax"):
    SPEC_KERNEL_LAYOUT[(None, _consumer)] = {"HWC": "NHWC", "CHW": "NCHW"}
    SPEC_KERNEL_LAYOUT[("channels_first", _consumer)] = {"HWC": "NCHW", "CHW": "NCHW"}
    SPEC_KERNEL_LAYOUT[("channels_last", _consumer)] = {"HWC": "NHWC", "CHW": "NHWC"}


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), round to nearest even, NaN -> 0x7fc0."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


def bf16_to_float(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def affine_terms(channels: int, mean, std, scale) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (a, b) in float64 so that (x - mean) / std * scale == x * a + b."""

    def per_channel(v, default):
        arr = (
            np.full(channels, default, dtype=np.float64) if v is None else np.asarray(v, np.float64)
        )
        return np.broadcast_to(arr.reshape(-1), (channels,))

    m, s, k = per_channel(mean, 0.0), per_channel(std, 1.0), per_channel(scale, 1.0)
    return k / s, -m * k / s


def stack_in_layout(samples, stored: str, kernel_layout: str | None) -> np.ndarray:
    """np.stack the samples and transpose them to the kernel layout."""
    batch = np.stack([np.asarray(s) for s in samples])
    if batch.ndim != 4 or kernel_layout is None or kernel_layout == "N" + stored:
        return batch
    return batch.transpose(0, 3, 1, 2) if stored == "HWC" else batch.transpose(0, 2, 3, 1)


def channel_axis(ndim: int, kernel_layout: str | None) -> int | None:
    if ndim != 4 or kernel_layout is None:
        return None
    return 1 if kernel_layout == "NCHW" else 3


def reference_collate(
    samples,
    *,
    stored: str = "HWC",
    kernel_layout: str | None = None,
    out_dtype=None,
    mean=None,
    std=None,
    scale=None,
):
    """The batch the kernel must produce.

    Returns (expected, exact, bound): ``expected`` in the output dtype
    (bfloat16 as uint16 bits); ``exact`` the float64 values before the final
    rounding and ``bound`` how far the kernel's float32 ``x * a + b`` (a, b
    rounded to float32, maybe fused) may stray from them: 4 ulp of the terms.
    Copies and integer outputs must match exactly (exact and bound are None).
    """
    batch = stack_in_layout(samples, stored, kernel_layout)
    normalised = mean is not None or std is not None or scale is not None
    if out_dtype is None:
        out_dtype = np.float32 if normalised and batch.dtype.kind != "f" else batch.dtype
    bf16 = isinstance(out_dtype, str) and out_dtype == "bfloat16"
    if not bf16 and np.dtype(out_dtype) == batch.dtype and not normalised:
        return batch.copy(), None, None
    if not bf16 and np.dtype(out_dtype).kind in "ui":
        return batch.astype(out_dtype), None, None
    axis = channel_axis(batch.ndim, kernel_layout)
    channels = batch.shape[axis] if axis is not None else 1
    a, b = affine_terms(channels, mean, std, scale)
    shape = [1] * batch.ndim
    if axis is not None:
        shape[axis] = channels
    term = batch.astype(np.float64) * a.reshape(shape)
    exact = term + b.reshape(shape)
    bound = 4 * np.finfo(np.float32).eps * (np.abs(term) + np.abs(b.reshape(shape)))
    with np.errstate(over="ignore"):  # uint16 -> float16 overflows to inf, as it should
        if bf16:
            return bf16_bits(exact.astype(np.float32)), exact, bound
        return exact.astype(out_dtype), exact, bound


def reference_ragged(samples) -> tuple[np.ndarray, np.ndarray]:
    """(packed bytes, offsets of length N + 1)."""
    blobs = [
        np.ascontiguousarray(s).tobytes() if isinstance(s, np.ndarray) else bytes(s)
        for s in samples
    ]
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    return np.frombuffer(b"".join(blobs), dtype=np.uint8).copy(), offsets


def make_samples(rng, n, shape, dtype, *, big=False):
    dtype = np.dtype(dtype)
    if dtype.kind == "u":
        hi = np.iinfo(dtype).max + 1
        return [rng.integers(0, hi, shape, dtype=dtype) for _ in range(n)]
    spread = 1e4 if big else 300.0
    return [(rng.standard_normal(shape) * spread).astype(dtype) for _ in range(n)]
