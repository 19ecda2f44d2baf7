"""Batches of samples with different lengths: one packed buffer and offsets."""

from __future__ import annotations

from typing import Any, NamedTuple


class RaggedBatch(NamedTuple):
    """Samples of different lengths packed back to back: sample ``i`` is
    ``data[offsets[i]:offsets[i + 1]]``."""

    # numpy arrays from the loader; the torch output stage and fastload.adapters.interop
    # put their framework's arrays (torch, jax, cupy ...) in the same two fields.
    data: Any
    offsets: Any

    def sample(self, i: int) -> Any:
        return self.data[self.offsets[i] : self.offsets[i + 1]]

    # Shadows tuple.count on purpose: callers (tests, benchmarks) read
    # ``batch.count`` as the number of samples, so the public name stays.
    @property
    def count(self) -> int:  # type: ignore[override]
        return len(self.offsets) - 1
