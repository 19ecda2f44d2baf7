"""Binding libcurl (fastload.storage.libcurl): the one pycurl ships, an explicit path,
FASTLOAD_LIBCURL, or the system's."""

from __future__ import annotations

import os
import subprocess
import sys

import pycurl
import pytest

import fastload
from fastload.storage import libcurl
from fastload.storage.engine import RangeEngine

pytestmark = pytest.mark.http


def test_binds_the_libcurl_pycurl_ships():
    path, version = libcurl.load()
    assert os.path.exists(path) or path == "libcurl.so.4"
    assert version.split()[0] in pycurl.version  # same libcurl as pycurl's
    if libcurl._mapped_libcurl():  # the wheel bundles one: that very file, not the system's
        assert path == libcurl._mapped_libcurl()[0] and "pycurl" in path


def need_system_libcurl():
    import ctypes

    try:
        ctypes.CDLL("libcurl.so.4")
    except OSError:
        pytest.skip("no system libcurl.so.4")


def test_libcurl_path_option(http_server):
    """libcurl_path binds that library in a fresh process; once one is bound, another is refused."""
    need_system_libcurl()
    url = http_server.put("lp.bin", b"0123456789")
    bound, _ = libcurl.load()
    with RangeEngine(libcurl_path=bound) as eng:  # the same file: fine
        assert bytes(eng.read(url)) == b"0123456789"
    other = "/no/such/libcurl.so" if bound != "/no/such/libcurl.so" else "/x.so"
    with (
        RangeEngine(libcurl_path=other) as eng,
        pytest.raises(ValueError, match="libcurl_path=.*already bound"),
    ):
        eng.read(url)
    root = os.path.dirname(os.path.dirname(fastload.__file__))
    code = (
        "import fastload.storage.engine as e, fastload.storage.libcurl as l;"
        f"print(bytes(e.RangeEngine(libcurl_path='libcurl.so.4').read({url!r})).decode(), l.load()[0])"
    )
    env = {k: v for k, v in os.environ.items() if k != "FASTLOAD_LIBCURL"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "PYTHONPATH": root},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0123456789", "libcurl.so.4"]


def test_falls_back_to_the_system_libcurl(http_server):
    """Without pycurl's bundled libcurl (here: without pycurl) the data plane binds libcurl.so.4."""
    need_system_libcurl()
    url = http_server.put("sys.bin", b"abcdefghij")
    root = os.path.dirname(os.path.dirname(fastload.__file__))
    code = (
        "import sys; sys.modules['pycurl'] = None\n"
        "import fastload.storage.libcurl as l\n"
        "print(l.candidates(), l.load()[0])\n"
        "from fastload.storage.network_options import NetworkOptions\n"
        "from fastload.storage.transport import Transport\n"
        "import numpy as np\n"
        "t = Transport(NetworkOptions(), follow_redirects=False)\n"
        "out = bytearray(4)\n"
        f"t.read([{url!r}.encode()], [None], ['u'], np.array([[0, 3, 4, 0]], dtype=np.int64), out,"
        " 1 << 20, 1, None, None)\n"
        "print(out.decode())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "FASTLOAD_LIBCURL"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "PYTHONPATH": root},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['libcurl.so.4']", "libcurl.so.4", "defg"]


def test_libcurl_override_and_bad_path(tmp_path, http_server):
    """FASTLOAD_LIBCURL picks the library; a bad path is a clear OSError."""
    url = http_server.put("x.bin", b"0123456789")
    root = os.path.dirname(os.path.dirname(fastload.__file__))
    code = (
        "import fastload.storage.engine as e, fastload.storage.libcurl as l;"
        f"print(bytes(e.RangeEngine().read({url!r})).decode(), l.load()[0])"
    )
    env = {**os.environ, "PYTHONPATH": root, "FASTLOAD_LIBCURL": "libcurl.so.4"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0123456789", "libcurl.so.4"]
    env["FASTLOAD_LIBCURL"] = str(tmp_path / "nope.so")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0 and "no usable libcurl" in out.stderr and "nope.so" in out.stderr
