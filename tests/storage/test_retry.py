"""Retries of transient failures (data plane in C, control plane in Python: one rule),
through a fault-injecting proxy on 127.0.0.1."""

from __future__ import annotations

import time

import numpy as np
import pytest

from fastload import errors
from fastload._native import http_reader
from fastload.storage.engine import RangeEngine
from fastload.storage.network_options import NetworkOptions
from tests.support.network import FAST_RETRY, http_stats, table
from tests.support.servers import Fault, free_port

pytestmark = pytest.mark.http


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
        with pytest.raises(
            errors.HTTPStatusError, match="HEAD failed: retries exhausted .retry_deadline"
        ):
            eng.size(url)


def test_429_and_504_are_retried(proxied):
    proxy, url, data = proxied
    proxy.queue(
        Fault("status", status=429, code="TooManyRequests"),
        Fault("status", status=504, code="x"),
        Fault("status", status=500, code="x"),
        Fault("status", status=408, code="x"),
    )
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
    for opts, ok in (
        ({"backoff_base": 10.0, "backoff_cap": 60.0}, False),
        ({"backoff_base": 10.0, "backoff_cap": 0.01}, True),
    ):
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


def test_connection_refused_retries_then_fails():
    url = f"http://127.0.0.1:{free_port()}/x"
    with RangeEngine(max_retries=2, **FAST_RETRY) as eng:
        with pytest.raises(ConnectionError, match="max_retries") as ei:
            eng.read_into([url], table([(0, 0, 10, 0)]), bytearray(10))
    assert ei.value.attempts == 3 and "x bytes 0-9" in str(ei.value)


def test_backoff_is_capped_exponential_with_jitter():
    for attempt in range(8):
        d = min(0.05 * 2**attempt, 1.0)
        got = [http_reader.backoff(attempt, 0.05, 1.0) for _ in range(50)]
        assert all(d / 2 <= g <= d for g in got)
        assert len(set(got)) > 1  # jittered
    assert http_reader.backoff(0, 0.05, 1.0, retry_after=7.0) == 7.0


# -- the default budget is time-based (like obstore's) ------------------------------


def test_default_budget_is_time_based():
    opts = NetworkOptions()
    assert opts.max_retries is None  # no count limit ...
    assert opts.retry_deadline == 180.0  # ... 3 minutes from a request's first failure
    assert (opts.backoff_base, opts.backoff_cap) == (0.1, 15.0)


def test_a_count_never_ends_a_time_budget(proxied):
    """Ten failures in a row used to exhaust max_retries=5; now only the time does, and the
    error says what the budget was."""
    proxy, url, data = proxied
    proxy.queue(*[Fault("slowdown")] * 10)
    with RangeEngine(**FAST_RETRY) as eng:
        assert bytes(eng.read_ranges(url, [(0, 1000)])) == data[:1000]
        assert http_stats(eng)["retries"] == 10
    proxy.queue(*[Fault("slowdown")] * 10)
    with RangeEngine(**FAST_RETRY) as eng:
        assert eng.size(url) == len(data)  # the control plane keeps the same budget
    proxy.queue(*[Fault("slowdown")] * 400)
    with RangeEngine(retry_deadline=0.5, **FAST_RETRY) as eng:
        with pytest.raises(
            errors.HTTPStatusError,
            match=r"retries exhausted \(retry_deadline\) after 0\.\d s of retries \(budget: "
            r"max_retries=None, retry_deadline=0.5s, backoff 0.01-0.05s\)",
        ) as ei:
            eng.read_ranges(url, [(0, 1000)])
        assert ei.value.attempts > 6
    with RangeEngine(max_retries=2, **FAST_RETRY) as eng:
        with pytest.raises(OSError, match=r"budget: max_retries=2, retry_deadline=180s, backoff"):
            eng.size(url)


def test_half_the_requests_failing_still_delivers_byte_exact(proxied):
    """A 50% rate of 503 SlowDown and connection resets over many parts (with one long run of
    failures): every part is delivered byte-exact, none exhausts the default budget."""
    proxy, url, data = proxied
    rng = np.random.default_rng(7)
    faults = [
        Fault("slowdown") if r < 0.25 else Fault("reset", after=int(a)) if r < 0.5 else Fault()
        for r, a in zip(rng.random(600), rng.integers(0, 4096, 600), strict=True)
    ]
    faults[20:20] = [Fault("slowdown")] * 8  # more in a row than the old max_retries=5 allowed
    proxy.queue(*faults)
    with RangeEngine(part_size=8192, max_inflight_parts=1, **FAST_RETRY) as eng:
        assert bytes(eng.read_ranges(url, [(0, 300_000)])) == data[:300_000]
        st = http_stats(eng)
    assert st["retries"] > 30 and st["requests"] > 37 + 30
