"""The backend of each URI scheme: ``make_backend(scheme, options)``.

Network code (pycurl, the libcurl binding) loads only when an http(s):// or s3://
source is first read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastload.storage.backend import Backend


def make_backend(
    scheme: str, network_options: Mapping[str, Any], *, max_open_files: int | None = None
) -> Backend:
    """A backend for ``scheme``; ``network_options`` are the fields of NetworkOptions,
    ``max_open_files`` the local backends' descriptor cache (None: their default)."""
    if scheme in ("file", "direct"):
        from fastload.storage.file_backend import DEFAULT_MAX_OPEN_FILES, FileBackend

        return FileBackend(
            direct=scheme == "direct",
            max_open_files=DEFAULT_MAX_OPEN_FILES if max_open_files is None else max_open_files,
        )
    from fastload.storage.network_options import NetworkOptions

    opts = NetworkOptions.from_kwargs(**network_options)
    if scheme in ("http", "https"):
        from fastload.storage.http_backend import HttpBackend

        return HttpBackend(opts)
    if scheme == "s3":
        from fastload.storage.s3_backend import S3Backend

        return S3Backend(opts)
    raise ValueError(f"no backend for scheme {scheme!r} (file, direct, http, https, s3)")
