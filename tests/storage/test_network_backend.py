"""What the http(s) and s3 backends share (fastload.storage.network_backend): a server that
ignores Range is found on its first answer and each object is then read with one streamed
GET (warned once per server), never one whole-object GET per part."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fastload import errors
from fastload.storage.engine import RangeEngine
from fastload.storage.uri import parse_uri
from tests.support.network import FAST_RETRY, expected, http_stats
from tests.support.servers import Fault, payload, proxy_to

pytestmark = pytest.mark.http

PART = 64 << 10


def _gets(log):
    return [entry for entry in log if entry[0] == "GET"]


def test_python_http_server_is_read_with_one_get_per_object(simple_http_server):
    """``python -m http.server`` ignores Range: 80 parts used to be 80 whole-object GETs."""
    data = payload(5 << 20, 1)
    url = simple_http_server.put("big.bin", data)
    log = simple_http_server.server.log
    with RangeEngine(part_size=PART, max_inflight_parts=4) as eng:
        with pytest.warns(errors.RangeIgnoredWarning, match="ignores Range") as caught:
            assert bytes(eng.read(url)) == data
        assert len(caught) == 1
        assert eng.backend("http").ignores_range(parse_uri(url))
        first = len(_gets(log))
        assert first <= 4  # the first wave of GETs, all but one stopped at their first bytes
        assert http_stats(eng)["streams"] == 1
        # known now: one GET per object, no new warning
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert bytes(eng.read(url)) == data
            other = simple_http_server.put("other.bin", data[:300_000])
            assert bytes(eng.read_ranges(other, [(5, 1000), (200_000, 99_000)])) == (
                data[5:1005] + data[200_000:299_000]
            )
        assert len(_gets(log)) == first + 2
        assert all(r is None for (_, _, r) in _gets(log)[first:])  # whole-object GETs


def test_scattered_and_overlapping_ranges_from_one_stream(simple_http_server):
    data = payload(1 << 20, 2)
    url = simple_http_server.put("s.bin", data)
    rng = np.random.default_rng(0)
    ranges = [
        (int(o), int(n))
        for o, n in zip(rng.integers(0, 900_000, 40), rng.integers(1, 90_000, 40), strict=True)
    ]
    ranges += [(0, len(data)), (10, 10)]  # one covers them all; one repeats bytes
    want = b"".join(data[o : o + n] for o, n in ranges)
    with RangeEngine(part_size=16 << 10, max_inflight_parts=8) as eng:
        with pytest.warns(errors.RangeIgnoredWarning):
            assert bytes(eng.read_ranges(url, ranges)) == want
        assert http_stats(eng)["streams"] == 1


def test_a_stream_cut_short_resumes(proxied):
    proxy, url, data = proxied
    proxy.ignore_range = True  # the proxy's range-ignoring mode, in front of a good server
    proxy.queue(Fault("reset", after=200_000))
    with RangeEngine(part_size=PART, max_inflight_parts=1, **FAST_RETRY) as eng:
        with pytest.warns(errors.RangeIgnoredWarning):
            assert bytes(eng.read_ranges(url, [(0, len(data))])) == data
        assert http_stats(eng)["retries"] == 1
    assert len(_gets(proxy.log)) == 2  # the stream, and its one retry


def test_s3_behind_a_range_ignoring_proxy(rclone_s3):
    key = "data/big.bin"
    with proxy_to(rclone_s3.port) as proxy:
        proxy.ignore_range = True
        opts = {**rclone_s3.options, "endpoint_url": proxy.endpoint}
        with RangeEngine(part_size=1 << 20, max_inflight_parts=4, **opts) as eng:
            with pytest.warns(errors.RangeIgnoredWarning, match="s3://data/big.bin"):
                assert bytes(eng.read(f"s3://{key}")) == expected(key)
            assert eng.backend("s3").stats()["streams"] == 1
            n = len(_gets(proxy.log))
            assert n <= 4
            assert (
                bytes(eng.read_ranges(f"s3://{key}", [(7, 3 << 20)]))
                == expected(key)[7 : 7 + (3 << 20)]
            )
            assert len(_gets(proxy.log)) == n + 1
