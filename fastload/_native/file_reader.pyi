# Types of the compiled fastload._native.file_reader (fastload/_native/file_reader.pyx), for py.typed users.
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

class CancelToken:
    def __init__(self) -> None: ...
    def cancel(self) -> None: ...
    @property
    def cancelled(self) -> bool: ...

INLINE_MAX_BYTES: int
DIRECT_MIN_PART: int

def set_thread_budget(nthreads: int) -> int: ...
def thread_budget() -> int: ...

class FileReader:
    max_open_files: int
    def __init__(self, max_open_files: int = 256) -> None: ...
    def close(self) -> None: ...
    def stats(self) -> dict[str, int]: ...

def file_size(path: str, uri: str) -> int: ...
def read_file_ranges(
    paths: list[str],
    uris: Sequence[str],
    ranges: npt.NDArray[np.int64],
    out: Any,
    part_size: int,
    max_inflight: int,
    direct: bool,
    cache_mode: int,
    cancel: CancelToken | None = None,
    timeout: float = 0.0,
    reader: FileReader | None = None,
    cache_fit: int = 0,
) -> int: ...
def plain_format_fault(fmt: str) -> str | None: ...
