"""s3dlio's ``PyLoaderOptions.to_dict()`` spellings, as ``LoaderConfig`` fields.

s3dlio writes the sampler's rank, world size and replacement as ``sampler_rank``,
``sampler_world_size`` and ``sampler_replacement`` (``None`` when unset, beside its own
``shard_rank`` / ``shard_world_size``), and ``prefetch: 0`` for "not set". A dict with any
of those keys is read as s3dlio's: a set sampler value wins over the shard field, an unset
one leaves it, and ``prefetch: 0`` keeps fastload's default. A fastload dict is taken as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# s3dlio key -> the LoaderConfig field it sets (when not None)
SAMPLER_KEYS = {
    "sampler_rank": "shard_rank",
    "sampler_world_size": "shard_world_size",
    "sampler_replacement": "replacement",
}


def is_s3dlio_dict(data: Mapping[str, Any]) -> bool:
    return any(k in data for k in SAMPLER_KEYS)


def from_s3dlio_dict(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with s3dlio's spellings turned into fastload's fields (see the module)."""
    if not is_s3dlio_dict(data):
        return dict(data)
    out = {k: v for k, v in data.items() if k not in SAMPLER_KEYS}
    for key, field in SAMPLER_KEYS.items():
        value = data.get(key)
        if value is not None:
            out[field] = value
    if out.get("prefetch") == 0:
        del out["prefetch"]  # s3dlio's "not set"; fastload's prefetch is >= 1
    return out


__all__ = ["SAMPLER_KEYS", "from_s3dlio_dict", "is_s3dlio_dict"]
