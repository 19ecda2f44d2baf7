"""The http(s):// backend against real servers on 127.0.0.1: byte-exact reads, errors, TLS, redirects."""

from __future__ import annotations

import pytest

from fastload import errors
from fastload.storage.engine import RangeEngine
from tests.support.network import FAST_RETRY, http_stats, table
from tests.support.servers import Fault, payload

pytestmark = pytest.mark.http


# -- byte-exact reads ---------------------------------------------------------------


def test_whole_and_ranged_reads(http_server):
    data = payload(3_000_001, 1)
    url = http_server.put("a.bin", data)
    with RangeEngine(part_size=256 << 10, max_inflight_parts=3) as eng:
        assert eng.size(url) == len(data)
        assert bytes(eng.read(url)) == data
        ranges = [(0, 1), (17, 1000), (len(data) - 5, 5), (1 << 20, 700_000)]
        got = bytes(eng.read_ranges(url, ranges))
        assert got == b"".join(data[o : o + n] for o, n in ranges)


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


def test_default_part_size_is_per_scheme(http_server, tmp_path):
    """No part_size: 32 MiB parts over the network, 8 MiB ones for local files
    (fastload.storage.read_settings says what was measured)."""
    data = payload((40 << 20) + 5, 4)
    url = http_server.put("big.bin", data)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    with RangeEngine() as eng:
        assert eng.part_size is None
        assert (eng.part_size_for("http"), eng.part_size_for("file")) == (32 << 20, 8 << 20)
        assert bytes(eng.read(url)) == data and http_stats(eng)["requests"] == 2
        assert bytes(eng.read(str(path))) == data
        assert eng.backend("file").stats()["requests"] == 6
    with RangeEngine(part_size=8 << 20) as eng:  # an explicit size applies to every scheme
        eng.read(url)
        assert http_stats(eng)["requests"] == 6


def test_server_ignoring_range_never_writes_past_the_part(http_server):
    data = payload(200_000, 3)
    url = http_server.put("r.bin", data)
    http_server.server.ignore_range = True
    out = bytearray(b"\xee" * 50_000)
    with RangeEngine(part_size=8192) as eng, pytest.warns(errors.RangeIgnoredWarning):
        eng.read_into([url], table([(0, 1000, 10_000, 100), (0, 150_000, 20_000, 20_000)]), out)
    assert bytes(out[100:10_100]) == data[1000:11_000]
    assert bytes(out[20_000:40_000]) == data[150_000:170_000]
    assert out[:100] == b"\xee" * 100 and out[10_100:20_000] == b"\xee" * 9900
    assert out[40_000:] == b"\xee" * 10_000


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
        with pytest.raises(
            errors.HTTPStatusError, match="answered bytes 5001-8000 for a request of 5000-7999"
        ):
            eng.read_into([url], table([(0, 5000, 3000, 0)]), out)
        assert http_stats(eng)["requests"] == 1
    assert out == b"\xee" * 3000


def test_paths_are_sent_as_is(proxied):
    proxy, url, data = proxied
    odd = url.replace("/f.bin", "/d/../f.bin")
    with RangeEngine() as eng:
        assert eng.size(odd) == len(data)
        assert bytes(eng.read_ranges(odd, [(0, 100)])) == data[:100]
    assert [p for (_, p, _, _) in proxy.log] == ["/d/../f.bin"] * 2  # not normalised to /f.bin


# -- errors -------------------------------------------------------------------------


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


# -- redirects and the user agent ---------------------------------------------------


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
