"""The status enums come from the C headers, and every status has its exception class."""

from __future__ import annotations

import os
import re

import fastload
from fastload import errors
from fastload._native.status import CacheMode, Status

CSRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(fastload.__file__))), "csrc")


def _c_enum(header: str, prefix: str) -> dict[str, int]:
    text = open(os.path.join(CSRC, header), encoding="utf-8").read()
    return {m.group(1): int(m.group(2)) for m in re.finditer(rf"\b({prefix}\w*)\s*=\s*(\d+)", text)}


def test_status_matches_fl_error_h():
    c = _c_enum("fl_error.h", "FL_")
    assert c.pop("FL_OK") == Status.OK == 0
    assert {k.removeprefix("FL_E_"): v for k, v in c.items()} == {
        s.name: int(s) for s in Status if s.name != "OK"
    }


def test_cache_mode_matches_fl_file_reader_h():
    c = _c_enum("fl_file_reader.h", "FL_CACHE_")
    assert {k.removeprefix("FL_CACHE_"): v for k, v in c.items()} == {
        m.name: int(m) for m in CacheMode
    }


def test_every_failure_status_maps_to_one_exception_class():
    for s in Status:
        if s in (Status.OK, Status.NOMEM):
            continue
        assert issubclass(errors.NATIVE_ERRORS[s], errors.FastloadError), s
    try:
        errors.raise_native_error(Status.NOMEM, "x")
    except MemoryError:
        pass
    else:
        raise AssertionError("Status.NOMEM must raise MemoryError")


def test_no_python_module_writes_a_status_number():
    """Codes reach Python only through the enum: no ``raise_native_error(<number>, ...)``
    and no ``_FL_E_*`` copies of the header."""
    pkg = os.path.dirname(os.path.abspath(fastload.__file__))
    bad = []
    for d, _, files in os.walk(pkg):
        for f in files:
            if f.endswith(".py"):
                text = open(os.path.join(d, f), encoding="utf-8").read()
                if re.search(r"raise_native_error\(\s*\d", text) or re.search(
                    r"\b_?FL_E_\w+\s*=\s*\d", text
                ):
                    bad.append(f)
    assert not bad, bad
