"""fastload: feeds training loops from files, HTTP and S3 at the speed of the storage.

torch is never imported here: ``consumer="torch"`` and ``fastload.torch_adapter``
import it when used.
"""

# fastload.collate is a callable module: fastload.collate(samples, ...) and
# fastload.collate.collate_slab(...) both work.
from fastload import collate
from fastload._buffer import AlignedBuffer, cuda_available
from fastload.buffer_pool import BufferPool
from fastload.collate import collate_ragged
from fastload.datasets import Dataset, NpyDataset, ObjectDataset, RecordDataset
from fastload.engine import RangeEngine, read, read_ranges
from fastload.errors import (
    AccessDeniedError,
    FastloadError,
    ObjectNotFoundError,
    RangeError,
    ReadTimeoutError,
    TransferError,
)
from fastload.loader import DataLoader, RaggedBatch
from fastload.options import LoaderConfig, LoaderOptions, PyLoaderOptions
from fastload.workers import TransformError, WorkerError, get_worker_info

__version__ = "0.1.0"

__all__ = [
    "AccessDeniedError",
    "AlignedBuffer",
    "BufferPool",
    "DataLoader",
    "Dataset",
    "FastloadError",
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
    "TransferError",
    "TransformError",
    "WorkerError",
    "collate",
    "collate_ragged",
    "cuda_available",
    "get_worker_info",
    "read",
    "read_ranges",
]
