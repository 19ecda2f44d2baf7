"""The torch output stage: the loader's numpy batches as torch tensors, pinned buffers,
asynchronous device copies.

The loader imports this module (and so torch) only for ``consumer="torch"``.
Tensors are zero-copy views of the loader's pooled buffers: NCHW, or torch's
``channels_last`` (an NCHW-shaped tensor with NHWC strides over NHWC memory, no
transposition) as ``memory_format`` says. With a CUDA ``device`` each batch is copied
on a side stream (``non_blocking``: without waiting for the copy), the stream the
DataLoader was made on waits for the copy before any later work, and the pooled host
buffer is reused only after the copy's event has completed (a busy hook in the pool).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from fastload._native.buffer import AlignedBuffer
from fastload.batch.layout import LAYOUTS, choose_layout
from fastload.batch.ragged import RaggedBatch
from fastload.batch.torch_view import BF16, as_torch
from fastload.storage.buffer_pool import BufferPool

_warn_lock = threading.Lock()
_pin_warned = False


def cuda_usable() -> bool:
    """True when torch can use a CUDA device in this process."""
    return torch.cuda.is_available()


def warn_pin_without_cuda() -> bool:
    """Warn, once per process as torch's DataLoader does, that ``pin_memory`` has no
    CUDA device to serve. Returns True when this call warned."""
    global _pin_warned
    with _warn_lock:
        if _pin_warned:
            return False
        _pin_warned = True
    warnings.warn(
        "fastload: pin_memory=True but no CUDA device is available, so batches are not "
        "CUDA-pinned (the loader's pin_mode says what the OS granted instead); loading goes on",
        UserWarning,
        stacklevel=4,
    )
    return True


def pooled_buffer(array: Any) -> AlignedBuffer | None:
    """The AlignedBuffer whose memory ``array`` views (following ``.base``), or None."""
    obj = array
    while obj is not None:
        if isinstance(obj, AlignedBuffer):
            return obj
        obj = obj.obj if isinstance(obj, memoryview) else getattr(obj, "base", None)
    return None


def is_bf16(dtype: Any) -> bool:
    return isinstance(dtype, str) and dtype.lower() == BF16


def _labels_tensor(y: np.ndarray) -> Any:
    """Numeric labels as a tensor; others (strings, objects) stay numpy."""
    return torch.from_numpy(np.ascontiguousarray(y)) if y.dtype.kind in "biufc" else y


class TorchOutput:
    """Turns the DataLoader's numpy batches into torch tensors (``consumer="torch"``).

    ``layout``: how the dataset stores images ("HWC", "CHW"; anything else:
    not images, no layout view). ``dtype``: the loader's output dtype
    ("bfloat16" reinterprets the kernel's uint16 bits). ``device``: where
    batches go (None: stay on the host as views of the pooled buffers).
    """

    def __init__(
        self,
        memory_format: str,
        layout: str,
        dtype: Any = None,
        device: Any = None,
        *,
        pin_memory: bool = False,
        non_blocking: bool = False,
    ) -> None:
        self.plan = choose_layout(memory_format, layout, "torch") if layout in LAYOUTS else None
        self.bf16 = is_bf16(dtype)
        self.non_blocking = non_blocking
        self.device = None if device is None else torch.device(device)
        if self.device is not None and self.device.type == "cuda" and not cuda_usable():
            raise RuntimeError(
                f"device={device!r}: torch sees no CUDA device (torch.cuda.is_available() is False)"
            )
        if pin_memory and not cuda_usable():
            warn_pin_without_cuda()
        self.copy_stream: Any = None
        self.consumer_stream: Any = None
        if self.device is not None and self.device.type == "cuda":
            # Batches must be ready for work on the stream current where the loader was made.
            self.consumer_stream = torch.cuda.current_stream(self.device)
            self.copy_stream = torch.cuda.Stream(self.device)

    def tensor(self, x: np.ndarray) -> Any:
        """A host tensor viewing ``x`` (channels_last view for a 4-D batch when asked)."""
        plan = self.plan if x.ndim == 4 else None
        return as_torch(x, plan, dtype=BF16 if self.bf16 and x.dtype == np.uint16 else None)

    def __call__(self, x: Any, y: np.ndarray | None, pool: BufferPool) -> Any:
        """Batch ``x`` (an array or a RaggedBatch) and labels ``y`` as tensors (on ``device``)."""
        if isinstance(x, RaggedBatch):
            arrays = [x.data]
            out: list[Any] = [torch.from_numpy(x.data)]
        else:
            arrays = [x]
            out = [self.tensor(x)]
        if y is not None:
            out.append(_labels_tensor(y))
        if self.device is not None:
            out = self.to_device(out, arrays, pool)
        batch = (
            x.with_arrays(out[0], torch.from_numpy(x.offsets))
            if isinstance(x, RaggedBatch)
            else out[0]
        )
        return batch if y is None else (batch, out[1])

    def to_device(
        self, tensors: list[Any], arrays: list[np.ndarray], pool: BufferPool
    ) -> list[Any]:
        """Copy ``tensors`` to the device; pooled buffers stay busy until the copy is done."""
        assert self.device is not None
        if self.copy_stream is None:
            return [t.to(self.device) if isinstance(t, torch.Tensor) else t for t in tensors]
        with torch.cuda.stream(self.copy_stream):
            moved = [
                t.to(self.device, non_blocking=self.non_blocking)
                if isinstance(t, torch.Tensor)
                else t
                for t in tensors
            ]
            done = torch.cuda.Event()
            done.record(self.copy_stream)
        self.consumer_stream.wait_event(done)
        for t in moved:
            if isinstance(t, torch.Tensor):
                # The caching allocator must not hand this memory to the copy stream
                # again while the consumer's work on it is queued.
                t.record_stream(self.consumer_stream)
        guard_copy(pool, arrays, done.query)
        return moved


def guard_copy(pool: BufferPool, arrays: Sequence[np.ndarray], finished: Callable[[], bool]) -> int:
    """Keep the pooled buffers behind ``arrays`` from reuse until ``finished()`` is true.

    Call it while ``arrays`` are still alive (they keep the buffers busy until
    the hook is in place). Returns how many pooled buffers were guarded.
    """
    guarded = 0
    for a in arrays:
        buf = pooled_buffer(a)
        if buf is not None:
            pool.set_busy_hook(buf, lambda: not finished())
            guarded += 1
    return guarded


def torch_dtype(dtype: np.dtype | str) -> Any:
    """The torch dtype of a numpy dtype (or "bfloat16")."""
    if is_bf16(dtype):
        return torch.bfloat16
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype
