"""The PyTorch side of fastload, by the names users import from here.

``import fastload`` never imports this module (nor torch). The code lives in
:mod:`fastload.batch.torch_output` (batches as tensors, device copies) and
:mod:`fastload.adapters` (``TorchIterableDataset``, ``TorchCollate``, the
shared-memory slots between torch's workers and the main process).
"""

from fastload.adapters.torch_collate import TorchCollate, collate_fn
from fastload.adapters.torch_dataset import TorchIterableDataset
from fastload.adapters.torch_slots import SharedMemoryFull, SlotSender, worker_sender
from fastload.batch.torch_output import (
    TorchOutput,
    cuda_usable,
    guard_copy,
    pooled_buffer,
    warn_pin_without_cuda,
)

__all__ = [
    "SharedMemoryFull",
    "SlotSender",
    "TorchCollate",
    "TorchIterableDataset",
    "TorchOutput",
    "collate_fn",
    "cuda_usable",
    "guard_copy",
    "pooled_buffer",
    "warn_pin_without_cuda",
    "worker_sender",
]
