"""argparse types of the CLI's numbers: a bad value is a usage error (exit status 2, one
line naming the argument), not a late failure, a traceback, or a run that silently does
nothing (``--repeat 0``)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import numpy as np

from fastload.checks import INT64_MAX, check_byte_size
from fastload.storage.read_settings import MAX_PART_SIZE, MIN_PART_SIZE


def size_arg(text: str) -> int:
    """Sizes like 8MiB, 512KiB, 4096: a part size, MIN_PART_SIZE to MAX_PART_SIZE bytes."""
    try:
        return check_byte_size("--part-size", text, MIN_PART_SIZE, MAX_PART_SIZE)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{exc} (examples: 4096, 512KiB, 8MiB)".replace("--part-size=", "", 1)
        ) from None


def count(minimum: int, maximum: int = INT64_MAX) -> Callable[[str], int]:
    """An argparse type: an integer in [minimum, maximum] (else exit status 2, not a late
    failure or a silent run that does nothing)."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"{n} is invalid: must be >= {minimum}")
        if n > maximum:
            raise argparse.ArgumentTypeError(f"{n} is invalid: too large (at most {maximum})")
        return n

    parse.__name__ = "count"
    return parse


def dtype_arg(text: str) -> np.dtype:
    """A numpy dtype name: ``uint8``, ``float32`` ..."""
    try:
        return np.dtype(text)
    except TypeError:
        raise argparse.ArgumentTypeError(f"not a numpy dtype: {text!r} (e.g. uint8)") from None


def seconds_arg(text: str) -> float:
    """A finite number >= 0 (a duration)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(v) and v >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return v
