# Types of the compiled fastload._native.file_reader (fastload/_native/file_reader.pyx), for py.typed users.
from typing import Any

import numpy as np
import numpy.typing as npt

class CancelToken:
    def __init__(self) -> None: ...
    def cancel(self) -> None: ...
    @property
    def cancelled(self) -> bool: ...

def file_size(path: str, uri: str) -> int: ...
def read_file_ranges(
    paths: list[str],
    uris: list[str],
    ranges: npt.NDArray[np.int64],
    out: Any,
    part_size: int,
    max_inflight: int,
    direct: bool,
    cache_mode: int,
    cancel: CancelToken | None = None,
    timeout: float = 0.0,
) -> int: ...
def plain_format_fault(fmt: str) -> str | None: ...
