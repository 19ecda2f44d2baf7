"""Build the Cython bridges in fastload/_native/ with the C kernels in csrc/.

Every fastload/_native/NAME.pyx becomes the extension fastload._native.NAME; its C
sources are named at the top of the .pyx (``# distutils: sources = csrc/...``), so
adding a bridge never needs an edit here.
"""

import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

CFLAGS = ["-O3", "-std=gnu11", "-fno-strict-aliasing", "-Wall", "-Wno-unused-function"]
if os.environ.get("FASTLOAD_DEBUG"):
    CFLAGS = ["-O0", "-g", "-std=gnu11", "-Wall"]

extensions = [
    Extension(
        "fastload._native." + os.path.splitext(os.path.basename(pyx))[0],
        [pyx],
        include_dirs=["csrc"],
        extra_compile_args=CFLAGS,
        libraries=["dl", "pthread"],
    )
    for pyx in sorted(glob.glob("fastload/_native/*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    ),
)
