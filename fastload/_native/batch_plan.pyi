# Types of the compiled fastload._native.batch_plan (fastload/_native/batch_plan.pyx), for py.typed users.
import numpy as np
import numpy.typing as npt

def pack_ranges(
    src: npt.NDArray[np.int64], offset: npt.NDArray[np.int64], length: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], int, npt.NDArray[np.int64], npt.NDArray[np.int64]]: ...
