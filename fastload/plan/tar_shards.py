"""WebDataset-style tar shards as a dataset: one sample per key, its bytes read by range.

A shard ``shard-000000.tar`` holds members ``key.jpg``, ``key.cls``, ``key.json`` ...; the
members of one sample share a key (the name up to the first dot of its last component) and
follow each other. The dataset picks one *data field* per sample by extension (the first of
``field``'s extensions the sample has: ``"jpg;jpeg;png"``), whose bytes are the sample
(ragged, or fixed-size with ``shape``/``dtype`` so they go through the collate kernel), and
an optional *label field*: ``"cls"`` (the member's text is an integer) or ``"json:key"``
(a key, dotted for nested ones, of the member's JSON).

Nothing but headers is read to find the members (``fastload.plan.tar_index``), and labels
come from that same walk; with ``index=PATH`` the walk is kept in a sidecar file and reused
while every shard keeps its size and version tag.

Image fields (every data member a ``.jpg``/``.png``/... image, no ``shape``): the DataLoader
decodes them natively, as it does ImageFolder's files (fastload.batch.image_pipeline):
``transform=ImagePipeline(...)`` gives fixed-size batches, none gives each image decoded
whole (a RaggedBatch with shapes), and a bad image is named by shard and member.
``decode=False`` keeps the encoded bytes (``image_format`` says what they are: "jpeg",
"png", ..., "mixed"; ``sample_exts(indices)`` each sample's extension).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from fastload.checks import check_bool, check_choice
from fastload.errors import LabelError, MissingFieldError, TarFormatError
from fastload.plan.datasets import Dataset, Transform, _check_shape
from fastload.plan.image_datasets import decoded_item
from fastload.plan.shard_uris import resolve_shards
from fastload.plan.tar_format import key_conflict, split_key
from fastload.plan.tar_index import ShardIndex, index_shards, load_index, save_index
from fastload.storage.engine import RangeEngine, default_engine
from fastload.storage.object_version import Version, object_version
from fastload.storage.uri import parse_uri, redact

ON_ERROR = ("raise", "skip")
IMAGE_FORMATS = {
    "jpg": "jpeg",
    "jpeg": "jpeg",
    "png": "png",
    "webp": "webp",
    "ppm": "ppm",
    "pgm": "pgm",
    "bmp": "bmp",
    "tif": "tiff",
    "tiff": "tiff",
}
_MAX_PROBLEMS = 20  # messages kept about skipped samples (all are counted)
LABEL_MAX = 16 << 20  # a label member larger than this is no label (read whole otherwise)


def _exts(spec: str | Sequence[str], what: str) -> tuple[str, ...]:
    items = spec.split(";") if isinstance(spec, str) else list(spec)
    out = tuple(e.strip().lower().lstrip(".") for e in items if e.strip())
    if not out or not all(isinstance(e, str) for e in out):
        raise ValueError(f"{what}={spec!r} is invalid: name one or more extensions ('jpg;png')")
    return out


def _label_spec(label: str | None) -> tuple[str, list[str]] | None:
    """(extension, JSON key path) of the label field: "cls" -> ("cls", []), "json:a.b" ->
    ("json", ["a", "b"])."""
    if label is None:
        return None
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"label={label!r} is invalid: a field like 'cls' or 'json:label'")
    ext, _, path = label.partition(":")
    ext = ext.strip().lower().lstrip(".")
    if ext == "json" and not path:
        raise ValueError(f"label={label!r} is invalid: name the JSON key ('json:label')")
    if path and ext != "json":
        raise ValueError(f"label={label!r} is invalid: only a json field has keys")
    return ext, [p for p in path.split(".") if p] if path else []


def _edge_key(idx: ShardIndex, last: bool) -> str | None:
    """The key of the first (or last) sample member of a shard."""
    names = reversed(idx.names) if last else iter(idx.names)
    return next((sk[0] for sk in map(split_key, names) if sk is not None), None)


class TarShardDataset(Dataset):
    """Samples of WebDataset tar shards (plain, uncompressed tar: ustar, GNU, pax).

    ``shards``: URIs, a prefix (``s3://b/train/``: its ``.tar`` objects) or a brace pattern
    (``s3://b/train/shard-{000000..000099}.tar``), over any URI the engine reads.
    ``field``: the data field's extensions, first present wins. ``label``: ``"cls"``,
    ``"json:key"`` or None. ``shape``/``dtype``/``layout``: data fields of one fixed size
    (every data member must be exactly that many bytes); ragged bytes otherwise.
    ``index``: a sidecar file (path, or a URI to read one from) reused when it matches the
    shards, written (local paths) when missing or stale (or damaged, with on_error="skip";
    "raise" raises ValueError naming it). ``on_error="skip"``: a broken shard
    is indexed up to the break and samples without a needed field, with a label that does
    not parse or with a member name twice are left out, and so are members whose name
    webdataset would read another key from (``d/.x.jpg``), all counted in ``skipped``;
    ``"raise"`` (default): ``TarFormatError`` / ``MissingFieldError`` / ``LabelError``
    naming the shard, byte offset, member or sample key. Member names are split into key
    and field as webdataset does (``tar_format.split_key``). ``decode``: None (default)
    decodes image fields in the loader (``decodes_images``), False hands their bytes on,
    True requires an image field.
    """

    def __init__(
        self,
        shards: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        field: str | Sequence[str] = "jpg;jpeg;png;webp",
        *,
        label: str | None = None,
        shape: tuple[int, ...] | int | None = None,
        dtype: Any = np.uint8,
        layout: str | None = None,
        transform: Transform | None = None,
        index: str | os.PathLike[str] | None = None,
        on_error: str = "raise",
        decode: bool | None = None,
        engine: RangeEngine | None = None,
    ) -> None:
        super().__init__(None, transform)
        check_choice("on_error", on_error, ON_ERROR)
        if decode is not None:
            check_bool("decode", decode)
        self.on_error = on_error
        self.field_exts = _exts(field, "field")
        self._label = _label_spec(label)
        self.label_field = label
        self.sample_shape = None if shape is None else _check_shape(shape, "TarShardDataset")
        self.dtype = np.dtype(dtype)
        if self.dtype.hasobject:
            raise ValueError(f"TarShardDataset: dtype {self.dtype} holds Python objects")
        self.layout = layout if layout is not None else ("HWC" if shape is not None else "")
        if self.layout not in ("HWC", "CHW", ""):
            raise ValueError(f"layout={self.layout!r} is invalid: must be 'HWC', 'CHW' or ''")
        engine = self._engine = engine or default_engine()
        self._set_sources(resolve_shards(shards, engine, "TarShardDataset"))
        self.versions: list[Version] = [
            object_version(engine, s, fresh=False) for s in self.sources
        ]
        self.skipped: dict[str, int] = {}
        self.problems: list[str] = []
        indexes = self._indexes(engine, index)
        self._build_samples(indexes)
        self._read_labels(engine, indexes)
        # what a decode stage needs to know: the format of the data field's bytes
        used = {self.field_exts[int(i)] for i in np.unique(self._ext)} if len(self) else set()
        formats = {IMAGE_FORMATS.get(e) for e in used}
        self.image_format: str | None = formats.pop() if len(formats) == 1 else "mixed"
        images = bool(used) and all(e in IMAGE_FORMATS for e in used) and shape is None
        if decode and not images:
            raise ValueError(
                f"decode=True is invalid: the data field ({', '.join(sorted(used))}) is not "
                "an image field of encoded files"
                + (" (shape= makes it fixed-size records)" if shape is not None else "")
            )
        # the loader's image path decodes these samples (as ImageFolder's files)
        self.decodes_images = images if decode is None else decode
        if self.decodes_images:
            self.layout = "HWC"
        self._finish_init()

    # -- the index -----------------------------------------------------------------------
    def _indexes(
        self, engine: RangeEngine, index: str | os.PathLike[str] | None
    ) -> list[ShardIndex]:
        known: dict[str, ShardIndex] = {}
        where = None if index is None else os.fspath(index)
        if where is not None:
            try:
                loaded_all = load_index(engine, where) or []
            except ValueError as exc:  # not an index, or a damaged one
                if self.on_error == "raise":
                    raise
                # on_error="skip": the sidecar only saves a walk; walk the shards again
                warnings.warn(
                    f"TarShardDataset: {exc}; walking the shards again (on_error='skip')",
                    RuntimeWarning,
                    stacklevel=3,
                )
                loaded_all = []
            for loaded in loaded_all:
                known[loaded.uri] = loaded
        out: list[ShardIndex | None] = []
        todo: list[int] = []
        for i, (src, (size, tag)) in enumerate(zip(self.sources, self.versions, strict=True)):
            s = known.get(src.uri)
            fresh = s is not None and s.size == size and s.tag == tag
            if fresh and s is not None and s.problem and self.on_error == "raise":
                fresh = False  # indexed with on_error="skip": walk again and raise
            out.append(s if fresh else None)
            if not fresh:
                todo.append(i)
        if todo:
            walked = index_shards(
                engine,
                [self.sources[i] for i in todo],
                [self.versions[i][0] for i in todo],
                [self.versions[i][1] for i in todo],
                on_error=self.on_error,
            )
            for i, s in zip(todo, walked, strict=True):
                out[i] = s
        done = [s for s in out if s is not None]
        self.index_stats = {"reused": len(done) - len(todo), "walked": len(todo)}
        if where is not None and todo:
            if parse_uri(where).is_local:
                try:
                    save_index(parse_uri(where).path, done)
                except OSError as exc:
                    warnings.warn(
                        f"TarShardDataset: cannot write the index {where} ({exc}); "
                        f"the next run walks the shards again",
                        RuntimeWarning,
                        stacklevel=3,
                    )
            else:
                warnings.warn(
                    f"TarShardDataset: the index {redact(where)} is stale or incomplete for "
                    f"{len(todo)} shards and cannot be rewritten there; write a fresh one "
                    f"with `fastload index`",
                    RuntimeWarning,
                    stacklevel=3,
                )
        for s in done:
            if s.problem:
                self._skip("broken shard (indexed up to the break)", s.problem)
        return done

    def _skip(self, reason: str, message: str, count: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + count
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(message)

    # -- samples -------------------------------------------------------------------------
    def _build_samples(self, indexes: list[ShardIndex]) -> None:
        need = self.sample_nbytes
        shard, offset, size, ext, first, count, label_member = [], [], [], [], [], [], []
        keys: list[str] = []
        for si, idx in enumerate(indexes):
            uri = self.sources[si].display
            k = 0
            names = idx.names
            while k < len(names):
                sk = split_key(names[k])
                if sk is None:
                    self._unkeyed(si, names[k])
                    k += 1
                    continue
                key = sk[0]
                fields: dict[str, int] = {}
                repeated: list[str] = []
                j = end = k
                while j < len(names):
                    sj = split_key(names[j])
                    if sj is None:
                        # as webdataset: a member without a key (README, __meta__) does not
                        # end the sample around it
                        self._unkeyed(si, names[j])
                        j += 1
                        continue
                    if sj[0] != key:
                        break
                    if sj[1] in fields:
                        repeated.append(names[j])
                    fields.setdefault(sj[1], j)
                    j += 1
                    end = j
                data = next((e for e in self.field_exts if e in fields), None)
                problem = None
                if repeated:
                    # two members of one name in a row: which one is the sample is unknown
                    # (webdataset refuses them too); keeping the first would drop the other
                    # sample silently
                    problem = (
                        "duplicate member",
                        f"{uri}: sample {key!r} has {len(repeated)} duplicate member(s) "
                        f"({', '.join(repr(n) for n in repeated[:3])}): two samples under one "
                        f"key, or a shard written twice",
                    )
                elif data is None:
                    problem = (
                        "missing data field",
                        f"{uri}: sample {key!r} has no {' / '.join(self.field_exts)} member "
                        f"(it has {', '.join(sorted(fields))})",
                    )
                elif self._label is not None and self._label[0] not in fields:
                    problem = (
                        "missing label field",
                        f"{uri}: sample {key!r} has no .{self._label[0]} member for the "
                        f"label (it has {', '.join(sorted(fields))})",
                    )
                elif need is not None and int(idx.sizes[fields[data]]) != need:
                    problem = (
                        "wrong size",
                        f"{uri}: sample {key!r}: {key}.{data} holds "
                        f"{int(idx.sizes[fields[data]])} bytes, not the {need} of "
                        f"shape={self.sample_shape} dtype={self.dtype}",
                    )
                if problem is not None and problem[0].startswith("missing"):
                    problem = (problem[0], problem[1] + self._split_hint(indexes, si, key))
                if problem is not None:
                    if self.on_error == "raise":
                        cls = MissingFieldError if problem[0].startswith("missing") else ValueError
                        if problem[0] == "duplicate member":
                            cls = TarFormatError
                        exc = cls(problem[1])
                        if isinstance(exc, MissingFieldError):
                            exc.uri = self.sources[si].display
                        raise exc
                    self._skip(*problem)
                else:
                    assert data is not None  # no problem means a data field was found
                    m = fields[data]
                    shard.append(si)
                    offset.append(int(idx.offsets[m]))
                    size.append(int(idx.sizes[m]))
                    ext.append(self.field_exts.index(data))
                    first.append(k)
                    count.append(end - k)
                    keys.append(key)
                    label_member.append(fields[self._label[0]] if self._label else -1)
                k = j
        if not shard:
            raise ValueError(
                f"TarShardDataset: no samples with a {' / '.join(self.field_exts)} member in "
                f"{len(self.sources)} shards"
                + (
                    f" ({sum(self.skipped.values())} skipped: {self.problems[0]})"
                    if self.problems
                    else ""
                )
            )
        self._shard = np.asarray(shard, dtype=np.int64)
        self._offset = np.asarray(offset, dtype=np.int64)
        self._size = np.asarray(size, dtype=np.int64)
        self._ext = np.asarray(ext, dtype=np.int8)
        self._first = np.asarray(first, dtype=np.int64)
        self._count = np.asarray(count, dtype=np.int64)
        self._label_member = np.asarray(label_member, dtype=np.int64)
        self.keys = keys
        self._members = indexes  # for fields() and member_ranges()

    def _unkeyed(self, si: int, name: str) -> None:
        """A member without a sample key: skipped (as webdataset does), unless webdataset
        would read a key out of its name that the plain rule does not (``key_conflict``)."""
        why = key_conflict(name)
        if why is None:
            return
        message = f"{self.sources[si].display}: member {name!r}: {why}; rename or remove it"
        if self.on_error == "raise":
            raise TarFormatError(message)
        self._skip("ambiguous member name", message)

    def _split_hint(self, indexes: list[ShardIndex], si: int, key: str) -> str:
        """Where sample ``key`` is the last of shard ``si`` and the next one starts with it
        (or the other way round): a sample split across two shards."""
        for other, last in ((si - 1, False), (si + 1, True)):
            if 0 <= other < len(indexes) and _edge_key(indexes[si], last) == key:
                if _edge_key(indexes[other], not last) == key:
                    return (
                        f"; its other members are in {self.sources[other].display}: a sample "
                        f"split across two shards (write each sample's members into one shard)"
                    )
        return ""

    def _read_labels(self, engine: RangeEngine, indexes: list[ShardIndex]) -> None:
        if self._label is None:
            return
        raw: list[bytes | None] = []
        missing = []
        for i, (si, m) in enumerate(zip(self._shard, self._label_member, strict=True)):
            data = indexes[si].inline.get(int(m))
            raw.append(data)
            if data is None:
                missing.append(i)
        # a member that large is no label: do not read gigabytes to find out
        oversized = {i for i in missing if self._label_nbytes(indexes, i) > LABEL_MAX}
        for i in sorted(oversized):
            exc = LabelError(
                f"{self.sources[int(self._shard[i])].display}: sample {self.keys[i]!r}: its "
                f".{self._label[0]} member holds {self._label_nbytes(indexes, i)} bytes (a "
                f"label field holds at most {LABEL_MAX})"
            )
            if self.on_error == "raise":
                raise exc
            self._skip("bad label", str(exc))
        missing = [i for i in missing if i not in oversized]
        if missing:  # labels too large for the index, or outside the walk's windows
            rows = [
                (
                    int(self._shard[i]),
                    int(indexes[self._shard[i]].offsets[self._label_member[i]]),
                    int(indexes[self._shard[i]].sizes[self._label_member[i]]),
                )
                for i in missing
            ]
            lengths = np.array([n for _, _, n in rows], dtype=np.int64)
            dst = np.concatenate(([0], np.cumsum(lengths)))
            table = np.array(
                [(s, o, n, d) for (s, o, n), d in zip(rows, dst[:-1], strict=True) if n > 0],
                dtype=np.int64,
            ).reshape(-1, 4)
            buf = np.empty(int(dst[-1]), dtype=np.uint8)
            engine.read_into(self.sources, table, buf)
            for k, i in enumerate(missing):
                raw[i] = buf[dst[k] : dst[k + 1]].tobytes()
        values, bad = [], []
        for i, b in enumerate(raw):
            if i in oversized:
                bad.append(i)
                continue
            try:
                values.append(self._parse_label(i, b or b""))
            except LabelError as exc:
                if self.on_error == "raise":
                    raise
                self._skip("bad label", str(exc))
                bad.append(i)
        if bad:  # on_error="skip": those samples are left out, as ones without a label
            keep = np.ones(len(raw), dtype=bool)
            keep[bad] = False
            self._keep_samples(keep)
        self._labels = np.asarray(values)

    def _label_nbytes(self, indexes: list[ShardIndex], i: int) -> int:
        return int(indexes[int(self._shard[i])].sizes[int(self._label_member[i])])

    def _keep_samples(self, keep: np.ndarray) -> None:
        if not keep.any():
            raise ValueError(
                f"TarShardDataset: no sample of {len(self.sources)} shards has a label "
                f"({sum(self.skipped.values())} skipped: {self.problems[0]})"
            )
        for name in ("_shard", "_offset", "_size", "_ext", "_first", "_count", "_label_member"):
            setattr(self, name, getattr(self, name)[keep])
        self.keys = [k for k, ok in zip(self.keys, keep.tolist(), strict=True) if ok]

    def _parse_label(self, i: int, data: bytes) -> Any:
        assert self._label is not None
        ext, path = self._label
        where = f"{self.sources[int(self._shard[i])].display}: sample {self.keys[i]!r}"
        try:
            text = data.decode("utf-8")
            if ext != "json":
                return int(text.strip())
            value: Any = json.loads(text)
            for key in path:
                value = value[key]
            return value
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSON nested deep
            raise LabelError(f"{where}: .{ext} does not hold a label ({exc})") from None
        except (KeyError, IndexError, TypeError):
            raise LabelError(
                f"{where}: .json has no key {'.'.join(path)!r} for the label"
            ) from None

    # -- the Dataset interface -----------------------------------------------------------
    def __len__(self) -> int:
        return len(self._shard)

    @property
    def max_object_size(self) -> int:
        return max(size for size, _ in self.versions)

    def sample_ranges(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = self.check_indices(indices)
        return self._shard[idx], self._offset[idx], self._size[idx]

    def describe(self, index: int) -> str:
        src, off, length = (int(a[index]) for a in (self._shard, self._offset, self._size))
        ext = self.field_exts[int(self._ext[index])]
        return (
            f"sample {index} ({self.keys[index]}.{ext} in {self.sources[src].display} "
            f"bytes {off}-{off + length - 1})"
        )

    def member_name(self, index: int) -> str:
        return f"{self.keys[index]}.{self.field_exts[int(self._ext[index])]}"

    def __getitem__(self, index: int) -> Any:
        """One sample (with its label): decoded ``(H, W, 3)`` uint8 where ``decodes_images``,
        its bytes otherwise. Not the fast path: use DataLoader."""
        item = super().__getitem__(index)
        return decoded_item(self, item, index) if self.decodes_images else item

    # -- more than the data field ------------------------------------------------------
    def sample_exts(self, indices: np.ndarray) -> list[str]:
        """The data field's extension of each sample (where ``field`` names several)."""
        idx = self.check_indices(indices)
        return [self.field_exts[int(e)] for e in self._ext[idx]]

    def member_ranges(
        self, indices: np.ndarray, ext: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(shard, offset, length) of field ``ext`` of each sample; length -1 where absent."""
        idx = self.check_indices(indices)
        ext = ext.lower().lstrip(".")
        shard = self._shard[idx]
        off = np.full(len(idx), -1, dtype=np.int64)
        length = np.full(len(idx), -1, dtype=np.int64)
        for pos, i in enumerate(idx):
            members = self._members[int(shard[pos])]
            for m in range(int(self._first[i]), int(self._first[i] + self._count[i])):
                sk = split_key(members.names[m])
                if sk is not None and sk[1] == ext:
                    off[pos], length[pos] = members.offsets[m], members.sizes[m]
                    break
        return shard, off, length

    def fields(self, index: int) -> dict[str, bytes]:
        """Every member of sample ``index`` by extension, read now (not the fast path)."""
        i = int(self.check_indices(np.array([index]))[0])
        members = self._members[int(self._shard[i])]
        ms = range(int(self._first[i]), int(self._first[i] + self._count[i]))
        lengths = np.array([members.sizes[m] for m in ms], dtype=np.int64)
        dst = np.concatenate(([0], np.cumsum(lengths)))
        table = np.array(
            [(0, members.offsets[m], members.sizes[m], d) for m, d in zip(ms, dst, strict=False)],
            dtype=np.int64,
        ).reshape(-1, 4)
        buf = np.empty(int(dst[-1]), dtype=np.uint8)
        table = table[table[:, 2] > 0]
        if len(table):
            (self._engine or default_engine()).read_into(
                [self.sources[int(self._shard[i])]], table, buf
            )
        out: dict[str, bytes] = {}
        for k, m in enumerate(ms):
            sk = split_key(members.names[m])
            if sk is not None:
                out.setdefault(sk[1], buf[dst[k] : dst[k + 1]].tobytes())
        return out
