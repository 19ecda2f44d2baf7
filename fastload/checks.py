"""Argument checks shared by every layer (numpy's ``_common.check_constraint`` is the model).

Each check names the knob and the value it refused, in one style:
``"<knob>=<value> is invalid: <why>"``, so an error says where it was written and what
to change. Checks return the value normalised (Python ints, floats, bools) so what
passes them can go to C without surprises (numpy scalars, bools that are ints).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from typing import Any, Literal, overload

import numpy as np

from fastload._native.buffer import plain_format_fault

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1


def shown(value: Any) -> str:
    """How a refused value appears in a message (long sequences are summarised)."""
    if isinstance(value, (tuple, list)) and len(value) > 8:
        return f"<{len(value)} values>"
    text = repr(value)
    return text if len(text) <= 100 else f"{text[:60]}...<{len(text)} characters>"


def fail(knob: str, value: Any, why: str, cls: type[Exception] = ValueError) -> Exception:
    """The exception for ``knob=value`` refused because of ``why`` (to be raised)."""
    return cls(f"{knob}={shown(value)} is invalid: {why}")


def is_int(value: Any) -> bool:
    """A Python or numpy integer, and not a bool (True as a count is a bug, not a 1)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@overload
def check_int(
    knob: str,
    value: Any,
    minimum: int | None = ...,
    maximum: int | None = ...,
    *,
    optional: Literal[False] = ...,
    type_error: bool = ...,
) -> int: ...


@overload
def check_int(
    knob: str,
    value: Any,
    minimum: int | None = ...,
    maximum: int | None = ...,
    *,
    optional: bool,
    type_error: bool = ...,
) -> int | None: ...


def check_int(
    knob: str,
    value: Any,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    optional: bool = False,
    type_error: bool = False,
) -> int | None:
    """An integer in ``[minimum, maximum]`` (``None`` too when ``optional``).

    ``type_error``: a value that is no integer at all raises TypeError (else ValueError).
    ``maximum`` None means INT64_MAX: every integer knob ends up in a C int64 somewhere, and
    one past it would wrap or raise a bare OverflowError deep in an epoch.
    """
    if value is None and optional:
        return None
    if not is_int(value):
        raise fail(
            knob,
            value,
            "must be an integer" + (" or None" if optional else ""),
            TypeError if type_error else ValueError,
        )
    if minimum is not None and value < minimum:
        raise fail(knob, value, f"must be >= {minimum}")
    if maximum is None:
        maximum = INT64_MAX
    if value > maximum:
        raise fail(knob, value, f"too large (at most {maximum})")
    return int(value)


def check_seed(knob: str, value: Any, *, optional: bool = False) -> int | None:
    """A seed: any integer >= 0, however large (seeds only reach numpy's SeedSequence,
    which spreads any int over its state; no C int64 holds one)."""
    if value is None and optional:
        return None
    if not is_int(value):
        raise fail(knob, value, "must be an integer" + (" or None" if optional else ""))
    if value < 0:
        raise fail(knob, value, "must be >= 0")
    return int(value)


@overload
def check_number(
    knob: str,
    value: Any,
    *,
    positive: bool = ...,
    maximum: float | None = ...,
    optional: Literal[False] = ...,
    what: str = ...,
) -> float: ...


@overload
def check_number(
    knob: str,
    value: Any,
    *,
    positive: bool = ...,
    maximum: float | None = ...,
    optional: bool,
    what: str = ...,
) -> float | None: ...


def check_number(
    knob: str,
    value: Any,
    *,
    positive: bool = True,
    maximum: float | None = None,
    optional: bool = False,
    what: str = "a number",
) -> float | None:
    """A finite real number (> 0 when ``positive``, <= ``maximum`` when given)."""
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise fail(knob, value, f"must be {what}" + (" or None" if optional else ""))
    try:
        v = float(value)
    except OverflowError:  # an int past any float: 10**400
        raise fail(knob, value, "too large (past any float)") from None
    if not math.isfinite(v):
        raise fail(knob, value, "must be finite")
    if positive and not v > 0:
        raise fail(knob, value, "must be > 0" + (" (None means no limit)" if optional else ""))
    if maximum is not None and v > maximum:
        raise fail(knob, value, f"too large (at most {maximum:g})")
    return v


def number_kind_fault(value: Any) -> str | None:
    """Why ``value`` (a number or a sequence of them, for numpy to convert) holds something
    numpy would quietly turn into a number: "0.5" parses, True counts as 1. None if clean."""
    raw = np.asarray(value)  # may raise: the caller says what was wrong
    if raw.dtype.kind not in "iuf":
        return f"holds {raw.dtype.name} values"
    if isinstance(value, (list, tuple)) and any(isinstance(v, (bool, np.bool_)) for v in value):
        return "holds a bool"
    return None


def check_bool(knob: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise fail(knob, value, "must be True or False")
    return bool(value)


def check_choice(knob: str, value: Any, choices: Sequence[Any]) -> Any:
    """One of ``choices`` (of the same kind: ``1`` is not ``True``, an array is no choice);
    a near miss of a string choice is named (``"async-pool"``: did you mean 'async_pool'?)."""
    if not any(_same_choice(value, c) for c in choices):
        why = f"must be one of {', '.join(repr(c) for c in choices)}"
        if isinstance(value, str):
            words = [c for c in choices if isinstance(c, str)]
            close = difflib.get_close_matches(value.lower(), words, n=1, cutoff=0.6)
            if close:
                why += f" (did you mean {close[0]!r}?)"
        raise fail(knob, value, why)
    return value


def _same_choice(value: Any, choice: Any) -> bool:
    if isinstance(value, (bool, np.bool_)) != isinstance(choice, bool):
        return False  # True == 1 and False == 0: a bool is no number choice, nor the reverse
    if isinstance(value, str) != isinstance(choice, str):
        return False
    try:
        return bool(value == choice)
    except (TypeError, ValueError):  # an array compares element-wise
        return False


def check_str(knob: str, value: Any, *, optional: bool = False, empty: bool = False) -> str | None:
    """A str (non-empty unless ``empty``); a secret's value never appears in the message."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or (not empty and value == ""):
        raise fail(
            knob,
            "<hidden>" if "secret" in knob or "token" in knob else value,
            "must be a non-empty str" + (" or None" if optional else ""),
        )
    return value


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def check_byte_size(knob: str, value: Any, minimum: int = 1, maximum: int = INT64_MAX) -> int:
    """A byte count: an integer, or a string like ``"64MiB"``, ``"512KiB"``, ``"2GB"``
    (binary units: K, M, G, T with or without ``iB``/``B``); at most ``maximum``."""
    if is_int(value):
        n = int(value)
    elif isinstance(value, str):
        text = value.strip().lower().removesuffix("ib").removesuffix("b").strip()
        unit = text[-1:] if text[-1:] in _UNITS and text[-1:] else ""
        try:
            n = int(float(text[: len(text) - len(unit)]) * _UNITS[unit])
        except (ValueError, OverflowError):  # "abc", "nan", "inf"
            raise fail(knob, value, "must be a number of bytes like 4096 or '64MiB'") from None
    else:
        raise fail(knob, value, "must be a number of bytes like 4096 or '64MiB'")
    if n < minimum:
        raise fail(knob, value, f"must be >= {minimum} bytes")
    if n > maximum:
        raise fail(knob, value, f"too large (at most {maximum} bytes)")
    return n


def hidden(knob: str, value: Any) -> Any:
    """``value`` as a message may show it: never the value of a secret or token."""
    return "<hidden>" if "secret" in knob or "token" in knob else value


def control_character(text: str) -> str | None:
    """The first control character of ``text`` (HTAB aside), or None."""
    for ch in text:
        if (ch < " " and ch != "\t") or ch == "\x7f":
            return ch
    return None


def check_header_value(knob: str, value: Any, *, secret: bool = False) -> Any:
    """A value that goes into a request line or header: a CR or LF in it would end the
    header and start one the caller never wrote, so every control character is refused."""
    if isinstance(value, str):
        bad = control_character(value)
        if bad is not None:
            raise fail(
                knob,
                "<hidden>" if secret else hidden(knob, value),
                f"holds the control character {bad!r} (a CR or LF would inject a header)",
            )
    return value


def check_int_table(knob: str, value: Any, columns: int) -> np.ndarray:
    """An int64 table of ``columns`` columns from integers only: floats and strings are
    refused (numpy would truncate 0.5 to 0, or parse "5"), as are ints past int64."""
    if (
        isinstance(value, np.ndarray)
        and value.dtype == np.int64
        and value.ndim == 2
        and value.shape[1] == columns
        and value.flags.c_contiguous
    ):
        return value  # the common case, as the loader builds its tables: nothing to do
    if not isinstance(value, np.ndarray):
        value = list(value)
        try:
            arr = np.asarray(value)
        except (ValueError, OverflowError) as exc:  # ragged rows, ints past any dtype
            raise fail(knob, value, f"is not a table of integers ({exc})") from None
    else:
        arr = value
    if arr.size == 0:
        return np.zeros((0, columns), dtype=np.int64)
    if arr.dtype.kind not in "iu" or (arr.dtype == np.uint64 and bool((arr > INT64_MAX).any())):
        kinds = {"f": "floats", "U": "strings", "S": "bytes", "b": "bools", "c": "complex numbers"}
        what = kinds.get(arr.dtype.kind, "values that are not int64 integers")
        raise fail(knob, value, f"must hold integers, not {what}", TypeError)
    if arr.ndim != 2 or arr.shape[1] != columns:
        raise fail(knob, value, f"must be rows of {columns} integers, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def check_plain_buffer(what: str, fmt: str | None) -> None:
    """TypeError when a buffer of struct format ``fmt`` holds no plain data (Python objects,
    pointers): native code must never read or write such memory as bytes."""
    fault = plain_format_fault(fmt) if fmt and fmt not in ("B", "b", "c") else None
    if fault is not None:
        raise TypeError(
            f"{what}: a buffer of format {fmt!r} cannot be read or written as raw bytes: {fault}"
        )
