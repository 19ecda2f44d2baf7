"""http(s):// and s3:// backends of the range engine.

``make_backend(scheme, **options)`` is what ``RangeEngine`` calls; the
options are the fields of :class:`NetworkOptions`.
"""

from __future__ import annotations

from typing import Any

from fastload.network.options import NetworkOptions

__all__ = ["NetworkOptions", "make_backend"]


def make_backend(scheme: str, **options: Any) -> Any:
    """A backend for ``scheme`` ("http", "https" or "s3") with the given network options."""
    opts = NetworkOptions.from_kwargs(**options)
    if scheme in ("http", "https"):
        from fastload.network.http_backend import HttpBackend

        return HttpBackend(opts)
    if scheme == "s3":
        from fastload.network.s3_backend import S3Backend

        return S3Backend(opts)
    raise ValueError(f"no network backend for scheme {scheme!r} (http, https, s3)")
