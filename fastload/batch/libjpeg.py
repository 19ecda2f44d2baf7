"""Find and bind the libjpeg the image decoder calls (csrc/fl_jpeg.c, through dlopen).

The Pillow wheel ships libjpeg-turbo 3.x as ``pillow.libs/libjpeg-<hash>.so.62`` (the
libjpeg 6.2 ABI, with ``jpeg_crop_scanline``, ``jpeg_skip_scanlines`` and k/8 DCT
scaling), so ``pip install fastload[images]`` brings a fast decoder with no system
package. Order: an explicit path, ``FASTLOAD_LIBJPEG``, the libjpeg already mapped into
this process (Pillow's, once ``PIL.Image`` is imported), the one in ``pillow.libs/``
beside the installed PIL package, then the system's ``libjpeg.so.62`` (Debian's
libjpeg62-turbo) and ``libjpeg.so.8``. The binding checks the library takes this build's
6.2-ABI objects (a libjpeg 8 ABI library refuses them, and the next candidate is tried).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import threading

from fastload._native import jpeg

_lock = threading.Lock()
_loaded: str | None = None
SYSTEM_NAMES = ("libjpeg.so.62", "libjpeg.so.8")


def _mapped() -> list[str]:
    try:
        with open("/proc/self/maps") as f:
            paths = {row.split(None, 5)[5].strip() for row in f if row.count(" ") >= 5}
    except (OSError, IndexError):
        return []
    return sorted(p for p in paths if os.path.basename(p).startswith("libjpeg") and ".so" in p)


def _pillow_libs() -> list[str]:
    spec = importlib.util.find_spec("PIL")
    if spec is None or not spec.submodule_search_locations:
        return []
    site = os.path.dirname(os.path.abspath(list(spec.submodule_search_locations)[0]))
    return sorted(glob.glob(os.path.join(site, "pillow.libs", "libjpeg*.so*")))


def candidates(explicit: str | None = None) -> list[str]:
    if explicit:
        return [explicit]
    env = os.environ.get("FASTLOAD_LIBJPEG")
    if env:
        return [env]
    return list(dict.fromkeys([*_mapped(), *_pillow_libs(), *SYSTEM_NAMES]))


def load(explicit: str | None = None) -> str:
    """Bind libjpeg once per process; returns its path. OSError naming every candidate's
    failure when none binds; ValueError when another library than the bound one is asked for.
    """
    global _loaded
    with _lock:
        if _loaded is not None:
            if explicit and os.path.realpath(explicit) != os.path.realpath(_loaded):
                raise ValueError(
                    f"libjpeg_path={explicit!r}: this process already bound {_loaded} "
                    "(set it or FASTLOAD_LIBJPEG before the first image is decoded)"
                )
            return _loaded
        errors = []
        for path in candidates(explicit):
            try:
                jpeg.load_libjpeg(path)
            except OSError as exc:
                errors.append(str(exc))
                continue
            _loaded = path
            return path
        raise OSError(
            "no usable libjpeg (pip install 'fastload[images]' brings Pillow's): "
            + "; ".join(errors)
        )
