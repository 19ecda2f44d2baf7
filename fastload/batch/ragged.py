"""Batches of samples with different lengths: one packed buffer and offsets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, overload

import numpy as np


class RaggedBatch:
    """Samples of different lengths packed back to back: sample ``i`` is
    ``data[offsets[i]:offsets[i + 1]]``.

    A sequence of its samples, as s3dlio's loaders give them: ``len(batch)`` is the number
    of samples, ``batch[i]`` / ``for sample in batch`` a zero-copy view of one sample (a
    ``memoryview`` of a numpy byte buffer, so it compares equal to ``bytes``; a slice of
    ``data`` for other arrays, e.g. torch tensors). ``.data`` and ``.offsets`` stay the
    packed form; ``sample(i)`` the sample as a slice of ``data`` (a numpy array).

    ``shapes`` ((n, ndim) ints, or None) is set when the batch knows its samples' shapes
    (decoded images: (H, W, C) or (C, H, W)); then ``sample(i)``, ``batch[i]`` and iteration
    give each sample as an array of its shape.
    """

    __slots__ = ("data", "offsets", "shapes")

    # numpy arrays from the loader; the torch output stage and fastload.adapters.interop
    # put their framework's arrays (torch, jax, cupy ...) in the same fields.
    def __init__(self, data: Any, offsets: Any, shapes: Any = None) -> None:
        self.data = data
        self.offsets = offsets
        self.shapes = shapes

    def with_arrays(self, data: Any, offsets: Any) -> RaggedBatch:
        """The same batch over other arrays (another framework's), keeping the shapes."""
        return RaggedBatch(data, offsets, self.shapes)

    def sample(self, i: int) -> Any:
        flat = self.data[self.offsets[i] : self.offsets[i + 1]]
        if self.shapes is None:
            return flat
        return flat.reshape(tuple(int(d) for d in self.shapes[i]))

    @property
    def count(self) -> int:
        """The number of samples (``len(batch)``)."""
        return len(self.offsets) - 1

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def _bounds(self) -> list[int]:
        off = self.offsets
        return off.tolist() if hasattr(off, "tolist") else list(off)

    def _view(self, a: int, b: int) -> Any:
        data = self.data
        if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 1:
            return memoryview(data[a:b])  # type: ignore[arg-type]  # numpy's stubs lag the buffer protocol
        return data[a:b]

    @overload
    def __getitem__(self, i: int) -> Any: ...

    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...

    def __getitem__(self, i: int | slice) -> Any:
        n = len(self)
        if isinstance(i, slice):
            if self.shapes is not None:
                return [self.sample(k) for k in range(*i.indices(n))]
            bounds = self._bounds()
            return [self._view(bounds[k], bounds[k + 1]) for k in range(*i.indices(n))]
        k = int(i)  # numpy integers index too
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(f"RaggedBatch index {i} out of range for {n} samples")
        if self.shapes is not None:
            return self.sample(k)
        return self._view(int(self.offsets[k]), int(self.offsets[k + 1]))

    def __iter__(self) -> Iterator[Any]:
        if self.shapes is not None:
            for k in range(len(self)):
                yield self.sample(k)
            return
        bounds = self._bounds()
        for k in range(len(bounds) - 1):
            yield self._view(bounds[k], bounds[k + 1])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RaggedBatch):
            return NotImplemented
        return _same(self.data, other.data) and _same(self.offsets, other.offsets)

    __hash__ = None  # type: ignore[assignment]  # holds mutable arrays

    def __repr__(self) -> str:
        nbytes = getattr(self.data, "nbytes", None)
        size = f", {nbytes} bytes" if nbytes is not None else ""
        return f"RaggedBatch({len(self)} samples{size})"


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    except (TypeError, ValueError, RuntimeError):
        return bool(a == b)
