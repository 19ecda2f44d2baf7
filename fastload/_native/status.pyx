"""The status codes of the C kernels (csrc/fl_error.h) and the page-cache modes of the
file reader (csrc/fl_file_reader.h), as Python enums.

The values come from the C headers through includes/fl.pxd, so no Python module writes
a numeric code: fastload.errors keys its exception table by :class:`Status`, and the
storage layer names page-cache modes through :class:`CacheMode`.
"""

import enum

from fastload._native.includes.fl cimport (
    FL_CACHE_AUTO, FL_CACHE_DONT_NEED, FL_CACHE_NORMAL, FL_CACHE_RANDOM, FL_CACHE_SEQUENTIAL,
    FL_E_CANCELLED, FL_E_CHANGED, FL_E_CONNECTION, FL_E_HTTP, FL_E_INVALID, FL_E_IO, FL_E_NOMEM,
    FL_E_NOT_FOUND, FL_E_NOT_REGULAR, FL_E_PERMISSION, FL_E_RANGE, FL_E_SHORT, FL_E_TIMEOUT, FL_E_TLS,
    FL_E_UNSUPPORTED, FL_OK, FL_E_CORRUPT, FL_E_TOO_LARGE, FL_E_FORMAT,
)


class Status(enum.IntEnum):
    """fl_status: what a kernel returns (0 = success)."""

    OK = FL_OK
    NOT_FOUND = FL_E_NOT_FOUND
    PERMISSION = FL_E_PERMISSION
    RANGE = FL_E_RANGE
    INVALID = FL_E_INVALID
    NOMEM = FL_E_NOMEM
    IO = FL_E_IO
    TIMEOUT = FL_E_TIMEOUT
    CONNECTION = FL_E_CONNECTION
    HTTP = FL_E_HTTP
    SHORT = FL_E_SHORT
    CANCELLED = FL_E_CANCELLED
    UNSUPPORTED = FL_E_UNSUPPORTED
    TLS = FL_E_TLS
    CORRUPT = FL_E_CORRUPT
    TOO_LARGE = FL_E_TOO_LARGE
    FORMAT = FL_E_FORMAT
    CHANGED = FL_E_CHANGED
    NOT_REGULAR = FL_E_NOT_REGULAR


class CacheMode(enum.IntEnum):
    """FL_CACHE_*: the posix_fadvise policy of a local read (``page_cache_mode``)."""

    AUTO = FL_CACHE_AUTO
    SEQUENTIAL = FL_CACHE_SEQUENTIAL
    RANDOM = FL_CACHE_RANDOM
    DONT_NEED = FL_CACHE_DONT_NEED
    NORMAL = FL_CACHE_NORMAL
