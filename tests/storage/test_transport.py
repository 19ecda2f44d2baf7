"""The transport of the http(s):// and s3:// backends: connections (keep-alive, HTTP/2,
forks, threads), request headers, write sizes, timeouts and cancellation."""

from __future__ import annotations

import os
import threading

import pytest

from fastload import errors
from fastload._native.file_reader import CancelToken
from fastload.storage.engine import RangeEngine
from tests.support.network import FAST_RETRY, http_stats, table
from tests.support.servers import Fault, payload

pytestmark = pytest.mark.http


# -- requests -----------------------------------------------------------------------


def test_request_headers_of_any_length_are_sent(http_server):
    """The data plane sends every header line whole (a session token has no fixed size)."""
    data = payload(1000, 12)
    url = http_server.put("h.bin", data)
    token = "T" * 20_000
    with RangeEngine() as eng:
        out = bytearray(10)
        eng.backend("http").transport.read(
            [url.encode()],
            [f"x-amz-security-token: {token}\nX-Short: 1".encode()],
            [url],
            table([(0, 5, 10, 0)]),
            out,
            1 << 20,
            1,
            None,
            None,
        )
    assert bytes(out) == data[5:15]
    assert http_server.server.seen_headers[-1].get("x-amz-security-token") == token
    assert http_server.server.seen_headers[-1].get("X-Short") == "1"


def test_buffer_size_caps_the_bytes_per_write_callback(http_server):
    data = payload(1 << 20, 11)
    url = http_server.put("b.bin", data)
    writes = {}
    for size in (1024, 1 << 20):
        with RangeEngine(buffer_size=size) as eng:
            assert bytes(eng.read_ranges(url, [(0, len(data))])) == data
            writes[size] = http_stats(eng)["writes"]
    assert writes[1024] >= len(data) // 1024  # at most 1 KiB per call
    assert writes[1 << 20] < writes[1024] // 2  # libcurl's own cap is 16 KiB per call


# -- connections --------------------------------------------------------------------


def test_keepalive_and_max_inflight(http_server):
    url = http_server.put("k.bin", payload(1 << 20, 2))
    with RangeEngine(part_size=64 << 10, max_inflight_parts=1) as eng:
        eng.read(url)
        assert http_stats(eng)["connects"] == 1  # 16 GETs, one at a time, one connection
    with RangeEngine(part_size=64 << 10, max_inflight_parts=4) as eng:
        for _ in range(3):
            eng.read(url)
        st = http_stats(eng)
        # 48 GETs, in parallel, over at most 4 connections kept alive across the reads
        assert st["requests"] == 48 and 1 < st["connects"] <= 4


def test_http2_multiplexes_parts_on_one_connection(h2_server, tls_ca):
    data = payload(200_000, 8)
    h2_server.files["h.bin"] = data
    url = h2_server.url("h.bin")
    for http2, version, connects in ((True, "2", 1), (False, "1.1", 4)):
        h2_server.versions.clear()
        with RangeEngine(
            http2=http2, ca_bundle=tls_ca.ca, part_size=16 << 10, max_inflight_parts=4
        ) as eng:
            assert bytes(eng.read_ranges(url, [(100, 150_000)])) == data[100:150_100]
            assert http_stats(eng, "https")["connects"] == connects
        assert set(h2_server.versions) == {version}


def test_forked_child_uses_fresh_connections(http_server):
    data = payload(100_000, 9)
    url = http_server.put("fork.bin", data)
    with RangeEngine(part_size=16 << 10, max_inflight_parts=2) as eng:
        assert bytes(eng.read(url)) == data  # the parent's pool now holds live connections
        pid = os.fork()
        if pid == 0:  # child: must not touch the parent's curl handles
            ok = bytes(eng.read(url)) == data and http_stats(eng)["requests"] == 7
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert bytes(eng.read(url)) == data  # and the parent's pool still works


def test_concurrent_reads_share_one_engine(http_server):
    objs = [payload(300_000, 20 + i) for i in range(4)]
    urls = [http_server.put(f"c{i}.bin", d) for i, d in enumerate(objs)]
    results: dict[int, bytes] = {}
    with RangeEngine(part_size=32 << 10, max_inflight_parts=3) as eng:
        eng.backend("http")  # made before the threads race to make it

        def work(i: int) -> None:
            for _ in range(3):
                results[i] = bytes(eng.read_ranges(urls[i], [(0, len(objs[i]))]))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert all(results[i] == objs[i] for i in range(4))
        assert http_stats(eng)["requests"] == 4 * 3 * 10  # ceil(300000 / 32768) parts per read


# -- timeouts and cancellation ------------------------------------------------------


def test_timeout_bounds_a_whole_read(proxied):
    proxy, url, _ = proxied
    proxy.queue(Fault("stall", after=1000, seconds=4))
    with RangeEngine(timeout=0.5, low_speed_time=0) as eng:
        with pytest.raises(TimeoutError, match=r"f.bin bytes 0-99999: .*timeout=0.5"):
            eng.read_ranges(url, [(0, 100_000)])


def test_cancel_stops_a_read(proxied):
    proxy, url, _ = proxied
    proxy.queue(Fault("stall", after=1000, seconds=4))
    token = CancelToken()
    threading.Timer(0.3, token.cancel).start()
    with RangeEngine(low_speed_time=0) as eng:
        with pytest.raises(errors.CancelledReadError):
            eng.read_into([url], table([(0, 0, 100_000, 0)]), bytearray(100_000), cancel=token)


def test_connect_and_request_timeouts(silent_server):
    https = f"https://127.0.0.1:{silent_server}/x"
    with RangeEngine(connect_timeout=0.3, max_retries=1, low_speed_time=0, **FAST_RETRY) as eng:
        with pytest.raises(TimeoutError, match="max_retries") as ei:  # the TLS handshake never ends
            eng.read_into([https], table([(0, 0, 10, 0)]), bytearray(10))
        assert ei.value.attempts == 2
    with RangeEngine(request_timeout=0.3, max_retries=0) as eng:
        with pytest.raises(TimeoutError, match="HEAD failed"):  # connected, never answered
            eng.size(f"http://127.0.0.1:{silent_server}/x")
    # The engine's whole-read timeout (LoaderOptions.timeout_seconds) bounds HEAD too,
    # retries included: the first attempt uses it all up, so there is no second.
    with RangeEngine(timeout=0.3, max_retries=5, **FAST_RETRY) as eng:
        with pytest.raises(
            TimeoutError, match=r"HEAD failed: retries exhausted \(request_timeout\)"
        ) as ei:
            eng.size(f"http://127.0.0.1:{silent_server}/x")
        assert ei.value.attempts == 1
