"""Parquet files as a dataset: one sample per row, row groups read by ranged reads.

``ParquetDataset(uris, columns=[...], label="y")`` (or ``image="jpeg"``) reads each
file's footer once (the tails of all files in one engine call; parsed by pyarrow), then,
for a batch, the column chunks of the row groups its rows live in: one engine call per file
of the batch writes every chunk at its file offset into a sparse, file-sized anonymous
mapping (only the pages written take memory), and pyarrow decodes those row groups from
it, so no byte is copied on the way in. Decoded row groups are kept in a small cache, as a
batch rarely covers a whole row group.

- ``columns``: fixed-size columns, the sample: one ``fixed_size_binary`` or fixed-size list
  column (``shape=`` gives the record its shape, e.g. ``(32, 32, 3)`` uint8 pixels, and
  ``layout`` "HWC"/"CHW"), or scalar numeric columns (a sample is their ``(len(columns),)``
  vector in one dtype). The loader's collate kernel makes the batch (layout, dtype,
  mean/std) from views of the decoded Arrow buffers.
- ``image``: a binary column of encoded images: a sample is its raw bytes and a batch a
  ``RaggedBatch`` (the hand-off point for a native decode stage).
- ``label``: a column read whole at construction (labels of every row).

Order (:class:`RowGroupSampler`): with ``shuffle`` the row groups are permuted each epoch
and the rows inside each row group too, and ranks take contiguous blocks of that order, so
a rank reads only its own row groups and a batch touches one or two of them; every loader
knob acts as for the other datasets (seed, epoch, ranks, ``sampler_drop_last``, workers
inside another loader, resume). pyarrow is imported only by this module.
"""

from __future__ import annotations

import functools
import hashlib
import mmap
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastload.errors import ParquetFormatError
from fastload.plan.datasets import Dataset, Transform, UriSpec, resolve_uris
from fastload.plan.distributed import rank_and_world_size, worker_and_num_workers
from fastload.plan.options import LoaderConfig
from fastload.plan.samplers import Sampler, make_sampler
from fastload.storage.engine import RangeEngine, default_engine
from fastload.storage.read_many import object_sizes
from fastload.storage.uri import redact

_TAIL = 64 << 10  # bytes of each file's end read to find its footer (longer ones: read again)
_MAGIC = b"PAR1"
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)  # Linux; Python does not name it


@dataclass(frozen=True)
class _Chunk:
    file: int
    group: int
    offset: int
    length: int


def _sparse(nbytes: int) -> mmap.mmap:
    """A zero-filled anonymous mapping of ``nbytes`` that takes memory only where written."""
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE
    return mmap.mmap(-1, max(int(nbytes), 1), flags=flags)


def _chunk_range(col: Any) -> tuple[int, int]:
    start = col.data_page_offset
    if col.has_dictionary_page and col.dictionary_page_offset is not None:
        start = min(start, col.dictionary_page_offset)
    return int(start), int(col.total_compressed_size)


def _format_error(uri: str, what: str) -> ParquetFormatError:
    """A ParquetFormatError naming ``uri`` (without its credentials)."""
    shown = redact(uri)
    err = ParquetFormatError(f"{shown}: {what}")
    err.uri = shown
    return err


def _plain_type(t: Any) -> Any:
    """A column's value type: a dictionary-encoded column (the Arrow schema a writer of
    DictionaryArrays stores) decodes to its dictionary's values."""
    import pyarrow as pa

    return t.value_type if pa.types.is_dictionary(t) else t


def _schema_difference(want: Any, got: Any) -> str:
    """How schema ``got`` differs from ``want``, in a few words."""
    if want.names != got.names:
        return f"its columns are {', '.join(got.names)}, not {', '.join(want.names)}"
    for a, b in zip(want, got, strict=True):
        if not a.equals(b):
            here, there = (f"{f.type}{'' if f.nullable else ' not null'}" for f in (b, a))
            return f"column {a.name!r} is {here}, not {there}"
    return "its schema differs"


def _check_layout(uri: str, md: Any, data_end: int) -> None:
    """Every row group's row count and column chunk of footer ``md`` checked against the
    file: chunks lie in its first ``data_end`` bytes (before the footer), so a truncated
    file or a lying footer is named here, not met as garbage pages mid-epoch (or as a
    read past the object's end)."""
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        if rg.num_rows < 0:
            raise _format_error(uri, f"row group {g} claims {rg.num_rows} rows")
        for j in range(rg.num_columns):
            col = rg.column(j)
            off, n = _chunk_range(col)
            # (an empty row group's chunk starts at 0: its data page offset, pyarrow's too)
            if off < 0 or n < 0 or off + n > data_end:
                raise _format_error(
                    uri,
                    f"row group {g} column {col.path_in_schema!r} claims bytes {off}-"
                    f"{off + n - 1}, outside the file's data (bytes 0-{data_end - 1}): the "
                    "file is truncated or its footer is corrupt",
                )


class ParquetDataset(Dataset):
    """Rows of Parquet files (see the module docstring)."""

    def __init__(
        self,
        uris: UriSpec,
        columns: Sequence[str] | None = None,
        label: str | None = None,
        image: str | None = None,
        *,
        shape: Sequence[int] | None = None,
        dtype: Any = None,
        layout: str = "HWC",
        transform: Transform | None = None,
        cache_row_groups: int = 8,
        engine: RangeEngine | None = None,
    ) -> None:
        import pyarrow as pa

        super().__init__(None, transform)
        engine = self._engine = engine or default_engine()
        self._set_sources(resolve_uris(uris, engine, "ParquetDataset"))
        if bool(columns) == bool(image):
            raise ValueError(
                "ParquetDataset: give columns=[...] (fixed-size columns) or image='...' "
                "(encoded images, raw bytes), not both and not neither"
            )
        self.columns = list(columns or [])
        self._record: tuple[np.dtype, int] | None = None
        self.image = image
        self.label = label
        self.file_sizes = object_sizes(engine, self.sources)
        self.metadata = self._read_footers(engine)
        schema = self.metadata[0].schema.to_arrow_schema()
        for uri, md in zip(self.uris, self.metadata, strict=True):
            other = md.schema.to_arrow_schema()
            if not other.equals(schema):
                raise ValueError(
                    f"{redact(uri)}: its schema differs from {redact(self.uris[0])}'s: "
                    f"{_schema_difference(schema, other)}"
                )
        self.schema = schema
        self.table_columns = [
            *self.columns,
            *([image] if image else []),
            *([label] if label else []),
        ]
        for name in self.table_columns:
            if schema.get_field_index(name) < 0:
                raise ValueError(
                    f"ParquetDataset: no column {name!r} in {redact(self.uris[0])} "
                    f"(columns: {', '.join(schema.names)})"
                )
        self.sample_shape, self.dtype, self.layout = self._sample_type(pa, shape, dtype, layout)
        counts = [
            [md.row_group(g).num_rows for g in range(md.num_row_groups)] for md in self.metadata
        ]
        self.group_file = np.array([f for f, c in enumerate(counts) for _ in c], dtype=np.int64)
        self.group_index = np.array([g for c in counts for g in range(len(c))], dtype=np.int64)
        self.group_rows = np.array([n for c in counts for n in c], dtype=np.int64)
        self.group_starts = np.concatenate(([0], np.cumsum(self.group_rows))).astype(np.int64)
        self.cache_row_groups = max(1, int(cache_row_groups))
        self._cache: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._inflight: dict[int, threading.Event] = {}
        self.reads = 0  # row groups read (the cache's misses), for tests and reports
        if label is not None:
            self._labels = self._read_label(engine)
        self._finish_init()

    # -- construction -------------------------------------------------------------------
    def _read_footers(self, engine: RangeEngine) -> list[Any]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        sizes = self.file_sizes
        for uri, n in zip(self.uris, sizes.tolist(), strict=True):
            if n < 12:
                raise _format_error(uri, f"{n} bytes is too short for a Parquet file")
        tails = [bytes(v) for v in self._tails(engine, np.minimum(sizes, _TAIL))]
        need = []
        for i, (uri, tail) in enumerate(zip(self.uris, tails, strict=True)):
            if tail[-4:] != _MAGIC:
                raise _format_error(uri, "not a Parquet file (no PAR1 at its end)")
            footer = int.from_bytes(tail[-8:-4], "little") + 8
            if footer > sizes[i] - 4:  # the file starts with PAR1 too
                raise _format_error(
                    uri, f"its footer claims {footer} bytes, the file has {sizes[i]}"
                )
            need.append(footer)
        longer = [i for i, n in enumerate(need) if n > len(tails[i])]
        if longer:
            again = self._tails(engine, np.array([need[i] for i in longer]), longer)
            for i, v in zip(longer, again, strict=True):
                tails[i] = bytes(v)
        out = []
        for uri, tail, n, size in zip(self.uris, tails, need, sizes.tolist(), strict=True):
            try:
                md = pq.read_metadata(pa.BufferReader(tail[-n:]))
            except (OSError, ValueError, pa.ArrowException) as exc:
                raise _format_error(uri, f"malformed Parquet footer: {exc}") from None
            _check_layout(uri, md, size - n)
            out.append(md)
        return out

    def _tails(
        self, engine: RangeEngine, lengths: np.ndarray, which: Sequence[int] | None = None
    ) -> list[memoryview]:
        idx = list(range(len(self.sources))) if which is None else list(which)
        lengths = np.asarray(lengths, dtype=np.int64)
        dst = np.concatenate(([0], np.cumsum(lengths)))
        table = np.stack(
            [np.arange(len(idx)), self.file_sizes[idx] - lengths, lengths, dst[:-1]], axis=1
        ).astype(np.int64)
        buf = np.empty(int(dst[-1]), dtype=np.uint8)
        engine.read_into([self.sources[i] for i in idx], table, buf)
        view = memoryview(buf)  # type: ignore[arg-type]  # numpy's stubs lag the buffer protocol
        return [view[a:b] for a, b in zip(dst[:-1].tolist(), dst[1:].tolist(), strict=True)]

    def _sample_type(
        self, pa: Any, shape: Sequence[int] | None, dtype: Any, layout: str
    ) -> tuple[tuple[int, ...] | None, np.dtype, str]:
        if self.image is not None:
            t = _plain_type(self.schema.field(self.image).type)
            if not (pa.types.is_binary(t) or pa.types.is_large_binary(t)):
                raise ValueError(f"ParquetDataset: image column {self.image!r} is {t}, not binary")
            return None, np.dtype(np.uint8), ""
        types = [_plain_type(self.schema.field(c).type) for c in self.columns]
        record = [
            t for t in types if pa.types.is_fixed_size_binary(t) or pa.types.is_fixed_size_list(t)
        ]
        if record:
            if len(self.columns) != 1:
                raise ValueError(
                    "ParquetDataset: a fixed-size list / binary column is a whole sample; "
                    "give it alone in columns="
                )
            t = record[0]
            if pa.types.is_fixed_size_binary(t):
                base, count = np.dtype(np.uint8), t.byte_width
            else:
                if not pa.types.is_primitive(t.value_type):
                    raise ValueError(f"ParquetDataset: column {self.columns[0]!r} holds {t}")
                base, count = np.dtype(t.value_type.to_pandas_dtype()), t.list_size
            self._record = (base, count)
            out = tuple(int(d) for d in shape) if shape is not None else (count,)
            if int(np.prod(out)) != count:
                raise ValueError(
                    f"ParquetDataset: shape={out} holds {int(np.prod(out))} values, column "
                    f"{self.columns[0]!r} has {count} per row"
                )
            if dtype is not None and np.dtype(dtype) != base:
                raise ValueError(
                    f"ParquetDataset: dtype={np.dtype(dtype)} differs from the column's {base} "
                    "(convert in the loader: DataLoader(dtype=...))"
                )
            lay = layout if len(out) == 3 else ""
            return out, base, lay
        for c, t in zip(self.columns, types, strict=True):
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
                raise ValueError(
                    f"ParquetDataset: column {c!r} is {t}; columns= takes fixed-size columns "
                    "(numbers, fixed_size_binary, fixed-size lists)"
                )
        self._record = None
        common = (
            np.dtype(dtype)
            if dtype is not None
            else np.result_type(*[np.dtype(t.to_pandas_dtype()) for t in types])
        )
        if shape is not None and tuple(shape) != (len(self.columns),):
            raise ValueError(f"ParquetDataset: shape={tuple(shape)} must be ({len(self.columns)},)")
        return (len(self.columns),), common, ""

    def _read_label(self, engine: RangeEngine) -> np.ndarray:
        assert self.label is not None
        parts = [
            self._decode(g, [self.label], engine, None, None)[self.label]
            for g in range(len(self.group_rows))
        ]
        return np.concatenate(parts) if parts else np.empty(0)

    # -- Dataset ------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.group_starts[-1])

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_cache", None)
        state.pop("_cache_lock", None)
        state.pop("_inflight", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cache = OrderedDict()
        self._cache_lock = threading.Lock()
        self._inflight = {}

    @property
    def max_object_size(self) -> int:
        return int(self.file_sizes.max())

    def locate(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row group number, row inside it) of each index."""
        idx = self.check_indices(indices)
        group = np.searchsorted(self.group_starts, idx, side="right") - 1
        return group, idx - self.group_starts[group]

    def sample_ranges(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Rows are not byte ranges: read_batch reads their row groups. The planner sees
        # each row as an empty range of its file (nothing for it to read).
        group, _ = self.locate(indices)
        zeros = np.zeros(len(group), dtype=np.int64)
        return self.group_file[group], zeros, zeros

    def describe(self, index: int) -> str:
        group, row = (int(a[0]) for a in self.locate(np.array([index])))
        f = int(self.group_file[group])
        return (
            f"row {index} ({self.sources[f].display} row group {int(self.group_index[group])}, "
            f"row {row})"
        )

    def make_sampler(self, config: LoaderConfig) -> Sampler:
        """The loader's sampler: row groups and rows shuffled (see RowGroupSampler); weighted
        or with-replacement draws use the generic samplers."""
        if config.sampler_type == "weighted_random" or config.replacement:
            return make_sampler(config, len(self))
        rank, world = rank_and_world_size(config)
        worker, workers = worker_and_num_workers(config)
        return RowGroupSampler(
            self.group_rows,
            # any shuffle ("block" too) is the row-group shuffle: row groups are the blocks
            shuffle=bool(config.shuffle) or config.sampler_type in ("random", "distributed_random"),
            seed=config.sampler_seed,
            rank=rank,
            world_size=world,
            drop_last=config.rank_drop_last,
            worker_id=worker,
            num_workers=workers,
            batch_size=config.batch_size,
        )

    # -- reading ------------------------------------------------------------------------
    def _chunks(self, group: int, names: Sequence[str]) -> list[_Chunk]:
        f, g = int(self.group_file[group]), int(self.group_index[group])
        rg = self.metadata[f].row_group(g)
        out = []
        for j in range(rg.num_columns):
            col = rg.column(j)
            top = col.path_in_schema.split(".")[0]
            if top in names:
                off, n = _chunk_range(col)
                out.append(_Chunk(f, g, off, n))
        return out

    def _fetch(
        self,
        groups: Sequence[int],
        names: Sequence[str],
        engine: RangeEngine,
        settings: Any = None,
        cancel: Any = None,
    ) -> dict[int, Any]:
        """Read the ``names`` column chunks of row groups ``groups`` in ONE engine call (its
        ranges in parallel): each file's chunks land at their file offsets in its slice of
        one sparse mapping. Returns a ``pq.ParquetFile`` over that slice for each file."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        files = sorted({int(self.group_file[g]) for g in groups})
        place = {f: k for k, f in enumerate(files)}
        sizes = [int(self.file_sizes[f]) for f in files]
        bases = np.concatenate(([0], np.cumsum(sizes, dtype=np.int64))).tolist()
        rows = [
            (place[c.file], c.offset, c.length, bases[place[c.file]] + c.offset)
            for g in groups
            for c in self._chunks(g, names)
        ]
        area = _sparse(bases[-1])
        kw: dict[str, Any] = {"cancel": cancel}
        if settings is not None:
            kw["settings"] = settings
        table = np.array(rows, dtype=np.int64).reshape(-1, 4)
        engine.read_into([self.sources[f] for f in files], table, area, **kw)
        whole = pa.py_buffer(area)
        return {
            f: pq.ParquetFile(
                pa.BufferReader(whole.slice(bases[k], sizes[k])), metadata=self.metadata[f]
            )
            for k, f in enumerate(files)
        }

    def _decode(
        self,
        group: int,
        names: list[str],
        engine: RangeEngine,
        settings: Any,
        cancel: Any,
    ) -> dict[str, Any]:
        """Read and decode the ``names`` columns of row group ``group`` (no cache)."""
        f, g = int(self.group_file[group]), int(self.group_index[group])
        reader = self._fetch([group], names, engine, settings, cancel)[f]
        decoded = self._decoded(f, [g], lambda: reader.read_row_group(g, columns=names))
        where = f"{self.sources[f].display} row group {g}"
        return {name: self._column(decoded.column(name), name, where) for name in names}

    def _decoded(self, f: int, groups: Sequence[int], read: Any) -> Any:
        """``read()`` (pyarrow decoding row groups ``groups`` of file ``f``), its failures
        raised as a ParquetFormatError naming the file and the row groups."""
        import pyarrow as pa

        try:
            return read()
        except (OSError, ValueError, pa.ArrowException) as exc:
            which = ", ".join(str(g) for g in groups)
            raise _format_error(
                self.uris[f],
                f"row group {which} does not decode ({type(exc).__name__}: {exc}); the file "
                "is damaged, or changed since its footer was read",
            ) from None

    def read_table(
        self,
        columns: Sequence[str] | None = None,
        row_groups: Sequence[int] | None = None,
        *,
        engine: RangeEngine | None = None,
    ) -> Any:
        """Columns of row groups as one ``pyarrow.Table``, rows in the order given.

        ``columns``: default the dataset's (its columns, image and label); ``row_groups``:
        numbers over all files in order, as in ``group_rows`` (default all). Every column
        chunk wanted is read in one engine call, so the ranges of all row groups and files
        are in flight together. pyarrow then decodes them with its threads, straight from
        the engine's buffer."""
        import pyarrow as pa

        names = list(columns) if columns is not None else self.table_columns
        for name in names:
            if self.schema.get_field_index(name) < 0:
                raise ValueError(
                    f"ParquetDataset.read_table: no column {name!r} in {redact(self.uris[0])} "
                    f"(columns: {', '.join(self.schema.names)})"
                )
        count = len(self.group_rows)
        groups = list(range(count)) if row_groups is None else [int(g) for g in row_groups]
        for g in groups:
            if not 0 <= g < count:
                raise ValueError(
                    f"ParquetDataset.read_table: row group {g} is out of range (the dataset "
                    f"has {count}: 0-{count - 1})"
                )
        readers = self._fetch(groups, names, engine or self._engine or default_engine())
        parts = []
        run: list[int] = []
        for i, g in enumerate(groups):  # runs of one file's row groups: one decode call each
            run.append(int(self.group_index[g]))
            f = int(self.group_file[g])
            if i + 1 == len(groups) or int(self.group_file[groups[i + 1]]) != f:
                read = functools.partial(readers[f].read_row_groups, run, columns=names)
                parts.append(self._decoded(f, run, read))
                run = []
        if not parts:
            return self.schema.empty_table().select(names)
        return pa.concat_tables(parts)

    def _column(self, col: Any, name: str, where: str) -> Any:
        """One decoded column as numpy: records (rows, ...), scalars (rows,), images
        (values, offsets). ``where``: the file and row group, for errors."""
        import pyarrow as pa

        arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        if arr.null_count:
            row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(
                f"ParquetDataset: column {name!r} has nulls ({where}, row {row} first); "
                "samples and labels must be whole"
            )
        if name == self.image:
            bufs = arr.buffers()
            width = np.int64 if pa.types.is_large_binary(arr.type) else np.int32
            offsets = np.frombuffer(bufs[1], dtype=width)[arr.offset : arr.offset + len(arr) + 1]
            data = (
                np.frombuffer(bufs[2], dtype=np.uint8)
                if bufs[2] is not None
                else np.empty(0, np.uint8)
            )
            return data, offsets.astype(np.int64)
        if name in self.columns and self._record is not None:
            base, count = self._record
            if pa.types.is_fixed_size_binary(arr.type):
                raw = np.frombuffer(arr.buffers()[1], dtype=np.uint8)
                start = arr.offset * count
                values = raw[start : start + len(arr) * count]
            else:
                values = arr.flatten().to_numpy(zero_copy_only=False)
            return values.view(base).reshape(len(arr), *self.sample_shape)  # type: ignore[misc]
        return arr.to_numpy(zero_copy_only=False)

    def _groups(
        self, groups: Sequence[int], engine: RangeEngine, settings: Any, cancel: Any
    ) -> dict[int, dict[str, Any]]:
        """The decoded row groups, from the cache or read now; a row group another reader
        is reading already is waited for, not read twice."""
        names = [*self.columns, *([self.image] if self.image else [])]
        found: dict[int, dict[str, Any]] = {}
        for g in groups:
            while g not in found:
                with self._cache_lock:
                    hit = self._cache.get(g)
                    if hit is not None:
                        self._cache.move_to_end(g)
                        found[g] = hit
                        break
                    busy = self._inflight.get(g)
                    if busy is None:
                        busy = self._inflight[g] = threading.Event()
                        mine = True
                    else:
                        mine = False
                if not mine:
                    busy.wait()
                    with self._cache_lock:
                        hit = self._cache.get(g)
                    if hit is not None:
                        found[g] = hit
                    continue  # evicted already, or its reader failed: try again
                try:
                    found[g] = self._decode(g, names, engine, settings, cancel)
                    with self._cache_lock:
                        self.reads += 1
                        self._cache[g] = found[g]
                        while len(self._cache) > self.cache_row_groups:
                            self._cache.popitem(last=False)
                finally:
                    with self._cache_lock:
                        self._inflight.pop(g, None)
                    busy.set()
        return found

    def read_batch(
        self, indices: np.ndarray, engine: RangeEngine, settings: Any = None, cancel: Any = None
    ) -> list[np.ndarray]:
        """The samples of ``indices``: views of the decoded row groups (records or feature
        vectors), or raw bytes (image=), in order."""
        group, row = self.locate(indices)
        data = self._groups(sorted(set(group.tolist())), engine, settings, cancel)
        if self.image is not None:
            out = []
            for g, r in zip(group.tolist(), row.tolist(), strict=True):
                values, offsets = data[g][self.image]
                out.append(values[offsets[r] : offsets[r + 1]])
            return out
        if self._record is not None:
            col = self.columns[0]
            return [data[g][col][r] for g, r in zip(group.tolist(), row.tolist(), strict=True)]
        stacked = {
            g: np.stack([np.asarray(d[c], dtype=self.dtype) for c in self.columns], axis=1)
            for g, d in data.items()
        }
        return [stacked[g][r] for g, r in zip(group.tolist(), row.tolist(), strict=True)]

    def __getitem__(self, index: int) -> Any:
        sample = self.read_batch(np.array([index]), self._engine or default_engine())[0]
        labels = self.labels_for(np.array([index]))
        return sample if labels is None else (sample, labels[0])


class RowGroupSampler(Sampler):
    """Rows in row-group order. With ``shuffle``: each epoch permutes the row groups and,
    inside each, its rows (seeded by (seed, epoch)), the same on every rank; rank r takes
    the r-th contiguous block of ``rank_len`` rows of that order (padded from the order's
    start, or its tail dropped with ``drop_last``), so ranks read disjoint row groups."""

    def __init__(self, group_rows: np.ndarray, *, shuffle: bool = False, **common: Any) -> None:
        rows = np.asarray(group_rows, dtype=np.int64)
        super().__init__(int(rows.sum()), **common)
        self.group_rows = rows
        self.shuffle = bool(shuffle)

    def _identity(self) -> dict[str, Any]:
        digest = hashlib.blake2b(self.group_rows.tobytes(), digest_size=16).hexdigest()
        return {**super()._identity(), "shuffle": self.shuffle, "row_groups": digest}

    def _order(self, epoch: int) -> np.ndarray:
        n = self.dataset_len
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        rng = self._generator(epoch)
        starts = np.concatenate(([0], np.cumsum(self.group_rows)))
        groups = rng.permutation(len(self.group_rows))
        # rows inside each group: one random key per row, sorted within its group
        keys = rng.random(n)
        group_of = np.repeat(np.arange(len(self.group_rows)), self.group_rows)
        rank_of_group = np.empty(len(groups), dtype=np.int64)
        rank_of_group[groups] = np.arange(len(groups))
        order = np.lexsort((keys, rank_of_group[group_of]))
        assert len(order) == int(starts[-1])
        return order.astype(np.int64)

    def _rank_indices(self, epoch: int) -> np.ndarray:
        order = self._order(epoch)
        count = self.rank_len
        if self.world_size == 1 and count == len(order):
            return order
        # contiguous blocks: positions rank * count ... (wrapping around to pad)
        positions = np.arange(self.rank * count, (self.rank + 1) * count)
        return order[positions % max(len(order), 1)] if len(order) else order[:0]


__all__ = ["ParquetDataset", "RowGroupSampler"]
