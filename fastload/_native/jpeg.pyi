# Types of the compiled fastload._native.jpeg (fastload/_native/jpeg.pyx), for py.typed users.
from typing import Any

import numpy as np
import numpy.typing as npt

IMG_UNKNOWN: int
IMG_JPEG: int
IMG_PNG: int
IMG_PIXELS: int
DCT_SCALING: dict[str, int]
DCT_METHODS: dict[str, int]
INFO_FIELDS: tuple[str, ...]

def load_libjpeg(path: str) -> None: ...
def libjpeg_loaded() -> bool: ...
def abi_table() -> dict[str, int]: ...
def probe(
    slab: Any,
    offsets: npt.NDArray[np.int64],
    lengths: npt.NDArray[np.int64],
    strict: bool,
    max_pixels: int,
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32], dict[int, str]]: ...

class DecodePlan:
    dst_itemsize: int
    def __init__(
        self,
        *,
        apply_orientation: bool,
        clip_to_box: bool,
        antialias: bool,
        dct_scaling: str,
        dct_method: str,
        fancy_upsampling: bool,
        strict: bool,
        max_pixels: int,
        convert: bool,
        dst_dtype: int,
        dst_channels_last: bool,
        dst_itemsize: int,
        scale: npt.NDArray[np.float32] | None = None,
        shift: npt.NDArray[np.float32] | None = None,
        isa: str = "auto",
        nthreads: int = 0,
        timing: bool = False,
    ) -> None: ...
    def run(
        self,
        slab: Any,
        offsets: npt.NDArray[np.int64],
        lengths: npt.NDArray[np.int64],
        pixels: list[Any],
        info: npt.NDArray[np.int32],
        boxes: npt.NDArray[np.float64],
        flips: npt.NDArray[np.uint8],
        out_size: npt.NDArray[np.int32],
        dst_offsets: npt.NDArray[np.int64],
        out: Any,
    ) -> tuple[npt.NDArray[np.int32], dict[int, str], dict[str, Any]]: ...

def entropy_only(data: Any) -> None: ...
def set_thread_budget(nthreads: int) -> int: ...
def thread_budget() -> int: ...
