"""The http(s):// range engine against real servers on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pycurl
import pytest

import fastload
from fastload import _http_engine, errors
from fastload._file_engine import CancelToken
from fastload.engine import RangeEngine
from fastload.network import libcurl
from tests.servers import Fault, free_port, payload

pytestmark = pytest.mark.http

FAST_RETRY = {"backoff_base": 0.01, "backoff_cap": 0.05}


def table(rows):
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def http_stats(eng, scheme="http"):
    return eng.backend(scheme).stats()


# -- binding libcurl -------------------------------------------------------------


def test_abi_constants_match_pycurl():
    names = {"CURLOPT_": "", "CURLINFO_": "", "CURLMOPT_": "M_", "CURLE_": "E_"}
    checked = 0
    for name, value in _http_engine.abi_constants().items():
        for prefix, py in names.items():
            if name.startswith(prefix):
                pyname = py + name[len(prefix):]
                if hasattr(pycurl, pyname):
                    assert getattr(pycurl, pyname) == value, name
                    checked += 1
    assert checked >= 25


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
    with RangeEngine(libcurl_path=other) as eng, pytest.raises(ValueError, match="libcurl_path=.*already bound"):
        eng.read(url)
    root = os.path.dirname(os.path.dirname(fastload.__file__))
    code = ("import fastload.engine as e, fastload.network.libcurl as l;"
            f"print(bytes(e.RangeEngine(libcurl_path='libcurl.so.4').read({url!r})).decode(), l.load()[0])")
    env = {k: v for k, v in os.environ.items() if k != "FASTLOAD_LIBCURL"}
    out = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": root},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0123456789", "libcurl.so.4"]


def test_falls_back_to_the_system_libcurl(http_server):
    """Without pycurl's bundled libcurl (here: without pycurl) the data plane binds libcurl.so.4."""
    need_system_libcurl()
    url = http_server.put("sys.bin", b"abcdefghij")
    root = os.path.dirname(os.path.dirname(fastload.__file__))
    code = ("import sys; sys.modules['pycurl'] = None\n"
            "import fastload.network.libcurl as l\n"
            "print(l.candidates(), l.load()[0])\n"
            "from fastload.network.options import NetworkOptions\n"
            "from fastload.network.transport import Transport\n"
            "import numpy as np\n"
            "t = Transport(NetworkOptions(), follow_redirects=False)\n"
            "out = bytearray(4)\n"
            f"t.read([{url!r}.encode()], [None], ['u'], np.array([[0, 3, 4, 0]], dtype=np.int64), out,"
            " 1 << 20, 1, None, None)\n"
            "print(out.decode())\n")
    env = {k: v for k, v in os.environ.items() if k != "FASTLOAD_LIBCURL"}
    out = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": root},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['libcurl.so.4']", "libcurl.so.4", "defg"]


def test_libcurl_override_and_bad_path(tmp_path, http_server):
    """FASTLOAD_LIBCURL picks the library; a bad path is a clear OSError."""
    url = http_server.put("x.bin", b"0123456789")
    root = os.path.dirname(os.path.dirname(fastload.__file__))
    code = ("import fastload.engine as e, fastload.network.libcurl as l;"
            f"print(bytes(e.RangeEngine().read({url!r})).decode(), l.load()[0])")
    env = {**os.environ, "PYTHONPATH": root, "FASTLOAD_LIBCURL": "libcurl.so.4"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0123456789", "libcurl.so.4"]
    env["FASTLOAD_LIBCURL"] = str(tmp_path / "nope.so")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "no usable libcurl" in out.stderr and "nope.so" in out.stderr


# -- byte-exact reads ---------------------------------------------------------------


def test_whole_and_ranged_reads(http_server):
    data = payload(3_000_001, 1)
    url = http_server.put("a.bin", data)
    with RangeEngine(part_size=256 << 10, max_inflight_parts=3) as eng:
        assert eng.size(url) == len(data)
        assert bytes(eng.read(url)) == data
        ranges = [(0, 1), (17, 1000), (len(data) - 5, 5), (1 << 20, 700_000)]
        got = bytes(eng.read_ranges(url, ranges))
        assert got == b"".join(data[o:o + n] for o, n in ranges)


def test_many_objects_one_call_and_part_size_knob(http_server):
    objs = [payload(1000 + 97 * i, i) for i in range(30)]
    urls = [http_server.put(f"d/o{i}.bin", d) for i, d in enumerate(objs)]
    rows, dst = [], 0
    for i, d in enumerate(objs):
        rows.append((i, 0, len(d), dst))
        dst += len(d)
    out = bytearray(dst)
    for part_size, per_obj in ((1 << 20, lambda n: 1), (4096, lambda n: -(-n // 4096))):
        with RangeEngine(part_size=part_size, max_inflight_parts=8) as eng:
            eng.read_into(urls, table(rows), out)
            assert bytes(out) == b"".join(objs)
            assert http_stats(eng)["requests"] == sum(per_obj(len(d)) for d in objs)


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


def test_server_ignoring_range_never_writes_past_the_part(http_server):
    data = payload(200_000, 3)
    url = http_server.put("r.bin", data)
    http_server.server.ignore_range = True
    out = bytearray(b"\xee" * 50_000)
    with RangeEngine(part_size=8192) as eng:
        eng.read_into([url], table([(0, 1000, 10_000, 100), (0, 150_000, 20_000, 20_000)]), out)
    assert bytes(out[100:10_100]) == data[1000:11_000]
    assert bytes(out[20_000:40_000]) == data[150_000:170_000]
    assert out[:100] == b"\xee" * 100 and out[10_100:20_000] == b"\xee" * 9900
    assert out[40_000:] == b"\xee" * 10_000


def test_request_headers_of_any_length_are_sent(http_server):
    """The data plane sends every header line whole (a session token has no fixed size)."""
    data = payload(1000, 12)
    url = http_server.put("h.bin", data)
    token = "T" * 20_000
    with RangeEngine() as eng:
        out = bytearray(10)
        eng.backend("http").transport.read([url.encode()], [f"x-amz-security-token: {token}\nX-Short: 1".encode()],
                                           [url], table([(0, 5, 10, 0)]), out, 1 << 20, 1, None, None)
    assert bytes(out) == data[5:15]
    assert http_server.server.seen_headers[-1].get("x-amz-security-token") == token
    assert http_server.server.seen_headers[-1].get("X-Short") == "1"


# -- errors ------------------------------------------------------------------------


def test_missing_object_and_bad_ranges(http_server):
    url = http_server.put("e.bin", payload(1000, 4))
    with RangeEngine(**FAST_RETRY) as eng:
        with pytest.raises(FileNotFoundError, match="nope.bin"):
            eng.read(http_server.url("nope.bin"))
        with pytest.raises(FileNotFoundError, match=r"nope.bin bytes 0-9"):
            eng.read_into([http_server.url("nope.bin")], table([(0, 0, 10, 0)]), bytearray(10))
        with pytest.raises(ValueError, match="object size is 1000") as ei:
            eng.read_ranges(url, [(2000, 10)])
        assert ei.value.object_size == 1000 and ei.value.http_status == 416
        with pytest.raises(errors.RangeError, match="past the end") as ei:
            eng.read_ranges(url, [(990, 20)])
        assert ei.value.object_size == 1000
        with pytest.raises(ValueError, match="holds 5 bytes"):
            eng.read_into([url], table([(0, 0, 10, 0)]), bytearray(5))
        with pytest.raises(errors.UnsupportedError, match="no standard listing"):
            eng.list(http_server.url(""))


def test_secrets_in_urls_stay_out_of_errors(http_server):
    """A URL's password and a presigned URL's signature or token are not repeated in errors."""
    secret = "s3cr3t-VALUE"
    base = http_server.url("nope.bin").replace("http://", f"http://user:{secret}@")
    url = f"{base}?X-Amz-Credential=AK%2F1&X-Amz-Signature={secret}&X-Amz-Security-Token={secret}&v=1"
    with RangeEngine(**FAST_RETRY) as eng:
        for call in (lambda: eng.size(url), lambda: eng.read_ranges(url, [(0, 10)])):
            with pytest.raises(FileNotFoundError) as ei:
                call()
            text = str(ei.value) + repr(ei.value) + str(ei.value.uri)
            assert secret not in text and "AK%2F1" not in text
            assert "http://user:***@127.0.0.1" in text and "nope.bin?" in text and "v=1" in text


def test_connection_refused_retries_then_fails():
    url = f"http://127.0.0.1:{free_port()}/x"
    with RangeEngine(max_retries=2, **FAST_RETRY) as eng:
        with pytest.raises(ConnectionError, match="max_retries") as ei:
            eng.read_into([url], table([(0, 0, 10, 0)]), bytearray(10))
    assert ei.value.attempts == 3 and "x bytes 0-9" in str(ei.value)


def test_bad_options_are_value_errors():
    for kw, match in [({"max_retries": -1}, "max_retries"), ({"verify": 1}, "verify"),
                      ({"ca_bundle": "/no/such.pem"}, "ca_bundle"), ({"bogus": 1}, "unknown network option"),
                      ({"buffer_size": 10}, "buffer_size"), ({"connect_timeout": 0}, "connect_timeout")]:
        with RangeEngine(**kw) as eng, pytest.raises(ValueError, match=match):
            eng.size("http://127.0.0.1:1/x")
    with pytest.raises(ValueError, match="unsupported scheme"):
        RangeEngine().size("ftp://host/x")


# -- TLS ----------------------------------------------------------------------------


def test_https_with_self_signed_ca(https_server, tls_ca, monkeypatch):
    data = payload(300_000, 5)
    url = https_server.put("t.bin", data)
    for var in ("AWS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(var, raising=False)
    with RangeEngine(ca_bundle=tls_ca.ca, part_size=64 << 10) as eng:
        assert bytes(eng.read(url)) == data
    monkeypatch.setenv("AWS_CA_BUNDLE", tls_ca.ca)
    with RangeEngine() as eng:
        assert bytes(eng.read_ranges(url, [(10, 100)])) == data[10:110]
    monkeypatch.delenv("AWS_CA_BUNDLE")
    with RangeEngine(max_retries=0) as eng:
        with pytest.raises(errors.CertificateError, match="t.bin.*ca_bundle="):
            eng.size(url)
        with pytest.raises(ConnectionError, match=r"t.bin bytes 0-99: .*AWS_CA_BUNDLE"):
            eng.read_into([url], table([(0, 0, 100, 0)]), bytearray(100))
    with RangeEngine(verify=False) as eng:
        assert bytes(eng.read_ranges(url, [(0, 100)])) == data[:100]


def test_ca_bundle_precedence(tmp_path, monkeypatch):
    """explicit ca_bundle, then AWS_CA_BUNDLE, SSL_CERT_FILE, CURL_CA_BUNDLE, then the system's."""
    from fastload.network.options import SYSTEM_CA_BUNDLES, NetworkOptions

    files = {}
    for name in ("arg", "AWS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"):
        files[name] = str(tmp_path / f"{name}.pem")
        open(files[name], "w").close()
        if name != "arg":
            monkeypatch.setenv(name, files[name])
    assert NetworkOptions(ca_bundle=files["arg"]).resolved_ca_bundle() == files["arg"]
    for name in ("AWS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"):
        assert NetworkOptions().resolved_ca_bundle() == files[name]
        monkeypatch.delenv(name)
    assert NetworkOptions().resolved_ca_bundle() == next(
        (p for p in SYSTEM_CA_BUNDLES if os.path.isfile(p)), None)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="SSL_CERT_FILE=.*missing.pem.*no such CA bundle"):
        NetworkOptions().resolved_ca_bundle()


# -- faults -----------------------------------------------------------------------


@pytest.fixture
def proxied(http_server, fault_proxy_http):
    data = payload(600_000, 6)
    http_server.put("f.bin", data)
    return fault_proxy_http, f"{fault_proxy_http.endpoint}/f.bin", data


def test_reset_and_short_bodies_are_resumed(proxied):
    proxy, url, data = proxied
    proxy.queue(Fault("reset", after=50_000), Fault("short", after=70_000))
    with RangeEngine(part_size=1 << 20, **FAST_RETRY) as eng:
        out = eng.read_ranges(url, [(1000, 500_000)])
        assert bytes(out) == data[1000:501_000]
        assert http_stats(eng)["retries"] == 2
    ranges = [r for (_, _, r, _) in proxy.log]
    # each retry asks for the first byte still missing, not the whole part again
    assert ranges[0] == "bytes=1000-500999"
    assert ranges[2] == f"bytes={1000 + 50_000 + 70_000}-500999"


def test_slowdown_is_retried_and_retry_after_honoured(proxied):
    proxy, url, data = proxied
    proxy.queue(Fault("slowdown", retry_after=0), Fault("status", status=502, code="BadGateway"))
    with RangeEngine(**FAST_RETRY) as eng:
        assert bytes(eng.read_ranges(url, [(0, 1000)])) == data[:1000]
    # a Retry-After longer than retry_deadline ends the retries at once
    proxy.queue(Fault("slowdown", retry_after=30))
    with RangeEngine(retry_deadline=2.0, **FAST_RETRY) as eng:
        t0 = time.monotonic()
        with pytest.raises(errors.HTTPStatusError, match="retry_deadline.*SlowDown") as ei:
            eng.read_ranges(url, [(0, 1000)])
        assert time.monotonic() - t0 < 20
    assert ei.value.http_status == 503
    # the control plane (HEAD) honours Retry-After too
    proxy.queue(Fault("slowdown", retry_after=30))
    with RangeEngine(retry_deadline=2.0, **FAST_RETRY) as eng:
        with pytest.raises(errors.HTTPStatusError, match="HEAD failed: retries exhausted .retry_deadline"):
            eng.size(url)


def test_200_with_content_range_is_accepted_only_when_it_matches(proxied):
    proxy, url, data = proxied
    proxy.queue(Fault("as200"))
    with RangeEngine(part_size=1 << 20, **FAST_RETRY) as eng:
        assert bytes(eng.read_ranges(url, [(5000, 3000)])) == data[5000:8000]
        assert http_stats(eng)["retries"] == 0
    # a 200 whose Content-Range names other bytes is refused, not written, not retried
    proxy.queue(Fault("as200", shift=1))
    out = bytearray(b"\xee" * 3000)
    with RangeEngine(**FAST_RETRY) as eng:
        with pytest.raises(errors.HTTPStatusError, match="answered bytes 5001-8000 for a request of 5000-7999"):
            eng.read_into([url], table([(0, 5000, 3000, 0)]), out)
        assert http_stats(eng)["requests"] == 1
    assert out == b"\xee" * 3000


def test_429_and_504_are_retried(proxied):
    proxy, url, data = proxied
    proxy.queue(Fault("status", status=429, code="TooManyRequests"), Fault("status", status=504, code="x"),
                Fault("status", status=500, code="x"), Fault("status", status=408, code="x"))
    with RangeEngine(**FAST_RETRY) as eng:
        assert bytes(eng.read_ranges(url, [(0, 1000)])) == data[:1000]
        assert http_stats(eng)["retries"] == 4
    for status in (400, 401, 405):
        proxy.queue(Fault("status", status=status, code="x"))
        with RangeEngine(**FAST_RETRY) as eng, pytest.raises(OSError, match=f"HTTP {status}"):
            eng.read_ranges(url, [(0, 1000)])
        assert proxy.pending() == 0 and http_stats(eng)["retries"] == 0


def test_backoff_knobs_act(proxied):
    """A backoff longer than retry_deadline ends the retries; backoff_cap keeps it short."""
    proxy, url, data = proxied
    for opts, ok in (({"backoff_base": 10.0, "backoff_cap": 60.0}, False),
                     ({"backoff_base": 10.0, "backoff_cap": 0.01}, True)):
        for call in (lambda eng: eng.read_ranges(url, [(0, 100)]), lambda eng: eng.size(url)):
            proxy.queue(Fault("slowdown"))
            with RangeEngine(retry_deadline=1.0, **opts) as eng:
                if ok:
                    call(eng)
                else:
                    with pytest.raises(OSError, match="retry_deadline"):
                        call(eng)
            assert proxy.pending() == 0


def test_retries_are_bounded(proxied):
    proxy, url, _ = proxied
    proxy.queue(*[Fault("slowdown")] * 3)
    with RangeEngine(max_retries=2, **FAST_RETRY) as eng:
        with pytest.raises(OSError, match="max_retries") as ei:
            eng.read_ranges(url, [(0, 1000)])
    assert ei.value.attempts == 3 and ei.value.http_status == 503
    assert proxy.pending() == 0


def test_not_found_is_not_retried(proxied):
    proxy, url, _ = proxied
    proxy.queue(Fault("status", status=404, code="NoSuchKey"))
    with RangeEngine(**FAST_RETRY) as eng, pytest.raises(FileNotFoundError, match="NoSuchKey"):
        eng.read_ranges(url, [(0, 1000)])
    assert len(proxy.log) == 1


def test_stall_is_abandoned_by_low_speed_time(proxied):
    proxy, url, data = proxied
    # the stall outlasts the read's timeout: only low_speed_time can end it in time
    proxy.queue(Fault("stall", after=1000, seconds=60))
    with RangeEngine(low_speed_time=1, timeout=20, **FAST_RETRY) as eng:
        assert bytes(eng.read_ranges(url, [(0, 100_000)])) == data[:100_000]
        assert http_stats(eng)["retries"] == 1


def test_low_speed_limit_sets_what_counts_as_stalled(proxied):
    """A body trickling at about 5 KB/s is fine under the default limit, abandoned under 50 KB/s."""
    proxy, url, data = proxied
    for limit, retries in ((1024, 0), (50_000, 1)):
        proxy.queue(Fault("trickle", after=500))
        with RangeEngine(low_speed_limit=limit, low_speed_time=1, **FAST_RETRY) as eng:
            assert bytes(eng.read_ranges(url, [(0, 12_000)])) == data[:12_000]
            assert http_stats(eng)["retries"] == retries


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


# -- the remaining knobs --------------------------------------------------------------


def test_user_agent_and_redirects(http_server):
    data = payload(5000, 7)
    http_server.put("m.bin", data)
    moved = http_server.url("moved/m.bin")
    with RangeEngine(user_agent="trainer/1.0") as eng:
        assert eng.size(moved) == 5000
        assert bytes(eng.read_ranges(moved, [(10, 100)])) == data[10:110]
    assert http_server.server.agents and set(http_server.server.agents) == {"trainer/1.0"}
    with RangeEngine(follow_redirects=False) as eng:
        with pytest.raises(errors.HTTPStatusError) as ei:
            eng.read_ranges(moved, [(10, 100)])
        assert ei.value.http_status == 301
        with pytest.raises(errors.HTTPStatusError):
            eng.size(moved)


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
        with pytest.raises(TimeoutError, match=r"HEAD failed: retries exhausted \(request_timeout\)") as ei:
            eng.size(f"http://127.0.0.1:{silent_server}/x")
        assert ei.value.attempts == 1


def test_backoff_is_capped_exponential_with_jitter():
    for attempt in range(8):
        d = min(0.05 * 2**attempt, 1.0)
        got = [_http_engine.backoff(attempt, 0.05, 1.0) for _ in range(50)]
        assert all(d / 2 <= g <= d for g in got)
        assert len(set(got)) > 1  # jittered
    assert _http_engine.backoff(0, 0.05, 1.0, retry_after=7.0) == 7.0


def test_http2_multiplexes_parts_on_one_connection(h2_server, tls_ca):
    data = payload(200_000, 8)
    h2_server.files["h.bin"] = data
    url = h2_server.url("h.bin")
    for http2, version, connects in ((True, "2", 1), (False, "1.1", 4)):
        h2_server.versions.clear()
        with RangeEngine(http2=http2, ca_bundle=tls_ca.ca, part_size=16 << 10, max_inflight_parts=4) as eng:
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


def test_paths_are_sent_as_is(proxied):
    proxy, url, data = proxied
    odd = url.replace("/f.bin", "/d/../f.bin")
    with RangeEngine() as eng:
        assert eng.size(odd) == len(data)
        assert bytes(eng.read_ranges(odd, [(0, 100)])) == data[:100]
    assert [p for (_, p, _, _) in proxy.log] == ["/d/../f.bin"] * 2  # not normalised to /f.bin


def test_engine_errors_do_not_quote_url_credentials(http_server):
    url = http_server.put("cred.bin", b"x" * 100)
    secret = url.replace("http://", "http://user:hunter2@") + "?X-Amz-Signature=deadbeef&part=1"
    with pytest.raises(ValueError) as ei:
        RangeEngine().read_into([secret], table([(0, 0, 10, 0)]), bytearray(5))
    text = str(ei.value)
    assert "hunter2" not in text and "deadbeef" not in text
    assert "user:***@" in text and "X-Amz-Signature=***" in text and "part=1" in text
