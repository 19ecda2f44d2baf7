# Types of the compiled fastload._native.http_reader (fastload/_native/http_reader.pyx), for py.typed users.
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fastload._native.file_reader import CancelToken

MAX_REDIRECTS: int

def load_libcurl(path: str) -> str: ...
def abi_constants() -> dict[str, int]: ...
def classify_status(status: int) -> tuple[int, bool]: ...
def classify_curl(curl_code: int) -> tuple[int, bool]: ...
def classify_s3_code(s3_code: str) -> tuple[int, bool] | None: ...
def backoff(attempt: int, base: float, cap: float, retry_after: float = 0.0) -> float: ...

class HttpContext:
    def __init__(
        self,
        *,
        ca_bundle: str | None = None,
        verify: bool = True,
        connect_timeout: float = 10.0,
        low_speed_limit: int = 1024,
        low_speed_time: int = 30,
        buffer_size: int = 1 << 20,
        http2: bool = True,
        follow_redirects: bool = False,
        pin_version: bool = True,
        max_retries: int | None = None,
        retry_deadline: float = 180.0,
        backoff_base: float = 0.1,
        backoff_cap: float = 15.0,
        user_agent: str = "fastload",
    ) -> None: ...
    def close(self) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def read(
        self,
        urls: Sequence[bytes],
        headers: Sequence[bytes | None],
        uris: list[str],
        table: npt.NDArray[np.int64],
        out: Any,
        part_size: int,
        max_inflight: int,
        timeout: float,
        cancel: CancelToken | None = None,
        pins: Sequence[tuple[int | None, str | None, str | None, bool] | None] | None = None,
    ) -> list[int]: ...

def plain_format_fault(fmt: str) -> str | None: ...
