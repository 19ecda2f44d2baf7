"""Every exception fastload raises, and the one table from status codes to them.

Every Cython bridge hands its ``fl_error`` to :func:`raise_native_error`, and the
Python backends raise through it with a :class:`~fastload._native.status.Status`
too; the message always names the URI and byte range, never a credential.
"""

from __future__ import annotations

import errno as _errno
import os
from typing import NoReturn

from fastload._native.status import Status


class FastloadError(Exception):
    """Base of every error fastload raises about data it could not deliver."""

    uri: str | None = None
    offset: int | None = None
    length: int | None = None
    object_size: int | None = None
    http_status: int | None = None
    attempts: int | None = None


class ObjectNotFoundError(FastloadError, FileNotFoundError):
    """The file, object or bucket does not exist."""


class AccessDeniedError(FastloadError, PermissionError):
    """The OS or server refused access (EACCES, HTTP 401/403, bad signature)."""


class RangeError(FastloadError, ValueError):
    """A byte range lies outside the object."""


class InvalidRequestError(FastloadError, ValueError):
    """An argument the native layer could not act on."""


class NotRegularFileError(InvalidRequestError):
    """A local path names no regular file: a directory, FIFO, socket, device or a /proc or
    /sys pseudo-file (whose size says nothing about what a read returns). Refused before
    anything is opened that could block."""


class ReadTimeoutError(FastloadError, TimeoutError):
    """A read did not finish in time."""


class TransferError(FastloadError, ConnectionError):
    """The connection failed (refused, reset, TLS) and retries ran out."""


class ShortReadError(FastloadError, OSError):
    """The object ended, or a body stopped, before the range did."""


class HTTPStatusError(FastloadError, OSError):
    """The server answered with an HTTP status fastload does not map elsewhere."""


class CancelledReadError(FastloadError, OSError):
    """The read was cancelled (loader shut down)."""


class ObjectChangedError(FastloadError, OSError):
    """The object changed while it was read (another ETag, Last-Modified or size than the
    version the read started on, or than its size, stat or listing said): its bytes would
    be a mix of two versions, so none are delivered."""


class UnsupportedError(FastloadError, OSError):
    """The storage cannot do what was asked (O_DIRECT on tmpfs, for example)."""


class CertificateError(TransferError):
    """TLS certificate verification failed."""


class NativeIOError(FastloadError, OSError):
    """Any other OS error while reading."""


class ImageDecodeError(FastloadError, ValueError):
    """An image file could not be decoded: corrupt, truncated, empty or not an image.
    ``uri`` names the file; ``sample`` (when a loader raised it) the dataset index;
    ``member`` the file inside ``uri`` where that is a tar shard (``key.jpg``)."""

    sample: int | None = None
    member: str | None = None


class ImageTooLargeError(ImageDecodeError):
    """An image declares more pixels than the pipeline's ``max_pixels`` (a decompression bomb)."""


class UnsupportedImageError(ImageDecodeError):
    """The file is in a format fastload cannot decode (or needs Pillow, which is missing)."""


class TransformError(RuntimeError):
    """The dataset's transform raised; the message names the sample (index, URI, bytes) and
    its batch, and ``__cause__`` (in-process) or the message (worker) holds the original."""


class WorkerError(RuntimeError):
    """A worker process died or its transform raised."""


class WorkerTransformError(WorkerError, TransformError):
    """The transform raised inside a worker process (both kinds of error at once)."""


_AS_ORIGINAL: dict[tuple[type, type], type | None] = {}


def as_original(
    original: type[BaseException] | None, message: str, base: type[Exception]
) -> Exception:
    """An exception of ``original``'s type that is also a ``base`` (a fastload error), with
    ``message``: ``except KeyError`` and ``except TransformError`` both catch what a transform
    raised (torch re-raises a worker's exception with its type too). A type that cannot be
    combined or built from one message gives a plain ``base``."""
    if original is None or not issubclass(original, Exception) or issubclass(base, original):
        return base(message)
    key = (original, base)
    if key not in _AS_ORIGINAL:
        try:
            combined: type | None = type(
                original.__name__,
                (original, base),
                {"__module__": original.__module__, "__qualname__": original.__qualname__},
            )
        except TypeError:  # incompatible layouts
            combined = None
        _AS_ORIGINAL[key] = combined
    cls = _AS_ORIGINAL[key]
    if cls is not None:
        try:
            return cls(message)  # type: ignore[no-any-return]
        except Exception:  # a constructor that needs other arguments
            pass
    return base(message)


class SharedMemoryFull(OSError):
    """The shared-memory folder has no room for another segment of batch slots."""


# -- tar shards (fastload.plan.tar_shards) ----------------------------------------------


class TarFormatError(FastloadError, ValueError):
    """A tar shard is not readable as one: a header fails its checksum (so the member
    before it lies about its size, or the object is no tar), the shard ends inside a
    header or a member, or it is compressed. ``uri`` and ``offset`` say where."""


# -- Parquet files (fastload.plan.parquet_dataset) -------------------------------------


class ParquetFormatError(FastloadError, ValueError):
    """A Parquet file is not readable as one: no ``PAR1`` at its end, a footer that lies
    about its length or does not parse, a column chunk outside the file, or data pages
    that do not decode (a file damaged, or rewritten since its footer was read). The
    message names the file (and the row group); ``uri`` is the file's display name."""


class MissingFieldError(FastloadError, KeyError):
    """A sample of a tar shard has no member for a field the dataset needs (its data
    field or its label field); the message names the shard and the sample's key."""

    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0]) if self.args else ""


class LabelError(FastloadError, ValueError):
    """A label member's bytes do not hold a label (``.cls`` text that is no integer,
    ``.json`` that is not JSON or lacks the key)."""


class ShardChangedError(FastloadError, OSError):
    """A shard (or object) vanished or changed (size, ETag, modification time) after its
    index was built: its member offsets can no longer be trusted."""


# -- the node-local cache (fastload.storage.cache) -------------------------------------


class CacheError(FastloadError, OSError):
    """The node-local cache cannot do its job; ``on_error="skip"`` reads around it instead
    (counted in the cache's ``skipped``)."""


class CacheFullError(CacheError):
    """The cache's file system has no room for an entry, even after evicting (ENOSPC,
    EDQUOT, EFBIG), or one entry is larger than ``cache_limit``."""


class CacheReadOnlyError(CacheError):
    """The cache folder cannot be written (permissions, a read-only file system)."""


class CacheLockError(CacheError):
    """The cache folder's file system refuses file locks, so processes sharing it could
    fetch the same block twice or read one half-evicted."""


class RangeIgnoredWarning(UserWarning):
    """A server answered a ranged GET with the whole object: fastload reads each of its
    objects with one streamed GET from then on (no parallel parts)."""


# Status (csrc/fl_error.h) -> exception class; Status.NOMEM raises MemoryError.
NATIVE_ERRORS: dict[int, type[FastloadError]] = {
    Status.NOT_FOUND: ObjectNotFoundError,
    Status.PERMISSION: AccessDeniedError,
    Status.RANGE: RangeError,
    Status.INVALID: InvalidRequestError,
    Status.IO: NativeIOError,
    Status.TIMEOUT: ReadTimeoutError,
    Status.CONNECTION: TransferError,
    Status.HTTP: HTTPStatusError,
    Status.SHORT: ShortReadError,
    Status.CANCELLED: CancelledReadError,
    Status.UNSUPPORTED: UnsupportedError,
    Status.TLS: CertificateError,
    Status.CORRUPT: ImageDecodeError,
    Status.TOO_LARGE: ImageTooLargeError,
    Status.FORMAT: UnsupportedImageError,
    Status.CHANGED: ObjectChangedError,
    Status.NOT_REGULAR: NotRegularFileError,
}


def describe_range(offset: int | None, length: int | None) -> str:
    if offset is None or length is None or length <= 0:
        return ""
    return f" bytes {offset}-{offset + length - 1}"


def raise_native_error(
    code: int,
    uri: str | None,
    *,
    offset: int | None = None,
    length: int | None = None,
    sys_errno: int = 0,
    http_status: int = 0,
    curl_code: int = 0,
    object_size: int = -1,
    attempts: int = 0,
    message: str = "",
) -> NoReturn:
    """Raise the exception for status ``code`` (a native ``fl_error``, or a Python backend's)."""
    if code == Status.NOMEM:
        raise MemoryError(f"{uri}: {message or 'out of memory'}")
    cls = NATIVE_ERRORS.get(code, NativeIOError)  # a Status is an int: either keys the table
    parts = [message or "read failed"]
    if sys_errno:
        parts.append(f"[{_errno.errorcode.get(sys_errno, sys_errno)}] {os.strerror(sys_errno)}")
    if http_status:
        parts.append(f"HTTP {http_status}")
    if curl_code:
        parts.append(f"curl error {curl_code}")
    if object_size is not None and object_size >= 0 and code == Status.RANGE:
        parts.append(f"object size is {object_size} bytes")
    if attempts > 1:
        parts.append(f"after {attempts} attempts")
    text = f"{uri}{describe_range(offset, length)}: " + "; ".join(parts)
    exc = cls(text)
    exc.uri = uri
    exc.offset = offset
    exc.length = length
    exc.object_size = object_size if object_size is not None and object_size >= 0 else None
    exc.http_status = http_status or None
    exc.attempts = attempts or None
    if isinstance(exc, OSError) and sys_errno:
        exc.errno = sys_errno
    raise exc
