"""Datasets: what a sample is, as byte ranges of objects.

A dataset never reads batches itself. It answers two questions for the
planner: which objects exist (``sources``) and where sample ``i`` lives
(``sample_ranges(indices)`` -> source index, offset, length per sample).
Construction may read metadata (sizes, ``.npy`` headers) through a
:class:`~fastload.storage.engine.RangeEngine`, so every dataset works on any URI the
engine reads: local paths, ``direct://``, ``http(s)://``, ``s3://``.
"""

from __future__ import annotations

import ast
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fastload.checks import INT64_MAX, check_int, is_int
from fastload.storage.engine import RangeEngine, default_engine
from fastload.storage.listing import ListedSources
from fastload.storage.uri import ParsedURI, parse_uri, redact

UriSpec = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
Labels = np.ndarray | Sequence[Any] | Callable[[int], Any] | None
Transform = Callable[[np.ndarray], Any]

_NPY_MAGIC = b"\x93NUMPY"
_NPY_PROBE = 4096  # bytes read to find a .npy header; longer headers are read again
# The longest .npy header read (numpy's own reader stops at 10000 bytes by default): a
# length field that claims more is refused before a buffer for it is made.
NPY_MAX_HEADER = 16 << 20


def resolve_sources(
    spec: UriSpec, engine: RangeEngine, what: str
) -> tuple[Sequence[ParsedURI], np.ndarray | None]:
    """The objects of a list, a single object, or a prefix (folder / ``s3://b/p/``), and
    their sizes when a listing gave them (None otherwise).

    A string is a prefix when it ends with ``/`` or is a local directory; a listed
    object is parsed when first used.
    """
    if isinstance(spec, (str, os.PathLike)):
        s = os.fspath(spec)
        parsed = parse_uri(s)
        if s.endswith("/") or (parsed.is_local and os.path.isdir(parsed.path)):
            sources, sizes = engine.list_sources(parsed)
            if not len(sources):
                raise ValueError(f"{what}: no objects under {s}")
            return sources, sizes
        return [parsed], None
    listed = [parse_uri(u) for u in spec]
    if not listed:
        raise ValueError(f"{what}: the list of objects is empty")
    return listed, None


def resolve_uris(spec: UriSpec, engine: RangeEngine, what: str) -> list[ParsedURI]:
    """:func:`resolve_sources` without the sizes, each URI parsed."""
    return list(resolve_sources(spec, engine, what)[0])


class Dataset:
    """Base: a map from sample index to a byte range of one of ``sources``.

    Subclasses set ``uris``, ``sample_shape`` (``None`` when samples are
    ragged), ``dtype`` and ``layout`` ("HWC", "CHW" or "" when the samples are
    not images), and implement :meth:`sample_ranges`.
    """

    uris: list[str]
    sources: Sequence[ParsedURI]
    sample_shape: tuple[int, ...] | None
    dtype: np.dtype
    layout: str

    _engine: RangeEngine | None = None  # the engine metadata was read with (for __getitem__)

    def __init__(self, labels: Labels = None, transform: Transform | None = None) -> None:
        self.transform = transform
        self._labels_fn: Callable[[int], Any] | None = None
        self._labels: np.ndarray | None = None
        if callable(labels):
            self._labels_fn = labels
        elif labels is not None:
            self._labels = np.asarray(labels)

    def _set_sources(self, sources: Sequence[ParsedURI]) -> None:
        self.sources = sources
        self.uris = (
            list(sources.uris) if isinstance(sources, ListedSources) else [s.uri for s in sources]
        )

    def _finish_init(self) -> None:
        if getattr(self, "sources", None) is None or len(self.sources) != len(self.uris):
            self.sources = [parse_uri(u) for u in self.uris]
        if self._labels is not None and len(self._labels) != len(self):
            raise ValueError(
                f"{type(self).__name__}: labels has {len(self._labels)} entries, "
                f"the dataset has {len(self)} samples"
            )

    def __len__(self) -> int:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        # An engine holds native handles: a copy in another process reads with its default engine.
        state = self.__dict__.copy()
        state.pop("_engine", None)
        return state

    @property
    def has_labels(self) -> bool:
        return self._labels is not None or self._labels_fn is not None

    @property
    def ragged(self) -> bool:
        return self.sample_shape is None

    @property
    def sample_nbytes(self) -> int | None:
        if self.sample_shape is None:
            return None
        # Python ints: numpy's int64 product wraps around silently for huge shapes
        return math.prod(int(d) for d in self.sample_shape) * self.dtype.itemsize

    def check_indices(self, indices: np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        n = len(self)
        # one pass: as unsigned, a negative index is past any length too
        if idx.size and int(idx.view(np.uint64).max()) >= n:
            bad = int(idx[(idx < 0) | (idx >= n)][0])
            raise IndexError(
                f"{type(self).__name__}: sample index {bad} out of range for {n} samples"
            )
        return idx

    @property
    def max_object_size(self) -> int:
        """Bytes of the largest source (bounds one request in sequential reader mode)."""
        raise NotImplementedError

    def sample_ranges(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per sample: (source index, byte offset, byte length), int64 arrays."""
        raise NotImplementedError

    def labels_for(self, indices: np.ndarray) -> np.ndarray | None:
        """Labels of ``indices`` as one array, or None without labels."""
        if self._labels is not None:
            return self._labels[indices]
        if self._labels_fn is not None:
            return np.asarray([self._labels_fn(int(i)) for i in indices])
        return None

    def describe(self, index: int) -> str:
        """Where sample ``index`` lives, for error messages."""
        src, off, length = (int(a[0]) for a in self.sample_ranges(np.array([index])))
        return f"sample {index} ({self.sources[src].display} bytes {off}-{off + length - 1})"

    def member_name(self, index: int) -> str | None:
        """The name of sample ``index`` inside its source, where a source holds many named
        members (a tar shard's ``key.jpg``); None where the source is the sample."""
        return None

    def view_sample(self, raw: np.ndarray) -> np.ndarray:
        """A sample's bytes as an array of its shape and dtype (zero-copy)."""
        if self.sample_shape is None:
            return raw
        return raw.view(self.dtype).reshape(self.sample_shape)

    def __getitem__(self, index: int) -> Any:
        """One sample read through the default engine (not the fast path: use DataLoader).

        The transform is not applied here; the loader applies it when
        ``enable_transforms`` is on.
        """
        idx = self.check_indices(np.array([index]))
        src, off, length = (int(a[0]) for a in self.sample_ranges(idx))
        raw = np.empty(length, dtype=np.uint8)
        if length:
            (self._engine or default_engine()).read_into(
                [self.sources[src]], np.array([[0, off, length, 0]]), raw
            )
        sample = self.view_sample(raw)
        labels = self.labels_for(idx)  # None exactly when not has_labels
        if labels is not None:
            return sample, labels[0]
        return sample


class ObjectDataset(Dataset):
    """One sample per object: the object's bytes (ragged batches).

    ``uris``: a list of URIs, one object URI, or a prefix (a local folder,
    ``s3://bucket/train/``). ``sizes`` skips the size look-ups when known.
    """

    def __init__(
        self,
        uris: UriSpec,
        *,
        labels: Labels = None,
        transform: Transform | None = None,
        sizes: Sequence[int] | np.ndarray | None = None,
        engine: RangeEngine | None = None,
    ) -> None:
        super().__init__(labels, transform)
        engine = self._engine = engine or default_engine()
        sources, listed_sizes = resolve_sources(uris, engine, "ObjectDataset")
        self._set_sources(sources)
        if sizes is None:
            sizes = (
                listed_sizes if listed_sizes is not None else [engine.size(s) for s in self.sources]
            )
        self.sizes = _check_sizes(sizes, self.uris, "ObjectDataset")
        self.sample_shape = None
        self.dtype = np.dtype(np.uint8)
        self.layout = ""
        self._finish_init()

    def __len__(self) -> int:
        return len(self.uris)

    def sample_ranges(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = self.check_indices(indices)
        return idx, np.zeros(len(idx), dtype=np.int64), self.sizes[idx]

    @property
    def max_object_size(self) -> int:
        return int(self.sizes.max())


class _ShardedRecords(Dataset):
    """Samples of one shape and dtype at fixed strides inside shard objects."""

    def _set_shards(self, first_offset: np.ndarray, counts: np.ndarray, stride: int) -> None:
        self.first_offset = np.asarray(first_offset, dtype=np.int64)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.stride = int(stride)
        self.starts = np.concatenate(([0], np.cumsum(self.counts)))
        self._record_nbytes = self.sample_nbytes or 0  # asked for every batch: computed once
        self._finish_init()

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def max_object_size(self) -> int:
        return int((self.first_offset + self.counts * self.stride).max())

    def sample_ranges(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = self.check_indices(indices)
        lengths = np.full(len(idx), self._record_nbytes, dtype=np.int64)
        if len(self.counts) == 1:  # one shard (a single file): no search, no gathers
            offset = idx * self.stride
            offset += int(self.first_offset[0])
            return np.zeros(len(idx), dtype=np.int64), offset, lengths
        shard = np.searchsorted(self.starts, idx, side="right") - 1
        offset = self.first_offset[shard] + (idx - self.starts[shard]) * self.stride
        return shard, offset, lengths


def _check_shape(shape: Any, what: str) -> tuple[int, ...]:
    dims = shape if isinstance(shape, (tuple, list)) else (shape,)
    # integers only: int() would take 1.5 as 1 and True as 1 without a word
    if not dims or not all(is_int(d) and 0 < d <= INT64_MAX for d in dims):
        raise ValueError(
            f"{what}: record_shape must be a tuple of positive integers, got {shape!r}"
        )
    return tuple(int(d) for d in dims)


def _check_record_nbytes(nbytes: int, shape: tuple[int, ...], dtype: np.dtype, what: str) -> int:
    """A record's byte size, refused when it is 0 (a dtype of no bytes: every record
    would lie at one offset) or more than an int64 byte offset can address."""
    if nbytes <= 0:
        raise ValueError(
            f"{what}: record_shape={shape} of {dtype} is a record of 0 bytes; a record needs "
            "at least one byte"
        )
    if nbytes > INT64_MAX:
        raise ValueError(
            f"{what}: record_shape={shape} of {dtype} is a record of {nbytes} bytes, more "
            f"than any object holds (at most {INT64_MAX})"
        )
    return nbytes


def _check_sizes(sizes: Any, uris: Sequence[str], what: str) -> np.ndarray:
    """``sizes=``: one non-negative integer (bytes) per URI, as int64."""
    if isinstance(sizes, np.ndarray):
        values = sizes.tolist() if sizes.ndim == 1 else None
    elif isinstance(sizes, (list, tuple)):
        values = list(sizes)
    else:
        values = None
    if values is None or len(values) != len(uris):
        raise ValueError(
            f"{what}: sizes must be one byte count per object ({len(uris)}), got "
            f"{type(sizes).__name__}" + (f" of {len(values)}" if values is not None else "")
        )
    for uri, n in zip(uris, values, strict=True):
        if not is_int(n) or not 0 <= n <= INT64_MAX:
            raise ValueError(
                f"{what}: sizes gives {n!r} for {redact(uri)}: a size is an integer 0-{INT64_MAX}"
            )
    return np.asarray(values, dtype=np.int64).reshape(len(uris))


class RecordDataset(_ShardedRecords):
    """Fixed-size records in one or many shard objects.

    Record ``k`` of a shard lies at ``header_bytes + k * record_stride``;
    ``record_stride`` defaults to the record's size (records back to back).
    A shard whose size is not ``header_bytes + n * record_stride`` is an error.
    ``layout`` says how image records are stored ("HWC" or "CHW").
    """

    def __init__(
        self,
        shards: UriSpec,
        record_shape: tuple[int, ...] | int,
        dtype: Any = np.uint8,
        *,
        header_bytes: int = 0,
        record_stride: int | None = None,
        layout: str = "HWC",
        labels: Labels = None,
        transform: Transform | None = None,
        sizes: Sequence[int] | np.ndarray | None = None,
        engine: RangeEngine | None = None,
    ) -> None:
        super().__init__(labels, transform)
        self.sample_shape = _check_shape(record_shape, "RecordDataset")
        try:
            self.dtype = np.dtype(dtype)
        except TypeError as exc:
            raise TypeError(f"RecordDataset: dtype={dtype!r} is not a dtype: {exc}") from None
        if self.dtype.hasobject:
            raise ValueError(f"RecordDataset: dtype {self.dtype} holds Python objects")
        if layout not in ("HWC", "CHW", ""):
            raise ValueError(f"RecordDataset: layout must be 'HWC', 'CHW' or '', got {layout!r}")
        self.layout = layout
        nbytes = _check_record_nbytes(
            self.sample_nbytes or 0, self.sample_shape, self.dtype, "RecordDataset"
        )
        header_bytes = check_int("RecordDataset: header_bytes", header_bytes, 0, INT64_MAX)
        stride = nbytes
        if record_stride is not None:
            stride = check_int("RecordDataset: record_stride", record_stride, 1, INT64_MAX)
        if stride < nbytes:
            raise ValueError(
                f"RecordDataset: record_stride {stride} is smaller than a record ({nbytes} bytes)"
            )
        engine = self._engine = engine or default_engine()
        sources, listed_sizes = resolve_sources(shards, engine, "RecordDataset")
        self._set_sources(sources)
        if sizes is None:
            sizes = (
                listed_sizes if listed_sizes is not None else [engine.size(s) for s in self.sources]
            )
        sizes = _check_sizes(sizes, self.uris, "RecordDataset")
        counts = np.zeros(len(self.uris), dtype=np.int64)
        # Python ints: no product or difference here can wrap around
        for i, (uri, size) in enumerate(zip(self.uris, sizes.tolist(), strict=True)):
            b = size - header_bytes
            # The last record may omit the stride's padding.
            whole = b == 0 or (b >= nbytes and ((b - nbytes) % stride == 0 or b % stride == 0))
            if b < 0 or not whole:
                raise ValueError(
                    f"{redact(uri)}: {size} bytes is not a {header_bytes}-byte header plus whole "
                    f"records of {nbytes} bytes at a stride of {stride}"
                )
            counts[i] = (b - nbytes) // stride + 1 if b >= nbytes else 0
        self._set_shards(np.full(len(self.uris), header_bytes), counts, stride)


def parse_npy_header(head: bytes, uri: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """(dtype, shape, data offset) from the first bytes of a ``.npy`` file.

    Raises ValueError naming ``uri`` for a bad magic, a malformed header (a shape that is
    not a tuple of non-negative integers, a fortran_order that is not a bool), Fortran
    order, Python objects, or a header longer than ``NPY_MAX_HEADER``; returns a data offset
    past ``len(head)`` when the header needs more bytes.
    """
    if len(head) < 10 or not head.startswith(_NPY_MAGIC):
        raise ValueError(f"{redact(uri)}: not a .npy file (bad magic)")
    major = head[6]
    if major == 1:
        hlen, start = int.from_bytes(head[8:10], "little"), 10
    elif major in (2, 3):
        if len(head) < 12:
            raise ValueError(f"{redact(uri)}: truncated .npy header")
        hlen, start = int.from_bytes(head[8:12], "little"), 12
    else:
        raise ValueError(f"{redact(uri)}: unsupported .npy format version {major}")
    if hlen > NPY_MAX_HEADER:
        raise ValueError(
            f"{redact(uri)}: .npy header claims {hlen} bytes, more than the "
            f"{NPY_MAX_HEADER} read at most"
        )
    end = start + hlen
    if end > len(head):
        return np.dtype(np.uint8), (), end
    try:
        d = ast.literal_eval(head[start:end].decode("latin1" if major < 3 else "utf8"))
        dtype = np.lib.format.descr_to_dtype(d["descr"])
        shape, fortran = d["shape"], d["fortran_order"]
    except (ValueError, SyntaxError, KeyError, TypeError, RecursionError, MemoryError) as exc:
        raise ValueError(f"{redact(uri)}: malformed .npy header: {exc}") from None
    # int() would take 2.7 as 2, True as 1 and pass -3: a shape is non-negative integers
    if not isinstance(shape, tuple) or not all(is_int(n) and 0 <= n <= INT64_MAX for n in shape):
        raise ValueError(
            f"{redact(uri)}: malformed .npy header: shape {shape!r} is not a tuple of "
            "non-negative integers"
        )
    if not isinstance(fortran, bool):
        raise ValueError(
            f"{redact(uri)}: malformed .npy header: fortran_order {fortran!r} is not True or False"
        )
    if fortran and len(shape) > 1:
        raise ValueError(
            f"{redact(uri)}: Fortran-ordered arrays cannot be read by rows; save with C order"
        )
    if dtype.hasobject:
        raise ValueError(f"{redact(uri)}: .npy arrays of Python objects cannot be loaded")
    return dtype, tuple(int(n) for n in shape), end


class NpyDataset(_ShardedRecords):
    """``.npy`` files: one sample per file, or one ``(N, ...)`` array per shard.

    ``rows=True``: each file holds an array whose rows are samples;
    ``rows=False``: each file is one sample; ``rows=None``: rows when there is
    a single file. Headers are parsed once (one batched read of every file's
    first 4 KiB); samples are then read by range.
    """

    def __init__(
        self,
        uris: UriSpec,
        *,
        rows: bool | None = None,
        layout: str = "HWC",
        labels: Labels = None,
        transform: Transform | None = None,
        engine: RangeEngine | None = None,
    ) -> None:
        super().__init__(labels, transform)
        engine = self._engine = engine or default_engine()
        self._set_sources(resolve_uris(uris, engine, "NpyDataset"))
        self.rows = len(self.uris) == 1 if rows is None else bool(rows)
        self.layout = layout
        headers = self._read_headers(engine)
        dtype0, shape0, _ = headers[0]
        if self.rows:
            if not shape0:
                raise ValueError(f"{redact(self.uris[0])}: a 0-d array has no rows")
            self.sample_shape = tuple(shape0[1:])
        else:
            self.sample_shape = tuple(shape0)
        self.dtype = dtype0
        for uri, (dt, shape, _) in zip(self.uris, headers, strict=False):
            sample = tuple(shape[1:]) if self.rows else tuple(shape)
            if dt != self.dtype or sample != self.sample_shape or (self.rows and not shape):
                raise ValueError(
                    f"{redact(uri)}: holds {dt}{list(shape)}, unlike {redact(self.uris[0])} ({dtype0}{list(shape0)}); "
                    f"every file must hold samples of one shape and dtype"
                )
        counts = [shape[0] for _, shape, _ in headers] if self.rows else [1] * len(headers)
        self._set_shards(
            np.array([h[2] for h in headers]), np.array(counts), self.sample_nbytes or 0
        )

    def _read_headers(self, engine: RangeEngine) -> list[tuple[np.dtype, tuple[int, ...], int]]:
        sizes = np.array([engine.size(s) for s in self.sources], dtype=np.int64)
        for uri, size in zip(self.uris, sizes, strict=False):
            if size < 10:
                raise ValueError(f"{redact(uri)}: {size} bytes is too short for a .npy file")
        probe = np.minimum(sizes, _NPY_PROBE)
        headers = self._probe(engine, self.sources, probe)
        for uri, size, (_, _, off) in zip(self.uris, sizes.tolist(), headers, strict=True):
            if off > size:  # before reading it again: a lying length field reads nothing
                raise ValueError(
                    f"{redact(uri)}: .npy header claims {off} bytes, the file has {size}"
                )
        long = [i for i, h in enumerate(headers) if h[2] > probe[i]]
        if long:
            again = self._probe(
                engine, [self.sources[i] for i in long], np.array([headers[i][2] for i in long])
            )
            for i, h in zip(long, again, strict=True):
                headers[i] = h
        for uri, size, (dt, shape, off) in zip(self.uris, sizes.tolist(), headers, strict=True):
            # Python ints: an int64 product of huge dimensions would wrap around to a small
            # size and pass
            need = off + math.prod(shape) * dt.itemsize
            if need > size:
                raise ValueError(
                    f"{redact(uri)}: .npy header promises {need} bytes, the file has {size}"
                )
            if self.rows and shape and shape[0] > size:
                # rows of no bytes (a 0-byte dtype or a 0 dimension) take no room in the file:
                # a header may claim any number of them (and the sampler would then hold
                # them all)
                raise ValueError(
                    f"{redact(uri)}: .npy header's shape {list(shape)} is {shape[0]} rows of "
                    f"0 bytes, more rows than the file has bytes ({size})"
                )
        return headers

    @staticmethod
    def _probe(
        engine: RangeEngine, sources: Sequence[ParsedURI], lengths: np.ndarray
    ) -> list[tuple[np.dtype, tuple[int, ...], int]]:
        dst = np.concatenate(([0], np.cumsum(lengths)))
        table = np.stack(
            [np.arange(len(sources)), np.zeros(len(sources), np.int64), lengths, dst[:-1]], axis=1
        )
        buf = np.empty(int(dst[-1]), dtype=np.uint8)
        engine.read_into(sources, table.astype(np.int64), buf)
        return [
            parse_npy_header(buf[dst[i] : dst[i + 1]].tobytes(), s.display)
            for i, s in enumerate(sources)
        ]
