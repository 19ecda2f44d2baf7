"""fastload: feeds training loops from files, HTTP and S3 at the speed of the storage.

The package has three layers: C kernels (``csrc/``), their Cython bridges
(``fastload._native``) and the Python policy above them (``storage``, ``plan``,
``batch``, ``loop``, ``adapters``, ``app``). torch is never imported here:
``consumer="torch"`` and ``fastload.torch_adapter`` import it when used.
"""

import importlib as _importlib
import logging as _logging
import sys as _sys

# fastload.collate is a callable module: fastload.collate(samples, ...) and
# fastload.collate.collate_slab(...) both work.
from fastload import collate
from fastload._native.buffer import AlignedBuffer, cuda_available
from fastload.batch.collate import collate_ragged
from fastload.batch.ragged import RaggedBatch
from fastload.errors import (
    AccessDeniedError,
    FastloadError,
    ObjectNotFoundError,
    RangeError,
    ReadTimeoutError,
    TransferError,
    TransformError,
    WorkerError,
)
from fastload.images import ImageDecodeError, ImageFolder, ImageList, ImagePipeline
from fastload.loop.loader import DataLoader
from fastload.loop.workers import get_worker_info
from fastload.plan.datasets import Dataset, NpyDataset, ObjectDataset, RecordDataset
from fastload.plan.options import LoaderConfig, LoaderOptions, PyLoaderOptions
from fastload.plan.tar_shards import TarShardDataset
from fastload.storage.buffer_pool import BufferPool
from fastload.storage.engine import RangeEngine, read, read_many, read_ranges

# Where the policy modules lived before the layered tree: ``from fastload.samplers import
# ...`` and friends keep working (the same module objects, no copies). New code imports
# from the layer packages.
_MOVED = {
    "buffer_pool": "fastload.storage.buffer_pool",
    "datasets": "fastload.plan.datasets",
    "distributed": "fastload.plan.distributed",
    "engine": "fastload.storage.engine",
    "interop": "fastload.adapters.interop",
    "loader": "fastload.loop.loader",
    "options": "fastload.plan.options",
    "planner": "fastload.plan.planner",
    "samplers": "fastload.plan.samplers",
    "uri": "fastload.storage.uri",
    "workers": "fastload.loop.workers",
}
for _old, _new in _MOVED.items():
    _sys.modules[f"{__name__}.{_old}"] = globals()[_old] = _importlib.import_module(_new)
del _old, _new

# A library logs and lets the application decide where it goes (silent by default).
_logging.getLogger(__name__).addHandler(_logging.NullHandler())

__version__ = "0.1.0"


def filesystem(engine: RangeEngine | None = None, **options: object) -> object:
    """An fsspec filesystem on the engine (needs fsspec: ``pip install "fastload[fsspec]"``);
    see ``fastload.adapters.fsspec_fs``."""
    from fastload.adapters.fsspec_fs import filesystem as _filesystem

    return _filesystem(engine, **options)


__all__ = [
    "AccessDeniedError",
    "AlignedBuffer",
    "BufferPool",
    "DataLoader",
    "Dataset",
    "FastloadError",
    "ImageDecodeError",
    "ImageFolder",
    "ImageList",
    "ImagePipeline",
    "LoaderConfig",
    "LoaderOptions",
    "NpyDataset",
    "ObjectDataset",
    "ObjectNotFoundError",
    "PyLoaderOptions",
    "RaggedBatch",
    "RangeEngine",
    "RangeError",
    "ReadTimeoutError",
    "RecordDataset",
    "TarShardDataset",
    "TransferError",
    "TransformError",
    "WorkerError",
    "collate",
    "collate_ragged",
    "cuda_available",
    "filesystem",
    "get_worker_info",
    "read",
    "read_many",
    "read_ranges",
]
