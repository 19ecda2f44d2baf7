"""Python datasets in ``fastload.DataLoader``: loaded by torch's own DataLoader.

A dataset that is no fastload :class:`~fastload.plan.datasets.Dataset` (a
``torch.utils.data.Dataset`` or ``IterableDataset`` subclass, or any object with
``__getitem__`` / ``__iter__``) has no byte ranges for fastload's engine to read: its
samples are whatever its Python code returns. So ``fastload.DataLoader(ds, ...)`` hands
it to ``torch.utils.data.DataLoader`` with the same arguments, and every torch meaning
holds as torch has it: argument checks and their exception types, ``len()``,
``default_collate`` / ``default_convert``, samplers, ``generator``, worker processes,
``get_worker_info()``, the sharding an iterable dataset does itself, worker errors,
``pin_memory`` (torch warns without an accelerator), several live iterators.

What fastload adds: an exception raised by a map-style dataset's ``__getitem__`` (or
``__getitems__``) keeps its type and its message names the index
(``... (fastload: raised by MyDataset[7])``), in this process and in workers; fastload's
own knobs (``dtype``, ``consumer``, ``part_size``, a ``LoaderOptions`` ...) are refused with
a ``TypeError`` naming them, since they act on the engine's reads, which such a dataset
does not have.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable
from typing import Any

# fastload.DataLoader's own keywords (besides the LoaderOptions knobs)
LOADER_KEYWORDS = (
    "options",
    "dtype",
    "mean",
    "std",
    "scale",
    "consumer",
    "engine",
    "device",
    "output",
    "progress",
    "transform",
)


def is_python_dataset(obj: Any) -> bool:
    """Whether ``obj`` is a dataset for torch's DataLoader (a path or URI is not: a user who
    meant a fastload dataset of it hears so)."""
    if isinstance(obj, (str, bytes, os.PathLike)):
        return False
    return hasattr(obj, "__getitem__") or hasattr(obj, "__iter__")


def _note(exc: BaseException, where: str) -> None:
    """Name ``where`` on ``exc`` without changing its ``args`` (a ``KeyError``'s is the key the
    caller may inspect): a note, shown in tracebacks and in torch's worker re-raise."""
    note = f"fastload: raised by {where}"
    if hasattr(exc, "add_note"):  # Python 3.11+
        if note not in getattr(exc, "__notes__", ()):
            exc.add_note(note)
        return
    args = exc.args  # Python 3.10: only a plain message is extended
    if len(args) == 1 and isinstance(args[0], str) and type(exc) not in (KeyError, OSError):
        if note not in args[0]:
            exc.args = (f"{args[0]} ({note})",)


class IndexedDataset:
    """A map-style dataset whose failures name the index (everything else is the dataset's)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __getitem__(self, index: Any) -> Any:
        try:
            return self.dataset[index]
        except Exception as exc:
            _note(exc, f"{type(self.dataset).__name__}[{index!r}]")
            raise

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # while unpickling, before __dict__ is back
            raise AttributeError(name)
        return getattr(self.dataset, name)


class IndexedBatchDataset(IndexedDataset):
    """:class:`IndexedDataset` of a dataset that fetches whole batches (``__getitems__``)."""

    def __getitems__(self, indices: Any) -> Any:
        try:
            return self.dataset.__getitems__(indices)
        except Exception as exc:
            shown = list(indices[:8]) if hasattr(indices, "__getitem__") else indices
            more = ", ..." if hasattr(indices, "__len__") and len(indices) > 8 else ""
            _note(exc, f"{type(self.dataset).__name__}.__getitems__({shown}{more})")
            raise


class WorkerStart:
    """The ``worker_init_fn`` torch runs in each worker: torch's ``get_worker_info().dataset``
    is the caller's dataset (the worker's copy), not the wrapper, and fastload's
    ``get_worker_info()`` answers too; then the caller's function."""

    def __init__(self, init_fn: Callable[[int], Any] | None) -> None:
        self.init_fn = init_fn

    def __call__(self, worker_id: int) -> None:
        import torch.utils.data

        from fastload.loop import workers

        info = torch.utils.data.get_worker_info()
        if info is not None:
            if isinstance(info.dataset, IndexedDataset):
                object.__setattr__(info, "dataset", info.dataset.dataset)  # WorkerInfo is frozen
            # fastload.get_worker_info() answers in these workers of a fastload.DataLoader too
            workers._worker_info = workers.WorkerInfo(
                info.id, info.num_workers, info.seed, os.getpid()
            )
        if self.init_fn is not None:
            self.init_fn(worker_id)


def torch_loader(
    dataset: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, Callable[[int], Any] | None]:
    """torch's DataLoader of ``dataset`` with torch's ``args`` / ``kwargs``, and the caller's
    ``worker_init_fn``; fastload's own knobs raise ``TypeError`` naming them."""
    try:
        import torch.utils.data
    except ImportError as exc:
        raise TypeError(
            f"DataLoader of a {type(dataset).__name__} (a Python dataset, not a fastload "
            "Dataset) loads through torch's DataLoader, and torch is not installed "
            '(pip install "fastload[torch]"); or use a fastload Dataset (RecordDataset, '
            "NpyDataset, ObjectDataset, ...)"
        ) from exc
    from fastload.plan.options import LoaderConfig, LoaderOptions

    name = type(dataset).__name__
    params = inspect.signature(torch.utils.data.DataLoader.__init__).parameters
    fastload_knobs = {f.name for f in dataclasses.fields(LoaderConfig)} | set(LOADER_KEYWORDS)
    own = sorted(k for k, v in kwargs.items() if k in fastload_knobs - set(params))
    own = [k for k in own if kwargs[k] is not None]
    if own:
        raise TypeError(
            f"DataLoader({name}, {', '.join(f'{k}=' for k in own)}): fastload's knobs act on "
            f"a fastload Dataset's reads (RecordDataset, NpyDataset, ...); a {name} is a "
            "Python dataset, loaded by torch's DataLoader, which takes torch's arguments only"
        )
    kwargs = {k: v for k, v in kwargs.items() if k not in fastload_knobs or k in params}
    if args and isinstance(args[0], LoaderOptions):
        raise TypeError(
            f"DataLoader({name}, LoaderOptions(...)): LoaderOptions configure a fastload "
            f"Dataset's reads; a {name} is a Python dataset, loaded by torch's DataLoader: "
            "pass torch's arguments (batch_size=, shuffle=, num_workers=, ...)"
        )
    bound = inspect.signature(torch.utils.data.DataLoader).bind(dataset, *args, **kwargs)
    call = bound.arguments
    from torch.utils.data.datapipes.datapipe import MapDataPipe

    if not isinstance(dataset, (torch.utils.data.IterableDataset, MapDataPipe)) and hasattr(
        dataset, "__getitem__"
    ):
        batched = hasattr(dataset, "__getitems__") and dataset.__getitems__
        call["dataset"] = (IndexedBatchDataset if batched else IndexedDataset)(dataset)
    user_init = call.get("worker_init_fn")
    if user_init is None or callable(user_init):  # torch's own error for the others
        call["worker_init_fn"] = WorkerStart(user_init)
    return torch.utils.data.DataLoader(*bound.args, **bound.kwargs), user_init


__all__ = [
    "LOADER_KEYWORDS",
    "IndexedBatchDataset",
    "IndexedDataset",
    "WorkerStart",
    "is_python_dataset",
    "torch_loader",
]
