# Types of the compiled fastload._native.range_check (fastload/_native/range_check.pyx), for py.typed users.
import numpy as np
import numpy.typing as npt

def check_ranges(table: npt.NDArray[np.int64], nsources: int) -> tuple[int, int, int, int]: ...
