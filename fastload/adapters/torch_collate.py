"""A ``collate_fn`` for ``torch.utils.data.DataLoader`` built on fastload's collate kernel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.utils.data

from fastload.adapters.torch_slots import SharedTuple, dense, warn_once_shm, worker_sender
from fastload.batch.collate import CollatePlan, plan_collate, sample_arrays
from fastload.batch.layout import choose_layout
from fastload.batch.torch_output import torch_dtype
from fastload.batch.torch_view import BF16
from fastload.errors import SharedMemoryFull


class TorchCollate:
    """A ``collate_fn`` for ``torch.utils.data.DataLoader`` built on fastload's collate kernel.

    Samples (arrays or CPU tensors of one shape), or tuples whose first item
    is one (the rest go through torch's ``default_collate``), become one
    batch tensor in one native pass: layout change (``memory_format``, as
    :func:`fastload.batch.layout.choose_layout` for torch), dtype conversion and
    per-channel ``(x - mean) / std * scale``. Inside a torch worker the batch
    is written straight into shared memory, as ``default_collate`` does, so
    handing it to the main process copies nothing.
    """

    def __init__(
        self,
        *,
        layout: str = "HWC",
        memory_format: str | None = "auto",
        dtype: Any = None,
        mean: Any = None,
        std: Any = None,
        scale: Any = None,
        num_threads: int = 0,
    ) -> None:
        self.plan = choose_layout(memory_format, layout, "torch")  # checks the knobs now
        self.kernel_args: dict[str, Any] = {
            "layout": layout,
            "memory_format": memory_format,
            "dtype": dtype,
            "mean": mean,
            "std": std,
            "scale": scale,
            "num_threads": num_threads,
            "consumer": "torch",
        }
        self._plans: dict[tuple[tuple[int, ...], np.dtype], CollatePlan] = {}

    def _plan(self, shape: tuple[int, ...], dtype: np.dtype) -> CollatePlan:
        """The collate plan of samples of ``shape`` and ``dtype`` (decided once per shape)."""
        plan = self._plans.get((shape, dtype))
        if plan is None:
            plan = self._plans[(shape, dtype)] = plan_collate(shape, dtype, **self.kernel_args)
        return plan

    def __call__(self, batch: Sequence[Any]) -> Any:
        if len(batch) == 0:
            raise ValueError("TorchCollate: empty batch")
        if isinstance(batch[0], (tuple, list)):
            columns = list(zip(*batch, strict=True))
            rest = [torch.utils.data.default_collate(list(c)) for c in columns[1:]]
            return self._batch(columns[0], rest)
        return self._batch(batch, None)

    def _batch(self, samples: Sequence[Any], rest: list[Any] | None) -> Any:
        arrays = sample_arrays([s.numpy() if isinstance(s, torch.Tensor) else s for s in samples])
        plan = self._plan(arrays[0].shape, arrays[0].dtype)
        nbytes = len(arrays) * plan.out_sample_nbytes
        in_worker = torch.utils.data.get_worker_info() is not None
        if in_worker and rest is not None and all(isinstance(r, torch.Tensor) for r in rest):
            # The whole batch in one slot, the kernel writing straight into it.
            rest = [dense(r) for r in rest]
            try:
                res = worker_sender().reserve(rest, first_nbytes=nbytes)
            except SharedMemoryFull as exc:
                warn_once_shm(exc)
            else:
                x = self._collate_into(res.slot[:nbytes], arrays, plan)
                out = SharedTuple((x, *[res.place(i + 1, r) for i, r in enumerate(rest)]))
                out.res = res
                return out
        if in_worker:  # shared memory, as default_collate does, so torch need not copy
            raw = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(nbytes))
        else:
            raw = torch.empty(nbytes, dtype=torch.uint8)
        x = self._collate_into(raw, arrays, plan)
        return x if rest is None else (x, *rest)

    def _collate_into(self, raw: Any, arrays: list[np.ndarray], plan: CollatePlan) -> Any:
        """Run the kernel into the uint8 tensor ``raw``; the batch tensor viewing it."""
        shape = plan.out_shape(len(arrays))
        plan.run_samples(arrays, raw.numpy().view(plan.out_dtype).reshape(shape))
        tensor = raw.view(torch_dtype(BF16 if plan.bf16 else plan.out_dtype)).view(shape)
        if self.plan.torch_channels_last and tensor.dim() == 4:
            tensor = tensor.permute(0, 3, 1, 2)
        return tensor


def collate_fn(**kernel_args: Any) -> TorchCollate:
    """``TorchCollate(**kernel_args)``: ``DataLoader(ds, collate_fn=collate_fn(memory_format=...))``."""
    return TorchCollate(**kernel_args)
