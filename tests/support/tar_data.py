"""WebDataset-style tar shards for the tests, written with Python's own ``tarfile``.

Sample ``i`` has key ``sample{i:06d}`` and members ``.bin`` (its payload: ``payload_of(i)``,
sizes vary unless ``size`` is fixed), ``.cls`` (``i % 10`` as text) and ``.json``
(``{"label": i % 7, "i": i}``), so every byte a test reads can be checked.
"""

from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np

FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}


def payload_of(i: int, size: int | None = None) -> bytes:
    n = size if size is not None else 200 + (i * 7919) % 3000
    return np.random.default_rng(i).integers(0, 256, n, dtype=np.uint8).tobytes()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_700_000_000
    tar.addfile(info, io.BytesIO(data))


def sample_members(i: int, size: int | None = None, prefix: str = "") -> list[tuple[str, bytes]]:
    key = f"{prefix}sample{i:06d}"
    return [
        (f"{key}.bin", payload_of(i, size)),
        (f"{key}.cls", str(i % 10).encode()),
        (f"{key}.json", json.dumps({"label": i % 7, "i": i}).encode()),
    ]


def write_tar(path: str, members: list[tuple[str, bytes]], fmt: str = "ustar") -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with tarfile.open(path, "w", format=FORMATS[fmt]) as tar:
        for name, data in members:
            _add(tar, name, data)
    return path


def write_shards(
    folder: str,
    n: int,
    per_shard: int,
    *,
    size: int | None = None,
    fmt: str = "ustar",
    prefix: str = "",
    name: str = "shard-{:06d}.tar",
) -> list[str]:
    """``n`` samples in shards of ``per_shard``; returns the shard paths."""
    paths = []
    for s in range(-(-n // per_shard)):
        members = [
            m
            for i in range(s * per_shard, min((s + 1) * per_shard, n))
            for m in sample_members(i, size, prefix)
        ]
        paths.append(write_tar(os.path.join(folder, name.format(s)), members, fmt))
    return paths


def header_offset(path: str, name: str) -> int:
    """Byte offset of the (last) header of member ``name`` in the tar at ``path``."""
    with tarfile.open(path) as tar:
        return tar.getmember(name).offset


def set_member_size(path: str, name: str, size: int) -> None:
    """Make member ``name``'s header claim ``size`` bytes (with a valid checksum: a header
    that lies about its size, not a damaged one)."""
    off = header_offset(path, name)
    with open(path, "r+b") as f:
        f.seek(off)
        block = bytearray(f.read(512))
        block[124:136] = f"{size:011o}\0".encode()
        block[148:156] = b" " * 8
        block[148:156] = f"{sum(block):06o}\0 ".encode()
        f.seek(off)
        f.write(block)


def write_image_shards(
    folder: str,
    blobs: list[bytes],
    labels: list[int],
    per_shard: int,
    *,
    exts: list[str] | None = None,
) -> list[str]:
    """Encoded images as WebDataset shards ``shard-NNNNNN.tar``: sample ``i`` is key
    ``k{i:06d}`` with ``.jpg`` (or ``exts[i]``) = ``blobs[i]``, ``.cls`` = ``labels[i]`` and
    ``.json`` = ``{"label": labels[i], "meta": {"index": i}}``; returns the shard paths."""
    paths = []
    for s in range(-(-len(blobs) // per_shard)):
        members = []
        for i in range(s * per_shard, min((s + 1) * per_shard, len(blobs))):
            key = f"k{i:06d}"
            meta = json.dumps({"label": labels[i], "meta": {"index": i}}).encode()
            members += [
                (f"{key}.{exts[i] if exts else 'jpg'}", blobs[i]),
                (f"{key}.cls", str(labels[i]).encode()),
                (f"{key}.json", meta),
            ]
        paths.append(write_tar(os.path.join(folder, f"shard-{s:06d}.tar"), members))
    return paths
