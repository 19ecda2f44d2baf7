# Types of the compiled fastload._native.collate (fastload/_native/collate.pyx), for py.typed users.
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

DT_RAW: int
DT_U8: int
DT_U16: int
DT_F32: int
DT_F16: int
DT_BF16: int
ISA_CODES: dict[str, int]
STORES_CODES: dict[str, int]

def best_isa() -> str: ...
def cpu_count() -> int: ...
def set_thread_budget(nthreads: int) -> int: ...
def thread_budget() -> int: ...

class CollatePlan:
    sample_in: int
    sample_out: int
    def __init__(
        self,
        *,
        pixels: int,
        channels: int,
        src_channels_last: bool,
        dst_channels_last: bool,
        src_dtype: int,
        dst_dtype: int,
        src_itemsize: int,
        dst_itemsize: int,
        scale: npt.NDArray[np.float32] | None = None,
        shift: npt.NDArray[np.float32] | None = None,
        unit_bytes: int = 0,
        nthreads: int = 0,
        isa: str = "auto",
    ) -> None: ...
    def run(
        self,
        samples: Sequence[Any] | None,
        slab: Any,
        offsets: npt.NDArray[np.int64] | None,
        out: Any,
        stores: str = "auto",
    ) -> dict[str, Any]: ...

def gather_ragged(
    samples: Sequence[Any], nthreads: int, unit_bytes: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]: ...
