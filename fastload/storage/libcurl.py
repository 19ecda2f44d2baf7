"""Find and bind the libcurl that drives the data plane.

The pycurl wheel ships its own libcurl (OpenSSL 3, nghttp2); binding the very
file pycurl loaded keeps one libcurl in the process. Order: an explicit path,
``FASTLOAD_LIBCURL``, the libcurl mapped into this process by pycurl, one
next to pycurl's module (``pycurl.libs/``), then the system's libcurl.so.4.
"""

from __future__ import annotations

import glob
import os
import threading

from fastload._native import http_reader

_lock = threading.Lock()
_loaded: tuple[str, str] | None = None  # (path, version)


def _mapped_libcurl() -> list[str]:
    """libcurl files mapped into this process (after ``import pycurl``)."""
    try:
        with open("/proc/self/maps") as f:
            rows = [line.split(None, 5) for line in f]
        paths = {r[5].strip() for r in rows if len(r) == 6}
    except OSError:
        return []
    return sorted(p for p in paths if os.path.basename(p).startswith("libcurl") and ".so" in p)


def candidates(explicit: str | None = None) -> list[str]:
    found: list[str] = []
    if explicit:
        return [explicit]
    env = os.environ.get("FASTLOAD_LIBCURL")
    if env:
        return [env]
    try:
        import pycurl
    except ImportError:
        pycurl = None
    if pycurl is not None:
        found += _mapped_libcurl()
        here = os.path.dirname(os.path.abspath(pycurl.__file__))
        for folder in (here, os.path.dirname(here)):
            found += sorted(glob.glob(os.path.join(folder, "pycurl.libs", "libcurl*.so*")))
    found.append("libcurl.so.4")
    return list(dict.fromkeys(found))


def load(explicit: str | None = None) -> tuple[str, str]:
    """Bind libcurl once per process; returns (path, version). OSError when none loads.

    The binding is process-wide: asking for another library once one is bound
    is a ValueError rather than a silent no-op.
    """
    global _loaded
    with _lock:
        if _loaded is not None:
            if explicit and os.path.realpath(explicit) != os.path.realpath(_loaded[0]):
                raise ValueError(
                    f"libcurl_path={explicit!r}: this process already bound {_loaded[0]} "
                    "(set libcurl_path or FASTLOAD_LIBCURL before the first network read)"
                )
            return _loaded
        errors = []
        for path in candidates(explicit):
            try:
                _loaded = (path, http_reader.load_libcurl(path))
                return _loaded
            except OSError as exc:
                errors.append(str(exc))
        raise OSError("no usable libcurl: " + "; ".join(errors))
