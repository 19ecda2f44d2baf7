"""Which shard objects a dataset reads: a list, a prefix, or a brace pattern.

``s3://b/train/shard-{000000..000099}.tar`` names 100 shards (numeric ranges keep the
zero padding of their bounds; ``{a,b,c}`` lists alternatives; several groups multiply).
A prefix (ending in ``/``, or a local folder) lists the objects under it and keeps those
whose name ends in one of ``suffixes``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from fastload.storage.engine import RangeEngine
from fastload.storage.uri import ParsedURI, parse_uri

_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.(\d+))?$")
MAX_EXPANSION = 10_000_000  # a typo like {0..99999999999} must not eat the memory


def _closing(pattern: str, start: int) -> int:
    depth = 0
    for i in range(start, len(pattern)):
        if pattern[i] == "{":
            depth += 1
        elif pattern[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"{pattern}: an unclosed '{{' in the brace pattern")


def _alternatives(body: str, pattern: str) -> list[str]:
    m = _RANGE.match(body)
    if m:
        a, b = int(m.group(1)), int(m.group(2))
        step = int(m.group(3) or 1)
        if step == 0:
            raise ValueError(f"{pattern}: a brace range with step 0")
        count = abs(b - a) // step + 1
        if count > MAX_EXPANSION:
            raise ValueError(f"{pattern}: the brace range {{{body}}} names {count} values")
        width = max(len(m.group(1)), len(m.group(2))) if m.group(1).startswith("0") else 0
        values = range(a, b + 1, step) if b >= a else range(a, b - 1, -step)
        return [str(v).zfill(width) if width else str(v) for v in values]
    parts, depth, last = [], 0, 0
    for i, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(body[last:i])
            last = i + 1
    parts.append(body[last:])
    if len(parts) == 1:  # "{x}" is literal in shells too
        return ["{" + body + "}"]
    return [alt for p in parts for alt in expand_braces(p)]


def expand_braces(pattern: str) -> list[str]:
    """Every name a brace pattern stands for, in order."""
    start = pattern.find("{")
    if start < 0:
        if "}" in pattern:
            raise ValueError(f"{pattern}: a '}}' without '{{' in the brace pattern")
        return [pattern]
    end = _closing(pattern, start)
    head, tail = pattern[:start], pattern[end + 1 :]
    tails = expand_braces(tail)
    out = [
        head + alt + t for alt in _alternatives(pattern[start + 1 : end], pattern) for t in tails
    ]
    if len(out) > MAX_EXPANSION:
        raise ValueError(f"{pattern}: the brace pattern names {len(out)} shards")
    return out


def _is_pattern(text: str) -> bool:
    return "{" in text and "}" in text


def resolve_shards(
    spec: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    engine: RangeEngine,
    what: str,
    suffixes: tuple[str, ...] = (".tar",),
) -> list[ParsedURI]:
    """The shard objects of ``spec`` (a list, one URI, a prefix or a brace pattern), parsed."""
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    if not items:
        raise ValueError(f"{what}: the list of shards is empty")
    out: list[ParsedURI] = []
    for item in items:
        text = os.fspath(item)
        if _is_pattern(text):
            out.extend(parse_uri(u) for u in expand_braces(text))
            continue
        parsed = parse_uri(text)
        if text.endswith("/") or (parsed.is_local and os.path.isdir(parsed.path)):
            found = [u for u in engine.list(parsed) if u.lower().endswith(suffixes)]
            if not found:
                raise ValueError(
                    f"{what}: no objects ending in {' or '.join(suffixes)} under {text}"
                )
            out.extend(parse_uri(u) for u in found)
        else:
            out.append(parsed)
    return out
