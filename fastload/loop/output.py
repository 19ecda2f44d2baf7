"""Output stages: what a finished batch becomes for its consumer.

The loader calls its stage once per batch with the batch (an array or a RaggedBatch),
its labels (or None) and the pool the batch's buffers came from. ``consumer="numpy"``
hands the arrays back as they are; ``consumer="torch"`` uses
:class:`fastload.batch.torch_output.TorchOutput` (imported, with torch, only then).
Any object with the same call can be given as ``DataLoader(..., output=stage)``.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from fastload.batch.layout import CONSUMERS
from fastload.checks import check_choice
from fastload.plan.options import LoaderConfig
from fastload.storage.buffer_pool import BufferPool


class OutputStage(Protocol):
    def __call__(self, x: Any, y: np.ndarray | None, pool: BufferPool) -> Any: ...


class NumpyOutput:
    """Batches as numpy arrays: ``x``, or ``(x, y)`` with labels."""

    def __call__(self, x: Any, y: np.ndarray | None, pool: BufferPool) -> Any:
        return x if y is None else (x, y)


LOADER_CONSUMERS = ("numpy", "torch")


def make_output(
    consumer: str, config: LoaderConfig, layout: str, dtype: Any, device: Any
) -> OutputStage:
    """The output stage ``consumer`` names, for a loader with ``config``."""
    check_choice("consumer", consumer, tuple(c for c in CONSUMERS if c in LOADER_CONSUMERS))
    if device is not None and consumer != "torch":
        raise ValueError(f"device={device!r} needs consumer='torch', not {consumer!r}")
    if consumer == "torch":
        from fastload.batch.torch_output import TorchOutput  # torch loads only when asked for

        return TorchOutput(
            config.memory_format,
            layout,
            dtype,
            device,
            pin_memory=config.pin_memory,
            non_blocking=config.non_blocking,
        )
    return NumpyOutput()
