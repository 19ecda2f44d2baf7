"""fastload: feeds training loops from files, HTTP and S3 at the speed of the storage."""

from fastload._buffer import AlignedBuffer, cuda_available
from fastload.engine import RangeEngine, read, read_ranges
from fastload.errors import (
    AccessDeniedError,
    FastloadError,
    ObjectNotFoundError,
    RangeError,
    ReadTimeoutError,
    TransferError,
)
from fastload.options import LoaderConfig, LoaderOptions, PyLoaderOptions

__version__ = "0.1.0"

__all__ = [
    "AccessDeniedError",
    "AlignedBuffer",
    "FastloadError",
    "ObjectNotFoundError",
    "RangeEngine",
    "RangeError",
    "ReadTimeoutError",
    "TransferError",
    "cuda_available",
    "read",
    "read_ranges",
    "LoaderConfig",
    "LoaderOptions",
    "PyLoaderOptions",
]

# Collate kernel (issue 4): fastload.collate is a callable module, so both
# fastload.collate(samples, ...) and fastload.collate.collate_slab(...) work.
from fastload import collate  # noqa: E402
from fastload.collate import collate_ragged  # noqa: E402

__all__ += ["collate", "collate_ragged"]

# Datasets and the DataLoader (issue 5).
from fastload.buffer_pool import BufferPool  # noqa: E402
from fastload.datasets import Dataset, NpyDataset, ObjectDataset, RecordDataset  # noqa: E402
from fastload.loader import DataLoader, RaggedBatch  # noqa: E402
from fastload.workers import WorkerError, get_worker_info  # noqa: E402

__all__ += ["BufferPool", "DataLoader", "Dataset", "NpyDataset", "ObjectDataset", "RaggedBatch",
            "RecordDataset", "WorkerError", "get_worker_info"]

from fastload.workers import TransformError  # noqa: E402

__all__ += ["TransformError"]
