"""The backend of each URI scheme: ``make_backend(scheme, options)``.

Network code (pycurl, the libcurl binding) loads only when an http(s):// or s3://
source is first read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastload.storage.backend import Backend


def make_backend(scheme: str, network_options: Mapping[str, Any]) -> Backend:
    """A backend for ``scheme``; ``network_options`` are the fields of NetworkOptions."""
    if scheme in ("file", "direct"):
        from fastload.storage.file_backend import FileBackend

        return FileBackend(direct=scheme == "direct")
    from fastload.storage.network_options import NetworkOptions

    opts = NetworkOptions.from_kwargs(**network_options)
    if scheme in ("http", "https"):
        from fastload.storage.http_backend import HttpBackend

        return HttpBackend(opts)
    if scheme == "s3":
        from fastload.storage.s3_backend import S3Backend

        return S3Backend(opts)
    raise ValueError(f"no backend for scheme {scheme!r} (file, direct, http, https, s3)")
