"""Hand fastload batches to other frameworks.

Batches of the numpy consumer are numpy arrays, and those of the torch
consumer torch tensors: both export DLPack (``__dlpack__``,
``__dlpack_device__``), so ``torch.from_dlpack``, ``jax.dlpack.from_dlpack``
and ``tf.experimental.dlpack.from_dlpack`` take them without a copy (cupy too, for the
GPU batches of ``device="cuda"``: it takes device memory only). The
consumer's array keeps the DLPack capsule, the capsule keeps the batch's
array, and the array keeps the pooled buffer busy: the loader never
overwrites memory another framework still views.

Frameworks are imported only inside the helper that needs them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from fastload.batch.ragged import RaggedBatch
from fastload.loop.loader import DataLoader

Signature = tuple[tuple[tuple[int | None, ...], np.dtype], ...]


def map_batch(batch: Any, fn: Callable[[Any], Any]) -> Any:
    """Apply ``fn`` to every array of a batch: ``x``, ``(x, y)`` or a RaggedBatch."""
    if isinstance(batch, RaggedBatch):
        return batch.with_arrays(fn(batch.data), fn(batch.offsets))
    if isinstance(batch, tuple):
        return tuple(map_batch(part, fn) for part in batch)
    if isinstance(batch, np.ndarray) and batch.dtype.kind not in "biufc":
        return batch  # strings / objects have no DLPack form
    return fn(batch)


def batch_signature(loader: DataLoader) -> Signature:
    """``((shape, dtype), ...)`` of one batch's ``x`` (and ``y``), the batch dimension None.

    Known without reading when samples have one shape and no transform runs;
    otherwise a ValueError says to pass the signature explicitly.
    """
    plan = loader.collate_plan
    if plan is None or loader.transforms_on:
        why = "ragged samples" if plan is None else "a transform that may change the shape"
        raise ValueError(
            f"the batch shape is not known before reading ({why}): pass output_signature explicitly"
        )
    sig: list[tuple[tuple[int | None, ...], np.dtype]] = [
        ((None, *plan.out_sample_shape), plan.out_dtype)
    ]
    if loader.dataset.has_labels:
        y = loader.dataset.labels_for(np.zeros(1, dtype=np.int64))
        assert y is not None
        sig.append(((None, *y.shape[1:]), y.dtype))
    return tuple(sig)


def tf_dataset(loader: DataLoader, output_signature: Any = None) -> Any:
    """A ``tf.data.Dataset`` over ``loader``'s batches (``from_generator``): each pass over
    the dataset is one epoch of the loader. ``output_signature`` defaults to
    :func:`batch_signature` as ``tf.TensorSpec``s."""
    import tensorflow as tf

    if loader.consumer != "numpy":
        raise ValueError(
            f"tf_dataset needs a loader with consumer='numpy', not {loader.consumer!r}"
        )
    if output_signature is None:
        specs = tuple(
            tf.TensorSpec(shape=shape, dtype=tf.as_dtype(dtype))
            for shape, dtype in batch_signature(loader)
        )
        output_signature = specs[0] if len(specs) == 1 else specs

    def batches() -> Iterator[Any]:
        yield from loader

    return tf.data.Dataset.from_generator(batches, output_signature=output_signature)


def to_jax(array: Any, device: Any = None) -> Any:
    """A JAX array over ``array``'s memory through DLPack (no copy on the host);
    ``device``: then ``jax.device_put`` it there."""
    import jax
    import jax.dlpack

    out = jax.dlpack.from_dlpack(array)
    return out if device is None else jax.device_put(out, device)


def jax_batches(loader: DataLoader, device: Any = None) -> Iterator[Any]:
    """One epoch of ``loader`` as JAX arrays (``x`` or ``(x, y)``), zero-copy on the host."""
    for batch in loader:
        yield map_batch(batch, lambda a: to_jax(a, device))


__all__ = ["batch_signature", "jax_batches", "map_batch", "tf_dataset", "to_jax"]
