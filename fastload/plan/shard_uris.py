"""Which shard objects a dataset reads: a list, a prefix, or a brace pattern.

``s3://b/train/shard-{000000..000099}.tar`` names 100 shards (numeric ranges keep the
zero padding of their bounds; ``{a..e}`` ranges over letters, ``A..Za..z``; a step's sign is
ignored; ``{a,b,c}`` lists alternatives; several groups multiply), as webdataset's
braceexpand reads them. A backslash in a pattern (braceexpand's escape) is refused.
A prefix (ending in ``/``, or a local folder) lists the objects under it and keeps those
whose name ends in one of ``suffixes``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from fastload.storage.engine import RangeEngine
from fastload.storage.uri import ParsedURI, parse_uri, redact

_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.-?(\d+))?$")
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # braceexpand's order
_LETTER_RANGE = re.compile(r"^([A-Za-z])\.\.([A-Za-z])(?:\.\.-?(\d+))?$")
MAX_EXPANSION = 10_000_000  # a typo like {0..99999999999} must not eat the memory
MAX_DEPTH = 64  # nested groups: deeper is a malformed pattern, not a dataset

# A parsed pattern is a sequence of parts: a literal string, a numeric range
# (first, last, step, width) or a group of alternatives (each a sequence). Patterns are
# counted on this tree before anything is expanded: {0..9999}{0..9999} names 10**8 shards,
# and building them first to find out takes gigabytes.
Range = tuple[int, int, int, int]
Part = str | Range | list["Seq"]
Seq = list[Part]


def _shown(pattern: str) -> str:
    """The pattern as an error shows it: no credentials, and not kilobytes of it."""
    text = redact(pattern)
    return text if len(text) <= 200 else f"{text[:200]}..."


def _closing(text: str, start: int, pattern: str) -> int:
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"{pattern}: an unclosed '{{' in the brace pattern")


def _zero_padded(bound: str) -> bool:
    digits = bound.lstrip("-")
    return len(digits) > 1 and digits[0] == "0"  # as bash: {00..10} pads, {0..10} does not


def _group(body: str, pattern: str, depth: int) -> Part:
    m = _RANGE.match(body)
    if m:
        a, b = int(m.group(1)), int(m.group(2))
        step = int(m.group(3) or 1)
        if step == 0:
            raise ValueError(f"{pattern}: a brace range with step 0")
        pad = _zero_padded(m.group(1)) or _zero_padded(m.group(2))
        width = max(len(m.group(1)), len(m.group(2))) if pad else 0
        return (a, b, step, width)
    m = _LETTER_RANGE.match(body)
    if m:
        a, b = _LETTERS.index(m.group(1)), _LETTERS.index(m.group(2))
        step = int(m.group(3) or 1)
        if step == 0:
            raise ValueError(f"{pattern}: a brace range with step 0")
        letters = (
            _LETTERS[a : b + 1 : step] if a <= b else _LETTERS[a : (b - 1 if b else None) : -step]
        )
        return [[ch] for ch in letters]
    parts, inner, last = [], 0, 0
    for i, ch in enumerate(body):
        if ch == "{":
            inner += 1
        elif ch == "}":
            inner -= 1
        elif ch == "," and inner == 0:
            parts.append(body[last:i])
            last = i + 1
    parts.append(body[last:])
    if len(parts) == 1:  # "{x}" is literal in shells too
        return "{" + body + "}"
    return [_parse(p, pattern, depth + 1) for p in parts]


def _parse(text: str, pattern: str, depth: int = 0) -> Seq:
    if depth > MAX_DEPTH:
        raise ValueError(f"{pattern}: brace groups nested more than {MAX_DEPTH} deep")
    out: Seq = []
    pos = 0
    while True:
        start = text.find("{", pos)
        if start < 0:
            if "}" in text[pos:]:
                raise ValueError(f"{pattern}: a '}}' without '{{' in the brace pattern")
            out.append(text[pos:])
            return out
        end = _closing(text, start, pattern)
        out.append(text[pos:start])
        out.append(_group(text[start + 1 : end], pattern, depth))
        pos = end + 1


def _range_len(r: Range) -> int:
    a, b, step, _ = r
    return abs(b - a) // step + 1


def _count(seq: Seq) -> int:
    """Names ``seq`` stands for, capped just past MAX_EXPANSION (no huge products)."""
    total = 1
    for part in seq:
        if isinstance(part, str):
            continue
        n = _range_len(part) if isinstance(part, tuple) else sum(_count(s) for s in part)
        total = min(total * n, MAX_EXPANSION + 1)
    return total


def _expand(seq: Seq) -> list[str]:
    out = [""]
    for part in seq:
        if isinstance(part, str):
            alts = [part]
        elif isinstance(part, tuple):
            a, b, step, width = part
            values = range(a, b + 1, step) if b >= a else range(a, b - 1, -step)
            alts = [f"{v:0{width}d}" if width else str(v) for v in values]
        else:
            alts = [name for s in part for name in _expand(s)]
        out = [head + alt for head in out for alt in alts]
    return out


def expand_braces(pattern: str) -> list[str]:
    """Every name a brace pattern stands for, in order; ValueError naming the pattern when
    it is malformed or names more than MAX_EXPANSION shards."""
    shown = _shown(pattern)
    if "\\" in pattern:
        raise ValueError(
            f"{shown}: a backslash in a brace pattern (an escaped brace or comma) is not "
            f"supported: list the shards instead"
        )
    seq = _parse(pattern, shown)
    for part in seq:  # one huge range alone: say how many values it names
        if isinstance(part, tuple) and _range_len(part) > MAX_EXPANSION:
            a, b, step, _ = part
            raise ValueError(
                f"{shown}: the brace range {{{a}..{b}{'' if step == 1 else f'..{step}'}}} "
                f"names {_range_len(part)} values (at most {MAX_EXPANSION})"
            )
    if _count(seq) > MAX_EXPANSION:
        raise ValueError(f"{shown}: the brace pattern names more than {MAX_EXPANSION} shards")
    return _expand(seq)


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
                    f"{what}: no objects ending in {' or '.join(suffixes)} under {parsed.display}"
                )
            out.extend(parse_uri(u) for u in found)
        else:
            out.append(parsed)
    return out
